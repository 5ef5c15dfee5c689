"""Importing a stream of items in batches: a JSON document or JSON Lines, any size.

The document is read item by item (``read_items``): memory holds one batch,
not the document. Each item is checked as it comes (``checked_item``): the
common, plain item by a fast check of our own, anything else by the
document's models (``catalog.importing``), which name what is wrong. Then,
per batch of ``DEFAULT_BATCH`` items (``import_items``):

- items the catalog last imported from the same text (a digest of it is
  kept with each item, ``_Digests``) are passed over, and the catalog keeps
  what happened to them since;
- items new to the catalog are written with a few bulk statements
  (``catalog.sql.insert``: arrays on PostgreSQL, long ``VALUES`` on SQLite);
- items the catalog holds exactly as the document describes them are
  counted unchanged, read back in bulk;
- every other item (changed, removed, damaged copies) goes through the
  item-by-item import of ``catalog.importing``, with all its rules.

Everything happens in one transaction: an item that is wrong stores nothing
of the whole import; the first ``DEFAULT_MAX_ERRORS`` problems are reported
together, each with its place (``items.N...`` or ``line N``).

A first import from the command line reads and checks its items in a
forked process while this one writes them (``_checked_apart``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import io
import itertools
import json
import pickle
import queue
import re
import sys
import threading
from array import array
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, NamedTuple

import peewee as pw

from catalog import sql
from catalog.database import planned_files, planned_items, refresh_statistics
from catalog.errors import ImportDocumentError
from catalog.forked import can_fork, forked
from catalog.importing import (
    IMPORT_LOCK_REASON,
    ItemDocument,
    describe_error,
    import_one,
    parse_time,
    withdraw_unlisted,
)
from catalog.models import (
    DEFAULT_CHUNK_SIZE,
    ITEM_STATUS_DONE,
    STATUS_DAMAGED,
    STATUS_DONE,
    utcnow,
)
from catalog.paths import MAX_PATH_LENGTH
from catalog.queries import ancestors_of, locations_at, writing
from catalog.removal import REMOVED_STATUS

#: Items written per batch.
DEFAULT_BATCH = 2_000
#: Problems reported before an import gives up reading on.
DEFAULT_MAX_ERRORS = 5
#: Characters read from the document at a time.
READ_CHUNK = 1 << 20
#: Characters one item of a document may take, at most.
MAX_ITEM_CHARS = 64 << 20
#: Formats ``read_items`` reads.
FORMATS = ("json", "jsonl")

_LOCATION_STATES = frozenset({"PR", "UP", "OK", "DE", "DM"})
_ITEM_KEYS = frozenset(
    {"key", "data_slug", "process_type", "status", "created", "locations", "files"}
)
_LOCATION_KEYS = frozenset(
    {"connector", "url", "status", "last_update", "last_verified", "open_access_logs", "damaged"}
)
_FILE_KEYS = frozenset({"path", "size", "md5", "crc32c", "awss3etag", "chunk_size"})


class Location(NamedTuple):
    connector: str
    url: str
    status: str
    last_update: datetime | None
    last_verified: datetime | None
    open_access_logs: int
    damaged: bool


class File(NamedTuple):
    path: str
    size: int | None
    md5: str | None
    crc32c: str | None
    awss3etag: str | None
    chunk_size: int
    #: The fields the document gives (what it leaves out is kept on update).
    given: frozenset[str]


class Item(NamedTuple):
    """One checked item of a document, and where it stood (``items.N``, ``line N``)."""

    where: str
    key: str
    data_slug: str
    process_type: str
    status: str
    created: datetime
    locations: tuple[Location, ...]
    files: tuple[File, ...]
    #: The item as the document gave it (for the item-by-item import); None
    #: where it came checked from the reading process (``_checked_apart``).
    raw: dict[str, Any] | None
    #: Its text, where ``raw`` is None, decoded again if the item is needed:
    #: its JSON, or the pickle ``catalog.resolwe`` digests it by (a pickle's
    #: first byte, 0x80, begins no JSON text).
    text: str | bytes | None = None
    #: When the item was removed (``"removed"``, an export's), or None.
    removed: datetime | None = None

    @property
    def simple(self) -> bool:
        """Whether bulk statements can write it: no copy the document says is damaged,
        no removal time given."""
        return self.removed is None and not any(loc.damaged for loc in self.locations)

    def document(self) -> dict[str, Any]:
        """The item as the document gave it."""
        if self.raw is not None:
            return self.raw
        assert self.text is not None
        if self.text[:1] == b"\x80":
            return pickle.loads(self.text)  # type: ignore[arg-type, no-any-return]
        return json.loads(self.text)  # type: ignore[no-any-return]


# -- reading --------------------------------------------------------------


def read_items(
    stream: IO[bytes], *, format: str = "json", name: str = "the document", texts: bool = False
) -> Iterator[tuple[Any, ...]]:
    """``(where, item)`` of each item of the document in ``stream``, read as it comes.

    ``json``: a document ``{"items": [...]}``; ``jsonl``: one item per line
    (blank lines skipped). Text that is not JSON raises ImportDocumentError
    naming ``name`` and the line and column. ``texts``: ``(where, item,
    text)``, with the item's own text (``str`` or ``bytes``), of which
    ``import_items`` keeps a digest.
    """
    if format == "jsonl":
        yield from _lines(stream, name, texts)
    elif format == "json":
        yield from _document(_Text(stream, name), texts)
    else:
        raise ValueError(f"unknown format {format!r}: choose from {', '.join(FORMATS)}")


def _lines(stream: IO[bytes], name: str, texts: bool = False) -> Iterator[tuple[Any, ...]]:
    number = 0
    while True:
        try:
            line = stream.readline()
        except UnicodeDecodeError:
            raise ImportDocumentError(f"{name}: not UTF-8 text") from None
        except OSError as exc:  # a read that fails: a failing disk, a lost mount
            raise ImportDocumentError(f"{name}: {exc.strerror or exc}") from None
        if not line:
            return
        number += 1
        if not line.strip():
            continue
        try:
            value = _one_value(line)
        except UnicodeDecodeError:
            raise ImportDocumentError(f"{name}: line {number}: not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise ImportDocumentError(
                f"{name}: malformed JSON at line {number} column {exc.colno}: {exc.msg}"
            ) from None
        yield (f"line {number}", value, line) if texts else (f"line {number}", value)


_scan = json.JSONDecoder().raw_decode


def _one_value(line: bytes) -> Any:
    """``json.loads(line)``, without its wrappers' cost for a valid line; its errors otherwise."""
    text = line.decode().strip(" \t\n\r")  # JSON's whitespace
    try:
        value, end = _scan(text)
        if end == len(text):
            return value
    except json.JSONDecodeError:
        pass
    return json.loads(line)  # raises, as the reference does, naming the place


class _Text:
    """A stream's text, decoded a chunk at a time, with a read position."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.name = name
        self.reader: IO[str] = (
            stream  # type: ignore[assignment]
            if isinstance(stream, io.TextIOBase)
            else io.TextIOWrapper(stream, encoding="utf-8")
        )
        self.text = ""
        self.at = 0
        self.done = False
        #: Lines and characters of the text already dropped (for error positions).
        self.lines_before = 0
        self.column_before = 0

    def more(self) -> bool:
        """Read the next chunk; False at the end of the stream."""
        if self.done:
            return False
        try:
            chunk = self.reader.read(READ_CHUNK)
        except UnicodeDecodeError:
            raise ImportDocumentError(f"{self.name}: not UTF-8 text") from None
        except OSError as exc:  # a read that fails: a failing disk, a lost mount
            raise ImportDocumentError(f"{self.name}: {exc.strerror or exc}") from None
        if not chunk:
            self.done = True
            return False
        dropped = self.text[: self.at]
        newlines = dropped.count("\n")
        if newlines:
            self.lines_before += newlines
            self.column_before = len(dropped) - dropped.rindex("\n") - 1
        else:
            self.column_before += len(dropped)
        self.text = self.text[self.at :] + chunk
        self.at = 0
        return True

    def rest(self) -> str:
        """Everything from the read position to the end of the stream."""
        while self.more():
            pass
        return self.text[self.at :]

    def skip_space(self) -> str:
        """The next character that is not white space ('' at the end)."""
        while True:
            while self.at < len(self.text) and self.text[self.at] in " \t\r\n":
                self.at += 1
            if self.at < len(self.text):
                return self.text[self.at]
            if not self.more():
                return ""

    def malformed(self, message: str, at: int | None = None) -> ImportDocumentError:
        """The error of text that is not JSON at ``at`` (default: the read position)."""
        at = self.at if at is None else at
        newlines = self.text.count("\n", 0, at)
        if newlines:
            line = self.lines_before + newlines + 1
            column = at - self.text.rindex("\n", 0, at)
        else:
            line = self.lines_before + 1
            column = self.column_before + at + 1
        return ImportDocumentError(
            f"{self.name}: malformed JSON at line {line} column {column}: {message}"
        )


_DECODER = json.JSONDecoder()


def _document(text: _Text, texts: bool = False) -> Iterator[tuple[Any, ...]]:
    """The items of ``{"items": [...]}``, each decoded on its own (``raw_decode``)."""
    if text.skip_space() != "{":
        # Not the document's shape: read it whole, to tell what it is.
        yield from _whole(text)
        return
    text.at += 1
    first = text.skip_space()
    if first == "}":
        raise ImportDocumentError("items: required key is missing")
    if first != '"':
        raise text.malformed("Expecting property name enclosed in double quotes")
    name = _decode(text)
    if name != "items":
        raise ImportDocumentError(f"{name}: unknown key")
    if text.skip_space() != ":":
        raise text.malformed("Expecting ':' delimiter")
    text.at += 1
    if text.skip_space() != "[":
        value = _decode(text)
        raise ImportDocumentError(f"items: expected a list, got {type(value).__name__}")
    text.at += 1
    index = 0
    if text.skip_space() == "]":
        text.at += 1
    else:
        while True:
            value, source = _decode_with_text(text)
            yield (f"items.{index}", value, source) if texts else (f"items.{index}", value)
            index += 1
            following = text.skip_space()
            if following == "]":
                text.at += 1
                break
            if following != ",":
                raise text.malformed("Expecting ',' delimiter")
            text.at += 1
    following = text.skip_space()
    if following == ",":
        text.at += 1
        if text.skip_space() == '"':
            raise ImportDocumentError(f"{_decode(text)}: unknown key")
    if following != "}":
        raise text.malformed("Expecting ',' delimiter")
    text.at += 1
    if text.skip_space() != "":
        raise text.malformed("Extra data")


def _whole(text: _Text) -> Iterator[tuple[str, Any]]:
    """A document that is not an object: its error, as the whole text tells it."""
    whole = text.rest()
    try:
        value = json.loads(whole)
    except json.JSONDecodeError as exc:
        raise text.malformed(exc.msg, at=text.at + exc.pos) from None
    raise ImportDocumentError(
        f"expected a JSON object with an 'items' list, got {type(value).__name__}"
    )
    yield  # a generator (never reached)


def _decode(text: _Text) -> Any:
    """The JSON value at the read position, reading more text until it is whole."""
    return _decode_with_text(text)[0]


def _decode_with_text(text: _Text) -> tuple[Any, str]:
    """The JSON value at the read position and its text, reading more until it is whole."""
    text.skip_space()
    while True:
        try:
            start = text.at  # reading more moves what is pending to the start
            value, text.at = _DECODER.raw_decode(text.text, start)
            return value, text.text[start : text.at]
        except json.JSONDecodeError as exc:
            # A value cut by the end of what was read looks malformed too: read
            # on (as much again as is pending, so long values are parsed a few
            # times, not once a chunk), up to ``MAX_ITEM_CHARS`` of one item.
            pending = len(text.text) - text.at
            if pending <= MAX_ITEM_CHARS and text.more():
                while len(text.text) - text.at < 2 * pending and text.more():
                    pass
                continue
            raise text.malformed(exc.msg, at=exc.pos) from None


def sniff_format(name: str) -> str:
    """The format a file's name says: ``jsonl`` for ``.jsonl`` and ``.ndjson``, else ``json``."""
    lowered = name.lower().removesuffix(".gz")
    return "jsonl" if lowered.endswith((".jsonl", ".ndjson")) else "json"


# -- checking ---------------------------------------------------------------


def checked_item(raw: Any, where: str, *, connectors: Collection[str]) -> Item:
    """``raw`` as an ``Item``; ImportDocumentError naming the place of what is wrong."""
    item = _fast(raw, where)
    if item is None:
        item = _by_the_models(raw, where)
    _check_item(item, connectors)
    return item


def _fast(raw: Any, where: str) -> Item | None:
    """The item, when it is plain and well formed; None for anything to look at closely."""
    try:
        if type(raw) is not dict or not raw.keys() <= _ITEM_KEYS:
            return None
        key = raw["key"]
        data_slug = raw.get("data_slug", "")
        process_type = raw.get("process_type", "")
        status = raw.get("status", "OK")
        for text in (key, data_slug, process_type, status):
            if type(text) is not str or "\x00" in text:
                return None
        if not key or not status:
            return None
        created = parse_time(raw["created"])
        locations = []
        for loc in raw.get("locations", ()):
            if type(loc) is not dict or not loc.keys() <= _LOCATION_KEYS or "damaged" in loc:
                return None
            connector, url = loc["connector"], loc["url"]
            state = loc.get("status", "OK")
            locks = loc.get("open_access_logs", 0)
            if type(connector) is not str or "\x00" in connector or type(url) is not str:
                return None
            if state not in _LOCATION_STATES or state == STATUS_DAMAGED:
                return None
            if type(locks) is not int or locks < 0 or not _url(url):
                return None
            last_update, last_verified = loc.get("last_update"), loc.get("last_verified")
            locations.append(
                Location(
                    connector,
                    url,
                    state,
                    parse_time(last_update) if last_update is not None else None,
                    parse_time(last_verified) if last_verified is not None else None,
                    locks,
                    False,
                )
            )
        files = []
        for doc in raw.get("files", ()):
            if type(doc) is not dict or not doc.keys() <= _FILE_KEYS:
                return None
            get = doc.get
            path, size, chunk = doc["path"], get("size"), get("chunk_size", DEFAULT_CHUNK_SIZE)
            md5, crc, etag = get("md5"), get("crc32c"), get("awss3etag")
            if (
                not _path(path)
                or (size is not None and (type(size) is not int or size < 0))
                or type(chunk) is not int
                or chunk < 1
                or (md5 is not None and md5 != "" and not _md5(md5))
                or (crc is not None and crc != "" and not _crc32c(crc))
                or (etag is not None and etag != "" and not _etag(etag))
            ):
                return None
            files.append(
                File(path, size, md5 or None, crc or None, etag or None, chunk, frozenset(doc))
            )
    except (KeyError, TypeError, ValueError):
        return None
    return Item(
        where, key, data_slug, process_type, status, created, tuple(locations), tuple(files), raw
    )


# The fast check's patterns: what they refuse, the models look at closely
# (and ``catalog.paths.check_relative_path`` names). A path: relative,
# ``/``-separated, no empty, ``.`` or ``..`` segment, no backslash, NUL or
# lone surrogate (a name of other bytes than UTF-8),
# not a drive (``X:``), at most ``MAX_PATH_LENGTH``; a url the same without
# a trailing ``/``.
_SEGMENT = r"(?!\.\.?(?:/|$))[^/\\\x00\ud800-\udfff]+"
_PATH = re.compile(rf"(?!.:)(?=.{{1,{MAX_PATH_LENGTH}}}$){_SEGMENT}(?:/{_SEGMENT})*/?", re.DOTALL)
_URL = re.compile(rf"(?!.:)(?=.{{1,{MAX_PATH_LENGTH}}}$){_SEGMENT}(?:/{_SEGMENT})*", re.DOTALL)
_path = _PATH.fullmatch
_url = _URL.fullmatch
_md5 = re.compile(r"[0-9a-f]{32}").fullmatch
_crc32c = re.compile(r"[0-9a-f]{8}").fullmatch
_etag = re.compile(r"[0-9a-f]{32}(?:-[1-9][0-9]*)?").fullmatch


def _by_the_models(raw: Any, where: str) -> Item:
    """The item through the document's models: their normalizing, their error messages."""
    from pydantic import ValidationError

    if not isinstance(raw, dict):
        raise ImportDocumentError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    try:
        doc = ItemDocument.model_validate(raw)
    except ValidationError as exc:
        raise ImportDocumentError(describe_error(exc, prefix=where)) from None
    return Item(
        where,
        doc.key,
        doc.data_slug,
        doc.process_type,
        doc.status,
        doc.created,
        tuple(
            Location(
                loc.connector,
                loc.url,
                loc.status,
                loc.last_update,
                loc.last_verified,
                loc.open_access_logs,
                bool(loc.damaged),
            )
            for loc in doc.locations
        ),
        tuple(
            File(
                f.path,
                f.size,
                f.md5,
                f.crc32c,
                f.awss3etag,
                f.chunk_size,
                frozenset(f.model_fields_set),
            )
            for f in doc.files
        ),
        raw,
        removed=doc.removed,
    )


def _check_item(item: Item, connectors: Collection[str]) -> None:
    """What one item must be, beyond its shape: configured connectors, no duplicates."""
    on_connector: set[str] = set()
    for number, location in enumerate(item.locations):
        spot = f"{item.where}.locations.{number}"
        if location.connector not in connectors:
            named = ", ".join(sorted(connectors)) or "none"
            raise ImportDocumentError(
                f"{spot}.connector: {location.connector!r} is not a configured connector "
                f"(configured: {named})"
            )
        if location.connector in on_connector:
            raise ImportDocumentError(
                f"{spot}: a second location on {location.connector!r} for one item"
            )
        on_connector.add(location.connector)
        damaged = item.document()["locations"][number].get("damaged")
        if location.status == STATUS_DAMAGED and not damaged:
            raise ImportDocumentError(
                f"{spot}.damaged: a damaged location (DM) names its damaged files"
            )
        if damaged and location.status != STATUS_DAMAGED:
            raise ImportDocumentError(
                f"{spot}.damaged: only a damaged location (status DM) has damaged files"
            )
    paths: set[str] = set()
    for number, file in enumerate(item.files):
        if file.path in paths:
            raise ImportDocumentError(
                f"{item.where}.files.{number}.path: {file.path!r} appears twice"
            )
        paths.add(file.path)


def validate_document(document: Any, *, connectors: Collection[str]) -> list[Item]:
    """Check a whole import document held in memory; its items, or ImportDocumentError.

    The checks of ``import_items`` that need no catalog: each item, keys
    and locations not repeated.
    """
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise ImportDocumentError("expected a JSON object with an 'items' list")
    unknown = sorted(set(document) - {"items"})
    if unknown:
        raise ImportDocumentError(f"{unknown[0]}: unknown key")
    items = [
        checked_item(raw, f"items.{index}", connectors=connectors)
        for index, raw in enumerate(document["items"])
    ]
    keys = _Keys()
    for item in items:
        keys.add(item.key, item.where)
    places: dict[tuple[str, str], str] = {}
    for item in items:
        for number, loc in enumerate(item.locations):
            owner = places.setdefault((loc.connector, loc.url), item.key)
            if owner != item.key:
                raise ImportDocumentError(
                    f"{item.where}.locations.{number}: {loc.connector}:{loc.url} also "
                    f"belongs to item {owner!r}"
                )
    return items


# -- writing --------------------------------------------------------------


@dataclass
class ImportCounts:
    """What an import did so far: items created, updated, and left as they were."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    @property
    def items(self) -> int:
        return self.created + self.updated + self.unchanged


def import_items(
    items: Iterable[tuple[str, Any]],
    *,
    connectors: Collection[str],
    database: pw.Database,
    actor: str = "import",
    verified_at: datetime | None = None,
    batch: int = DEFAULT_BATCH,
    max_errors: int = DEFAULT_MAX_ERRORS,
    progress: Callable[[ImportCounts], None] | None = None,
    check_apart: bool = False,
    read_state: Any = None,
    created_identifies: bool = False,
    lists_every_copy: bool = False,
) -> ImportCounts:
    """Check and register ``items`` (``(where, item)`` pairs) in one transaction.

    Nothing is stored unless every item is right; then ImportDocumentError
    names up to ``max_errors`` problems, each with its place. ``progress``
    is called after each batch.

    ``check_apart``: ``items`` may be read in a forked process, which reads
    and checks them while this one writes (``_checked_apart``), where that
    pays: into a catalog that holds no item imported from text (a re-import
    is read here), from a process that may fork (``catalog.forked``).
    ``items`` must then be readable there, and this process reads none of
    it: a file or a pipe, or a generator not started yet (one that opens a
    database connection opens it there). ``read_state``: an object that
    reading ``items`` updates (``catalog.resolwe.Skipped``); where they are
    read in a forked process, its attributes there at the end are copied
    back into it.

    ``created_identifies``: an item the catalog holds under the same key
    must have the same ``created``, else the import is refused (nothing
    stored): a Resolwe FileStorage's ``created`` never changes, so another
    one under the same id is another database's (``import --from-resolwe``
    given the wrong DSN), not news of ours.

    ``lists_every_copy``: the source lists every copy it has (Resolwe): a
    copy of a changed item that it no longer lists, and that counted on its
    word alone, no longer counts (``catalog.importing.withdraw_unlisted``).

    On SQLite read, checked and written on this thread: checking on a thread
    of its own while this one wrote made it slower (16.4 s against 12.7 s
    on 200,000 items: the two took turns at Python's lock, the database's
    work being this process's own). On PostgreSQL the items are read and
    checked on a thread of their own (``_ahead``) while this one waits for
    the server: with Python's switch interval shortened, 24.2 s against
    26.7 s on 200,000 items; at the usual 5 ms every answer waited for the
    reader to let go of the lock, and the thread gained nothing. The server
    then holds the import (about 9 microseconds a file row, a third of it
    the foreign key's check). The files' and the history's rows, whose ids
    are not needed back, go by ``COPY`` (``catalog.sql.copy_into``): three
    alternating pairs of 200,000 items, 37.3 / 43.8 / 39.4 s with arrays
    against 32.9 / 32.2 / 37.2 s (the server's time for the files' rows
    13.3-13.8 s against 10.3-12.2 s).
    """
    counts = ImportCounts()
    errors: list[str] = []
    keys = _Keys()
    try:
        with _no_cycle_collection(), _import_cache(database), writing(database):
            look_up = sql.is_sqlite(database)
            # A re-import (the catalog holds items imported from text) is
            # read here: on SQLite it passes most items over unchecked, and
            # on PostgreSQL a reading process gained nothing there.
            checking = (
                functools.partial(_checked_apart, read_state=read_state)
                if check_apart and can_fork() and not _stamped()
                else None
            )
            batches = (checking or _checked_batches)(
                items,
                connectors=connectors,
                keys=keys,
                errors=errors,
                batch=batch,
                max_errors=max_errors,
                digests=_Digests(connectors, verified_at),
                look_up=look_up,
            )
            statistics = _Statistics(database)
            files = 0  # of the items created or updated
            with _ahead(batches, on_thread=not look_up) as checked:
                for pending in checked:
                    if errors:
                        continue  # the rest are only looked through for more problems
                    files += _write(
                        pending,
                        counts,
                        actor=actor,
                        verified_at=verified_at,
                        created_identifies=created_identifies,
                        lists_every_copy=lists_every_copy,
                    )
                    del pending  # free before the next batch is read, not after
                    statistics.written(counts.created + counts.updated, files)
                    if progress is not None:
                        progress(counts)
            if len(errors) < max_errors:
                errors += keys.repeated(max_errors - len(errors))
            if errors:
                raise ImportDocumentError(_together(errors, max_errors))
            statistics.done(counts.created + counts.updated, files)
    except pw.IntegrityError:
        # The checks read the catalog first; a concurrent writer can still
        # register the same key or location between read and write.
        raise ImportDocumentError(
            "another writer registered one of these items or locations at the same time; "
            "nothing was stored, import again"
        ) from None
    return counts


@dataclass
class _Batch:
    """One batch of an import: its checked items, and the items passed over."""

    items: list[Item]
    #: The digest of each item's text, by key (None: the source gave no text).
    digests: dict[str, str | None]
    #: Items passed over: the catalog holds them from the same text.
    passed: int = 0
    #: The catalog's rows of the batch's keys (``_existing``), where they were
    #: read in the import's transaction already (SQLite); else None.
    stored: dict[str, tuple[Any, ...]] | None = None


#: The version of what an item's digest stands for: raised when the checks
#: of an item change, so that a text passed before is checked again.
DIGEST_VERSION = 1


class _Digests:
    """Digests of items' texts, salted with what else decides how an item is imported.

    The same text under another configuration (connectors), another
    ``verified_at`` or other checks (``DIGEST_VERSION``) has another digest.
    SHA-256 (the CPU's own instructions here: about 1 microsecond an item),
    its first 128 bits.
    """

    def __init__(self, connectors: Collection[str], verified_at: datetime | None) -> None:
        salt = [DIGEST_VERSION, sorted(connectors), verified_at and verified_at.isoformat()]
        self.base = hashlib.sha256(json.dumps(salt).encode() + b"\n")

    def of(self, text: str | bytes) -> str:
        """The digest of one item's text (a line's end left out)."""
        digest = self.base.copy()
        digest.update(text.rstrip(b"\r\n") if type(text) is bytes else text.encode())  # type: ignore[union-attr]
        return digest.hexdigest()[:32]


def _checked_batches(
    items: Iterable[tuple[Any, ...]],
    *,
    connectors: Collection[str],
    keys: _Keys,
    errors: list[str],
    batch: int,
    max_errors: int,
    digests: _Digests,
    look_up: bool,
) -> Generator[_Batch, None, None]:
    """``items`` checked, in batches of ``batch``; problems go to ``errors``.

    ``look_up`` (the import's own thread and transaction: SQLite): the
    catalog's rows of each batch's keys are read here, and an item whose text
    is the one the catalog last imported it from (``_Digests``) is passed
    over unchecked. To know which, a batch is read whole before its rows are
    read and its items checked; that costs an import of new items a tenth
    of its time (measured on 1,000,000 items: the decoded items are no longer
    in the CPU's caches when they are checked), so it is done only while the
    catalog holds items imported from text: from the first batch if any
    item is (``_stamped``), and after a batch that passed some over. Without
    ``look_up`` every item is checked as it comes, and the writer looks the
    rows up (and passes over without comparing).

    After the first problem no batch is given: the rest is only read for
    more problems, up to ``max_errors``.
    """
    whole = look_up and _stamped()  # each batch read whole before it is checked
    group: list[tuple[str, Any, str | None]] = []
    made = _Batch([], {})
    count = 0
    of = digests.of
    for entry in items:
        digest = of(entry[2]) if len(entry) > 2 else None
        count += 1
        if whole:
            group.append((entry[0], entry[1], digest))
        elif not _check_one(made, entry[0], entry[1], digest, connectors, keys, errors, max_errors):
            return
        if count < batch:
            continue
        made, whole = _read_rows(made, group, connectors, keys, errors, max_errors, look_up)
        group, count = [], 0
        if len(errors) >= max_errors:
            return
        if not errors:
            yield made
            keys.batch_done()
        made = _Batch([], {})
    if count:
        made, _ = _read_rows(made, group, connectors, keys, errors, max_errors, look_up)
        if not errors:
            yield made


def _checked_apart(
    items: Iterable[tuple[Any, ...]],
    *,
    connectors: Collection[str],
    keys: _Keys,
    errors: list[str],
    batch: int,
    max_errors: int,
    digests: _Digests,
    look_up: bool,
    read_state: Any = None,
) -> Generator[_Batch, None, None]:
    """``_checked_batches``, the items read and checked in a forked process
    (``catalog.forked``) while this one writes.

    Measured here on 100,000 items of 5 files into an empty catalog, as
    whole processes: SQLite 3.6-3.7 s against 6.1-6.4 s (this process had spent 40 %
    of the import decoding and checking, which now overlap with the
    writes), the same peak memory; PostgreSQL 11.8 s against 13.4 s (the
    server's work the larger part, a reading thread already beside it);
    ``--from-resolwe`` of 200,000 FileStorages into SQLite 12.1-12.2 s
    against 15.3-15.4 s. At 1,000,000 items: SQLite 35.8 s against 61.4 s,
    PostgreSQL 92.0 s against 93.1 s (the server's work holds it), from
    Resolwe 59.5 s against 87.2 s. The reading process sends each batch's items as
    plain tuples (``_packed``) with their texts, not their decoded form:
    this process decodes an item again only when it goes through the
    item-by-item import. Every item is checked there, none passed over by
    its digest (the caller checks that the catalog holds none imported from
    text). The keys are counted here, in order, so problems are named as
    ``_checked_batches`` names them. ``read_state``: see ``import_items``.
    """

    def produce() -> Iterator[Any]:
        yield from _packed_batches(
            iter(items), connectors=connectors, digests=digests, batch=batch, max_errors=max_errors
        )
        if read_state is not None:
            yield _ReadState(vars(read_state))

    with forked(produce) as received:
        for packed in received:
            if type(packed) is _ReadState:
                vars(read_state).update(packed.values)
                continue
            made = _Batch([], {})
            for where, fields, digest in packed:
                try:
                    if fields is None:
                        raise ImportDocumentError(digest)  # the problem the check found
                    item = _unpacked(where, fields)
                    keys.add(item.key, where)
                except ImportDocumentError as exc:
                    errors.append(str(exc))
                    if len(errors) >= max_errors:
                        return
                    continue
                made.items.append(item)
                made.digests[item.key] = digest
            made, _ = _read_rows(made, [], connectors, keys, errors, max_errors, look_up)
            if not errors:
                yield made
                keys.batch_done()


class _ReadState(NamedTuple):
    """The reading process's last word: the attributes of the import's ``read_state``."""

    values: dict[str, Any]


def _packed_batches(
    items: Iterator[tuple[Any, ...]],
    *,
    connectors: Collection[str],
    digests: _Digests,
    batch: int,
    max_errors: int,
) -> Iterator[list[tuple[Any, ...]]]:
    """In the reading process: ``items`` checked, a batch at a time, each entry
    ``(where, _packed(item), digest)`` or ``(where, None, problem)``."""
    group: list[tuple[Any, ...]] = []
    problems = 0
    of = digests.of
    for entry in items:
        where = entry[0]
        text = entry[2] if len(entry) > 2 else None
        try:
            item = checked_item(entry[1], where, connectors=connectors)
        except ImportDocumentError as exc:
            group.append((where, None, str(exc)))
            problems += 1
            if problems >= max_errors:
                break
        else:
            group.append((where, _packed(item, text), None if text is None else of(text)))
        if len(group) >= batch:
            yield group
            group = []
    if group:
        yield group


#: Sets of a file's given fields, one object each: sent once a batch, not once a file.
_GIVEN: dict[frozenset[str], frozenset[str]] = {}


def _packed(item: Item, text: str | bytes | None) -> tuple[Any, ...]:
    """``item`` as plain values (the quickest to pickle), with its text in place of its
    decoded form where it has one."""
    given = _GIVEN.setdefault
    return (
        item.key,
        item.data_slug,
        item.process_type,
        item.status,
        item.created,
        tuple(map(tuple, item.locations)),
        tuple((*file[:6], given(file.given, file.given)) for file in item.files),
        item.raw if text is None else None,
        text,
        item.removed,
    )


def _unpacked(where: str, fields: tuple[Any, ...]) -> Item:
    """The item ``_packed`` made ``fields`` of."""
    key, data_slug, process_type, status, created, locations, files, raw, text, removed = fields
    return Item(
        where,
        key,
        data_slug,
        process_type,
        status,
        created,
        tuple(Location._make(loc) for loc in locations),
        tuple(File._make(file) for file in files),
        raw,
        text,
        removed,
    )


def _stamped() -> bool:
    """Whether the catalog holds an item imported from text (``import_digest``)."""
    return bool(
        sql.run("SELECT 1 FROM file_storage WHERE import_digest IS NOT NULL LIMIT 1", []).fetchall()
    )


def _read_rows(
    made: _Batch,
    group: Sequence[tuple[str, Any, str | None]],
    connectors: Collection[str],
    keys: _Keys,
    errors: list[str],
    max_errors: int,
    look_up: bool,
) -> tuple[_Batch, bool]:
    """The batch with the catalog's rows of its keys, if ``look_up``; whether the next
    batch reads them first.

    ``group``: the batch's ``(where, raw, digest)``, read whole and not
    checked yet: the items of the same text as last time are passed over,
    the rest checked (into a new batch). Else ``made`` holds the batch,
    checked as it came.
    """
    if not look_up:
        return made, False
    if not group:
        made.stored = _existing(list(made.digests))
        return made, any(_passes(made.stored, key, made.digests[key]) for key in made.stored)
    stored = _existing(
        [key for _, raw, _ in group if type(raw) is dict and type(key := raw.get("key")) is str]
    )
    made = _Batch([], {}, stored=stored)
    for where, raw, digest in group:
        if stored and type(raw) is dict:
            key = raw.get("key")
            if type(key) is str and _passes(stored, key, digest):
                try:
                    keys.add(key, where)
                except ImportDocumentError as exc:
                    errors.append(str(exc))
                    if len(errors) >= max_errors:
                        break
                    continue
                made.passed += 1
                continue
        if not _check_one(made, where, raw, digest, connectors, keys, errors, max_errors):
            break
    return made, made.passed > 0


def _passes(stored: dict[str, tuple[Any, ...]], key: str, digest: str | None) -> bool:
    """Whether the catalog (``stored``, ``_existing``'s rows) last imported ``key`` from
    the text of ``digest``."""
    row = stored.get(key)
    return digest is not None and row is not None and row[_DIGEST] == digest


def _check_one(
    made: _Batch,
    where: str,
    raw: Any,
    digest: str | None,
    connectors: Collection[str],
    keys: _Keys,
    errors: list[str],
    max_errors: int,
) -> bool:
    """Check one item into ``made``, or its problem into ``errors``; False at ``max_errors``."""
    try:
        item = checked_item(raw, where, connectors=connectors)
        keys.add(item.key, where)
    except ImportDocumentError as exc:
        errors.append(str(exc))
        return len(errors) < max_errors
    made.items.append(item)
    made.digests[item.key] = digest
    return True


#: Checked batches an import's reading thread may be ahead of its writing.
DEFAULT_BATCHES_AHEAD = 2
#: Python's switch interval while the reader runs (seconds; the default is
#: 5 ms): a statement's answer waits for the reader to let go of Python's lock.
DEFAULT_SWITCH_SECONDS = 0.0005
#: Seconds an import that failed waits for its reading thread to stop.
DEFAULT_READER_GRACE = 5.0


class _SwitchUsers:
    """Readers running in this process, and the switch interval before the first."""

    lock = threading.Lock()
    count = 0
    saved = 0.0


@contextlib.contextmanager
def _short_switches() -> Iterator[None]:
    """Python's switch interval at ``DEFAULT_SWITCH_SECONDS`` for the block.

    Counted, so that imports running side by side in one process (the client
    API's) leave it as they found it whatever order they end in.
    """
    with _SwitchUsers.lock:
        if _SwitchUsers.count == 0:
            _SwitchUsers.saved = sys.getswitchinterval()
            sys.setswitchinterval(DEFAULT_SWITCH_SECONDS)
        _SwitchUsers.count += 1
    try:
        yield
    finally:
        with _SwitchUsers.lock:
            _SwitchUsers.count -= 1
            if _SwitchUsers.count == 0:
                sys.setswitchinterval(_SwitchUsers.saved)


@contextlib.contextmanager
def _ahead(
    batches: Generator[_Batch, None, None], *, on_thread: bool
) -> Iterator[Iterator[_Batch]]:
    """``batches``, made on a thread of their own while this one writes, if ``on_thread``.

    On PostgreSQL the writing thread mostly waits for the server (psycopg2
    lets go of Python's lock meanwhile), and reading and checking the next
    batch fills that wait. The first two batches are read here: an import of
    one batch (a service registering a few items) starts no thread. The reader
    stays at most ``DEFAULT_BATCHES_AHEAD`` batches ahead, so memory stays
    bounded; its exception (a malformed document) is raised here, in order;
    when the writer stops early, the reader is stopped and joined before the
    block ends.
    """
    if not on_thread:
        try:
            yield batches
        finally:
            batches.close()  # a reading process, if any, stopped now
        return
    handed: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=DEFAULT_BATCHES_AHEAD)
    stop = threading.Event()
    started = contextlib.ExitStack()

    def hand(kind: str, value: Any) -> bool:
        while not stop.is_set():
            try:
                handed.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for pending in batches:
                if not hand("batch", pending):
                    return
        except BaseException as exc:  # handed to the writing thread, raised there
            hand("error", exc)
        else:
            hand("end", None)
        finally:
            batches.close()

    reader = threading.Thread(target=read, name="import-reader", daemon=True)

    def received() -> Iterator[_Batch]:
        for _ in range(2):  # two batches here, so that one batch starts no thread
            pending = next(batches, None)
            if pending is None:
                return
            yield pending
        started.enter_context(_short_switches())
        reader.start()
        while True:
            kind, value = handed.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    finished = False
    try:
        yield received()
        finished = True
    finally:
        stop.set()
        if reader.is_alive():
            # Stopped early (the writer failed), the reader may be waiting for
            # input that does not come (a pipe): it is left behind after a while.
            reader.join(timeout=None if finished else DEFAULT_READER_GRACE)
        elif reader.ident is None:
            batches.close()  # never handed to a reader
        started.close()


#: SQLite's page cache during an import (KiB): the writes append to the
#: tables and their indexes, and the catalog's usual cache (sized for the
#: planner's reads) only added its size to the peak memory (measured here on
#: 200,000 items: 11.7 s and 140 MB with this, 11.8 s and 293 MB without).
DEFAULT_IMPORT_CACHE_KIB = 64_000


#: Items created or updated by an import after which the catalog's statistics
#: are refreshed (``catalog.database.refresh_statistics``): fewer cannot mislead
#: the planner, and the refresh reads a sample of every table.
DEFAULT_ANALYZE_AFTER_ITEMS = 1_000
#: ... or files of them (an item of 50,000 files is a table's worth).
DEFAULT_ANALYZE_AFTER_FILES = 5_000


class _Statistics:
    """PostgreSQL's statistics kept in step with an import that grows the catalog.

    The import's own lookups (keys, places) are planned from the statistics;
    without them, or with those of a catalog a fraction of the size, the
    planner takes ``connector_name = 'local'`` for a few hundred rows and
    reads every location of the connector for each batch of 500 places
    (275 ms a batch at 200,000 items, measured here): an import that slows as
    it goes. So the tables are analyzed, inside the transaction (which sees
    its own rows), whenever the items written reach the catalog's size as
    the planner last knew it, with ``DEFAULT_ANALYZE_AFTER_ITEMS`` as the
    least: about log2(N) times for N items into an empty catalog, never for
    a small import into a large one. The files written count the same way
    (``DEFAULT_ANALYZE_AFTER_FILES``): one item of 50,000 files left the
    planner without statistics, and each job of its copy looked its 128
    paths up by reading all 50,000 (10 ms against 0.5 ms). Nothing on
    SQLite (``refresh_statistics``).
    """

    def __init__(self, database: pw.Database) -> None:
        self.database = database
        postgres = not sql.is_sqlite(database)
        #: Items, files written after which the statistics are stale (0: never).
        self.least = (
            (
                max(DEFAULT_ANALYZE_AFTER_ITEMS, planned_items(database)),
                max(DEFAULT_ANALYZE_AFTER_FILES, planned_files(database)),
            )
            if postgres
            else (0, 0)
        )
        self.next = self.least
        self.last = (0, 0)

    def written(self, items: int, files: int) -> None:
        """After a batch: ``items`` created or updated so far, with ``files`` files."""
        if self._reached(self.next, items, files):
            self._refresh(items, files)
            self.next = (max(2 * items, self.least[0]), max(2 * files, self.least[1]))

    def done(self, items: int, files: int) -> None:
        """Before the commit: the statistics of the catalog as it will be, if they changed."""
        if self._reached(self.least, items, files) and (items, files) != self.last:
            self._refresh(items, files)

    @staticmethod
    def _reached(limits: tuple[int, int], items: int, files: int) -> bool:
        return bool(limits[0]) and (items >= limits[0] or files >= limits[1])

    def _refresh(self, items: int, files: int) -> None:
        refresh_statistics(self.database)
        self.last = (items, files)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector off for the block (reference counting frees as ever).

    An import makes millions of short-lived objects that hold no cycles
    (decoded JSON, checked items, rows); the collector's passes over them
    took 9 % of an import (measured here on 200,000 items: 11.3 s with, 10.3 s
    without, the same peak memory).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@contextlib.contextmanager
def _import_cache(database: pw.Database) -> Iterator[None]:
    """On SQLite, the import's page cache for the block, the usual one after."""
    if not sql.is_sqlite(database):
        yield
        return
    (before,) = database.execute_sql("PRAGMA cache_size").fetchone()
    database.execute_sql(f"PRAGMA cache_size = -{DEFAULT_IMPORT_CACHE_KIB}")
    try:
        yield
    finally:
        database.execute_sql(f"PRAGMA cache_size = {int(before)}")


_UINT64 = (1 << 64) - 1


class _Keys:
    """The keys of an import, to refuse one that comes twice, in 16 bytes a key.

    A key repeated within a batch is refused at once, with both places. One
    that comes again in a later batch is found at the end, before the
    transaction commits, among the keys' hashes (Python's own, 8 bytes a key:
    the same key has the same hash within the process) and the numbers of
    the places (8 more): a million keys take 16 MB, not the keys' text.
    """

    def __init__(self) -> None:
        self.digests = array("Q")
        self.numbers = array("Q")
        #: How the places are written, by their number (``items.N``, ``line N``).
        self.form = ""
        self.recent: dict[str, str] = {}

    def add(self, key: str, where: str) -> None:
        first = self.recent.get(key)
        if first is not None:
            raise ImportDocumentError(f"{where}.key: {key!r} appears twice (also {first})")
        self.recent[key] = where
        self.digests.append(hash(key) & _UINT64)  # stable within the process
        number = where[max(where.rfind(" "), where.rfind(".")) + 1 :]
        self.form = where[: len(where) - len(number)]
        self.numbers.append(int(number))

    def batch_done(self) -> None:
        self.recent = {}

    def repeated(self, limit: int) -> list[str]:
        """The places of keys that came twice (two digests alike), up to ``limit``."""
        ordered = sorted(self.digests)
        twice = {a for a, b in itertools.pairwise(ordered) if a == b}
        del ordered
        if not twice:
            return []
        first: dict[int, int] = {}
        found = []
        for digest, number in zip(self.digests, self.numbers, strict=True):
            if digest not in twice:
                continue
            if digest in first:
                found.append(
                    f"{self.form}{number}.key: appears twice (also {self.form}{first[digest]})"
                )
                if len(found) >= limit:
                    break
            else:
                first[digest] = number
        return found


def _together(errors: Sequence[str], limit: int) -> str:
    if len(errors) == 1:
        return errors[0]
    more = "; and maybe more" if len(errors) >= limit else ""
    return "; ".join(errors) + more


def _write(
    batch: _Batch,
    counts: ImportCounts,
    *,
    actor: str,
    verified_at: datetime | None,
    created_identifies: bool = False,
    lists_every_copy: bool = False,
) -> int:
    """Register one batch: new items in bulk, unchanged ones counted, the rest item by item.

    Returns the files of the items created or updated.

    An item the catalog last imported from the same text is passed over: the
    catalog keeps what happened to it since (copies made or deleted,
    accesses, verifications), not the document's older view of it. Every
    other item's digest is kept with it (``_stamp``).
    """
    counts.unchanged += batch.passed
    stored = batch.stored
    if stored is None:
        stored = _existing([item.key for item in batch.items])
    digests = batch.digests
    passed = {item.key for item in batch.items if _passes(stored, item.key, digests[item.key])}
    counts.unchanged += len(passed)
    todo = [item for item in batch.items if item.key not in passed]
    if created_identifies:
        _check_created(todo, stored)
    known = [item for item in todo if item.key in stored and item.simple]
    same = _unchanged(known, stored)
    # An unchanged item holds each of its places in the catalog already
    # (the unique index says no other item can); the rest are looked up.
    _check_places(batch.items, look_up=[item for item in todo if item.key not in same])
    new = [item for item in todo if item.key not in stored and item.simple]
    _insert(new, digests, actor=actor)
    counts.created += len(new)
    files = sum(len(item.files) for item in new)
    counts.unchanged += len(same)
    inserted = {item.key for item in new}
    written = inserted | same
    kept = set(same)  # the items found as described
    for item in todo:
        if item.key in written:
            continue
        outcome = import_one(
            item.document(), where=item.where, actor=actor, verified_at=verified_at
        )
        if outcome == "created":
            counts.created += 1
        elif outcome == "updated":
            counts.updated += 1
        else:
            counts.unchanged += 1
            kept.add(item.key)
            continue
        files += len(item.files)
    if lists_every_copy:
        # A changed item (not passed over) whose source dropped a copy: even
        # one the catalog holds as described, the dropped copy aside.
        known = {stored[item.key][0]: item for item in todo if item.key in stored}
        withdrawn = withdraw_unlisted(
            {item_id: {loc.connector for loc in item.locations} for item_id, item in known.items()},
            now=utcnow(),
        )
        for item_id in withdrawn:
            if known[item_id].key in kept:
                counts.unchanged -= 1
                counts.updated += 1
    _stamp(
        [
            (item.key, digests[item.key])
            for item in todo
            if item.key not in inserted
            and (stored[item.key][_DIGEST] if item.key in stored else None) != digests[item.key]
        ]
    )
    return files


def _check_created(items: Sequence[Item], stored: dict[str, tuple[Any, ...]]) -> None:
    """Refuse an item the catalog holds (``stored``) as created at another time."""
    for item in items:
        row = stored.get(item.key)
        if row is not None and _time(row[4]) != item.created:
            raise ImportDocumentError(
                f"{item.where}: item {item.key!r} was created {_row_time(row[4])} in the catalog,"
                f" {_row_time(item.created)} at the source: another database than the one"
                " imported before? nothing was stored"
            )


def _row_time(value: Any) -> str:
    """A time of the catalog or of an item as ISO 8601 UTC with ``Z``."""
    return f"{_time(value).isoformat()}Z"


def _chunks(values: Sequence[Any], size: int = 500) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


#: Where ``_existing`` rows hold the import digest.
_DIGEST = 6


def _existing(keys: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    """The items of ``keys`` the catalog holds: id, data_slug, process_type, status, created,
    removed, import_digest."""
    found: dict[str, tuple[Any, ...]] = {}
    for chunk in _chunks(keys):
        condition, params = sql.one_of("key", chunk)
        for key, *row in sql.run(
            "SELECT key, id, data_slug, process_type, status, created, removed, import_digest"
            f" FROM file_storage WHERE {condition}",
            params,
        ).fetchall():
            found[key] = tuple(row)
    return found


def _stamp(digests: Sequence[tuple[str, str | None]]) -> None:
    """Keep each item's digest (``(key, digest)``) with it, for the next import."""
    for chunk in _chunks(digests):
        rows = ", ".join(["(?, ?)"] * len(chunk))
        sql.run(
            f"WITH stamp (k, d) AS (VALUES {rows}) UPDATE file_storage"
            " SET import_digest = stamp.d FROM stamp WHERE file_storage.key = stamp.k",
            [value for pair in chunk for value in pair],
        )


def _check_places(batch: Sequence[Item], *, look_up: Sequence[Item]) -> None:
    """Refuse a location (connector, url) that belongs to another item, here or in the
    catalog, or that lies inside or around another item's location on its connector.

    Every place of ``batch`` is compared with the others; those of
    ``look_up`` (the items the import writes) with the catalog too, and with
    each other for overlaps (``catalog.queries.locations_at``). Two items
    that overlap are refused: a delete of one's copy would remove the other's
    files. Two that already overlap in the catalog, unchanged, are left as
    they are (the import stores nothing of them).
    """
    owners: dict[tuple[str, str], Item] = {}
    for item in batch:
        for number, loc in enumerate(item.locations):
            place = (loc.connector, loc.url)
            other = owners.setdefault(place, item)
            if other is not item:
                raise ImportDocumentError(
                    f"{item.where}.locations.{number}: {loc.connector}:{loc.url} also belongs "
                    f"to item {other.key!r}"
                )
    # Overlaps within the batch, in Python: only urls with a ``/`` hold or
    # lie inside another, so a batch without one costs a lookup a url.
    seen: dict[tuple[str, str], Item] = {}
    below: dict[tuple[str, str], tuple[str, Item]] = {}  # an ancestor -> a url under it
    for item in look_up:
        for number, loc in enumerate(item.locations):
            place = (loc.connector, loc.url)
            inner = below.get(place)
            if inner is not None and inner[1] is not item:
                raise _overlap(item, number, loc.connector, loc.url, inner[0], inner[1].key)
            if "/" in loc.url:
                for ancestor in ancestors_of(loc.url):
                    outer = seen.get((loc.connector, ancestor))
                    if outer is not None and outer is not item:
                        raise _overlap(item, number, loc.connector, loc.url, ancestor, outer.key)
                    below.setdefault((loc.connector, ancestor), (loc.url, item))
            seen[place] = item
    # By connector, so that the lookup uses the (connector_name, url) index
    # (a row-value IN list scans the whole table on SQLite).
    by_connector: dict[str, list[str]] = {}
    for item in look_up:
        for loc in item.locations:
            by_connector.setdefault(loc.connector, []).append(loc.url)
    for connector, urls in by_connector.items():
        for chunk in _chunks(urls):
            for url, theirs, key in locations_at(connector, chunk):
                item = owners[(connector, url)]
                if key == item.key:
                    continue  # its own (another url of its own is the item-by-item rules')
                number = next(
                    n
                    for n, loc in enumerate(item.locations)
                    if (loc.connector, loc.url) == (connector, url)
                )
                if theirs == url:
                    raise ImportDocumentError(
                        f"{item.where}.locations.{number}: {connector}:{url} already belongs "
                        f"to item {key!r}"
                    )
                raise _overlap(item, number, connector, url, theirs, key)


def _overlap(
    item: Item, number: int, connector: str, url: str, theirs: str, key: str
) -> ImportDocumentError:
    """The error of ``item``'s location ``number`` (at ``url``) inside or around ``theirs``."""
    how = "inside" if url.startswith(f"{theirs}/") else "around"
    return ImportDocumentError(
        f"{item.where}.locations.{number}: {connector}:{url} lies {how} item {key!r}'s "
        f"location {connector}:{theirs}"
    )


def _insert(items: Sequence[Item], digests: dict[str, str | None], *, actor: str) -> None:
    """Write new items (with their digests), their locations, files, locks and history rows."""
    if not items:
        return
    now = utcnow()
    # A removed item (the producer says it is gone) keeps the status it would
    # have had, and is marked removed now (``catalog.removal.mark_removed``).
    ids = dict(
        (key, id_)
        for id_, key in sql.insert(
            "file_storage (key, data_slug, process_type, status, created, removed, import_digest)",
            [
                (i.key, i.data_slug, i.process_type, i.status, i.created, None, digests[i.key])
                if i.status != REMOVED_STATUS
                else (
                    i.key,
                    i.data_slug,
                    i.process_type,
                    ITEM_STATUS_DONE,
                    i.created,
                    now,
                    digests[i.key],
                )
                for i in items
            ],
            returning="id, key",
        )
    )
    located = sql.insert(
        "storage_location (file_storage_id, connector_name, url, status, last_update,"
        " last_verified)",
        [
            (
                ids[i.key],
                loc.connector,
                loc.url,
                loc.status,
                loc.last_update or i.created,
                loc.last_verified,
            )
            for i in items
            for loc in i.locations
        ],
        returning="id, file_storage_id, connector_name",
    )
    sql.copy_into(
        "referenced_path (file_storage_id, path, size, md5, crc32c, awss3etag, chunk_size)",
        [
            (ids[i.key], f.path, f.size, f.md5, f.crc32c, f.awss3etag, f.chunk_size)
            for i in items
            for f in i.files
        ],
    )
    locks = {
        (ids[i.key], loc.connector): loc.open_access_logs
        for i in items
        for loc in i.locations
        if loc.open_access_logs
    }
    sql.insert(
        "access_log (storage_location_id, started, reason)",
        [
            (location_id, now, IMPORT_LOCK_REASON)
            for location_id, item_id, connector in located
            if (item_id, connector) in locks
            for _ in range(locks[(item_id, connector)])
        ],
    )
    sql.copy_into(
        "action (started, finished, actor, action, item_key, file_storage_id, result)",
        [
            row
            for i in items
            for row in (
                [(now, None, actor, "mark removed", i.key, ids[i.key], "ok")]
                if i.status == REMOVED_STATUS
                else []
            )
            + [(now, now, actor, "register", i.key, ids[i.key], "created")]
        ],
    )


def _unchanged(items: Sequence[Item], existing: dict[str, tuple[Any, ...]]) -> set[str]:
    """The keys of ``items`` the catalog holds exactly as described (an import changes nothing).

    ``existing``: the stored items by key, as ``_existing`` gives them.
    """
    if not items:
        return set()

    ids = [existing[item.key][0] for item in items]
    places: dict[int, dict[str, tuple[Any, ...]]] = {}
    paths: dict[int, dict[str, tuple[Any, ...]]] = {}
    for chunk in _chunks(ids):
        marks = ", ".join("?" * len(chunk))
        for item_id, connector, url, status, last_update, last_verified, locks in sql.run(
            "SELECT l.file_storage_id, l.connector_name, l.url, l.status, l.last_update,"
            " l.last_verified, (SELECT COUNT(*) FROM access_log a WHERE"
            " a.storage_location_id = l.id AND a.finished IS NULL AND a.reason = ?)"
            f" FROM storage_location l WHERE l.file_storage_id IN ({marks})",
            [IMPORT_LOCK_REASON, *chunk],
        ).fetchall():
            places.setdefault(item_id, {})[connector] = (
                url,
                status,
                _time(last_update),
                _time(last_verified),
                locks,
            )
        for row in sql.run(
            "SELECT file_storage_id, path, size, md5, crc32c, awss3etag, chunk_size"
            f" FROM referenced_path WHERE file_storage_id IN ({marks})",
            list(chunk),
        ).fetchall():
            paths.setdefault(row[0], {})[row[1]] = row[2:]
    same = set()
    for item in items:
        item_id, slug, process, status, created, removed, _ = existing[item.key]
        # As the item-by-item import decides: a removed item's status stays,
        # and one the document says is removed must be marked so already.
        if item.status == REMOVED_STATUS:
            if removed is None or (slug, process) != (item.data_slug, item.process_type):
                continue
        elif (slug, process, status) != (item.data_slug, item.process_type, item.status):
            continue
        if _time(created) != item.created:
            continue
        if all(
            _same_location(places.get(item_id, {}).get(loc.connector), loc, item.created)
            for loc in item.locations
        ) and all(_same_file(paths.get(item_id, {}).get(f.path), f) for f in item.files):
            same.add(item.key)
    return same


_FILE_FIELDS = ("size", "md5", "crc32c", "awss3etag", "chunk_size")


def _same_location(stored: tuple[Any, ...] | None, loc: Location, created: datetime) -> bool:
    if stored is None:
        return False
    url, status, last_update, last_verified, locks = stored
    verified_kept = last_verified is not None and status in (STATUS_DONE, STATUS_DAMAGED)
    return (
        url == loc.url
        and status == loc.status
        and last_update >= (loc.last_update or created)  # a later access here stands
        and (last_verified == loc.last_verified or verified_kept)
        and locks == loc.open_access_logs
    )


def _same_file(stored: tuple[Any, ...] | None, file: File) -> bool:
    if stored is None:
        return False
    if file.given == _FILE_KEYS:  # every field given: the whole row must match
        return stored == file[1:6]
    given = dict(zip(_FILE_FIELDS, file[1:6], strict=True))
    return all(
        stored[number] == given[name]
        for number, name in enumerate(_FILE_FIELDS)
        if name in file.given
    )


def _time(value: Any) -> Any:
    """A time as the catalog returns it (text on SQLite) as a naive datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        from datetime import UTC

        return value.astimezone(UTC).replace(tzinfo=None)
    return value


class ImportResult(NamedTuple):
    """What an import did: items created, updated, and left as they were."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def as_json(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}


def import_document(
    document: Any,
    *,
    connectors: Collection[str],
    database: pw.Database,
    actor: str = "import",
    verified_at: datetime | None = None,
) -> ImportResult:
    """Check ``document`` and register its items in one transaction.

    ``connectors`` are the configured connector names; a location on any other
    is an error. Nothing is stored unless everything is valid.

    The ``OK`` (and ``DM``) locations of an item are what the document
    asserts: they hold its files as the document describes them. Where a
    file's content changed (another size or hash) or a file is new, every
    other copy of the item is damaged until repaired (``catalog.integrity``);
    a file known bad on a location stays so whatever the document says.
    ``verified_at``: when the asserted copies' bytes were hashed (an ingest
    reads every file), else they are unverified unless the document says.
    Documents of any size go through ``catalog.streaming`` (the command
    line reads them as they come).
    """
    if not isinstance(document, dict):
        raise ImportDocumentError(
            f"expected a JSON object with an 'items' list, got {type(document).__name__}"
        )
    unknown = sorted(set(document) - {"items"})
    if unknown:
        raise ImportDocumentError(f"{unknown[0]}: unknown key")
    if "items" not in document:
        raise ImportDocumentError("items: required key is missing")
    if not isinstance(document["items"], list):
        raise ImportDocumentError(f"items: expected a list, got {type(document['items']).__name__}")
    counts = import_items(
        ((f"items.{index}", raw) for index, raw in enumerate(document["items"])),
        connectors=connectors,
        database=database,
        actor=actor,
        verified_at=verified_at,
    )
    return ImportResult(counts.created, counts.updated, counts.unchanged)
