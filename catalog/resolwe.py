"""Reading an existing Resolwe database as import items (``import --from-resolwe DSN``).

Resolwe keeps its copies in the tables of ``resolwe/storage`` (described in
``resolwe-schema.md``): ``storage_filestorage`` (one per Data run),
``storage_storagelocation`` (its copies), ``storage_referencedpath`` with its
many-to-many link to the locations (rows shared between copies), and
``storage_accesslog`` (a lock while ``finished`` is NULL); ``flow_data`` and
``flow_process`` give the slug and process type. Each FileStorage becomes
one item of the import document (SPEC §6):

- key ``resolwe:<file_storage id>`` (stable: run again, it is the same item);
  ``created`` the FileStorage's;
- ``data_slug``, ``process_type`` and ``status`` from one Data row: the
  original (``duplicated IS NULL``) of lowest id, else the lowest id;
- no Data row points to it (unreferenced): ``"status": "removed"``, so that
  its unlocked copies go as Resolwe's own cleanup would have them go;
- a location per ``storage_storagelocation`` row on a connector configured
  here (Resolwe's names mapped by ``resolwe: {connectors}``), with its
  status, url, last update and open locks; one on any other connector is
  left out and reported; an ``OK`` one not linked to some file of the item
  (Resolwe links a file to the copies that hold it) is damaged (``DM``),
  naming those files;
- its files: the distinct paths linked to any of its locations, directory
  entries included; size ``-1`` and empty hashes (unknown) left out, so
  that an import keeps what the catalog knows of them.

The source is only read: one ``REPEATABLE READ READ ONLY`` transaction,
pages of FileStorages by id.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from catalog.database import hide_dsn, redact_dsn
from catalog.errors import ImportDocumentError
from catalog.importing import UNLINKED
from catalog.models import STATUS_DAMAGED, STATUS_DONE

#: FileStorages read per round trip.
DEFAULT_PAGE = 2_000
#: The prefix of the keys of items read from Resolwe.
KEY_PREFIX = "resolwe:"


@dataclass
class Skipped:
    """Locations left out: on connectors not configured here, by connector."""

    counts: dict[str, int] = field(default_factory=dict)
    first: list[dict[str, str]] = field(default_factory=list)

    def add(self, key: str, connector: str, url: str, status: str) -> None:
        self.counts[connector] = self.counts.get(connector, 0) + 1
        if len(self.first) < 5:
            self.first.append({"key": key, "connector": connector, "url": url, "status": status})


def resolwe_items(
    dsn: str,
    *,
    connectors: Mapping[str, str],
    skipped: Skipped | None = None,
    page: int = DEFAULT_PAGE,
    connect: Callable[[str], Any] | None = None,
    texts: bool = False,
) -> Iterator[tuple[Any, ...]]:
    """``(where, item)`` of each FileStorage of the Resolwe database at ``dsn``, by id.

    ``connectors``: Resolwe's connector name → ours, for every connector to
    import (a location on any other is left out and counted in ``skipped``).
    ``texts``: ``(where, item, text)``, the item in a canonical encoding
    (``_encoder``), of which the import keeps a digest: a FileStorage that has
    not changed since the last run is passed over (``catalog.streaming``).
    """
    import psycopg2

    try:
        connection = (connect or psycopg2.connect)(dsn)
    except psycopg2.Error as exc:
        raise _unreadable(dsn, exc) from None
    try:
        connection.set_session(isolation_level="REPEATABLE READ", readonly=True)
        with connection.cursor() as cursor:
            after = 0
            encode = None
            while True:
                try:
                    cursor.execute(
                        "SELECT id, created FROM storage_filestorage"
                        " WHERE id > %s ORDER BY id LIMIT %s",
                        (after, page),
                    )
                    rows = cursor.fetchall()
                    if not rows:
                        return
                    found = list(_page(cursor, rows, connectors, skipped or Skipped()))
                except psycopg2.Error as exc:
                    raise _unreadable(dsn, exc) from None
                if texts:
                    encode = encode or _encoder()
                    for where, item in found:
                        yield where, item, encode(item)
                else:
                    yield from found
                after = rows[-1][0]
    finally:
        if not connection.closed:
            connection.rollback()
            connection.close()


def _encoder() -> Callable[[Any], bytes]:
    """Items to bytes, equal for equal items: what their digests are taken of.

    Pickle (protocol 5) without its memo (``fast``): four times quicker than
    JSON here (6 against 24 microseconds an item, 18 s of a million), and,
    without the memo, the bytes do not depend on which equal strings an item
    happens to share. An item whose encoding changes (another Python) is
    only checked and compared once more, not lost: the digest decides
    nothing but the pass-over.
    """
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=5)
    pickler.fast = True

    def encode(item: Any) -> bytes:
        buffer.seek(0)
        buffer.truncate()
        pickler.dump(item)
        return buffer.getvalue()

    return encode


def _unreadable(dsn: str, exc: Exception) -> ImportDocumentError:
    """One line: which Resolwe database (its password hidden) could not be read, and why."""
    lines = str(exc).strip().splitlines()
    detail = hide_dsn(dsn, lines[0]) if lines else type(exc).__name__
    return ImportDocumentError(f"--from-resolwe {redact_dsn(dsn)}: {detail}")


def _page(
    cursor: Any,
    rows: list[tuple[int, datetime]],
    connectors: Mapping[str, str],
    skipped: Skipped,
) -> Iterator[tuple[str, dict[str, Any]]]:
    ids = [row[0] for row in rows]
    cursor.execute(
        "SELECT DISTINCT ON (d.location_id) d.location_id, d.slug, p.type, d.status"
        " FROM flow_data d JOIN flow_process p ON p.id = d.process_id"
        " WHERE d.location_id = ANY(%s)"
        " ORDER BY d.location_id, d.duplicated IS NOT NULL, d.id",
        (ids,),
    )
    data = {row[0]: row[1:] for row in cursor.fetchall()}
    cursor.execute(
        "SELECT sl.file_storage_id, sl.id, sl.connector_name, sl.url, sl.status, sl.last_update,"
        " (SELECT count(*) FROM storage_accesslog al"
        "  WHERE al.storage_location_id = sl.id AND al.finished IS NULL)"
        " FROM storage_storagelocation sl WHERE sl.file_storage_id = ANY(%s) ORDER BY sl.id",
        (ids,),
    )
    locations: dict[int, list[tuple[Any, ...]]] = {}
    for item_id, *location in cursor.fetchall():
        locations.setdefault(item_id, []).append(tuple(location))
    # With each path, the copies linked to it (a window over the rows the
    # DISTINCT ON reads anyway, in their order): a per-copy count of its
    # links, as a subquery, cost a fifth more time at 1,000,000 items.
    cursor.execute(
        "SELECT DISTINCT ON (sl.file_storage_id, rp.path) sl.file_storage_id, rp.path, rp.size,"
        " rp.md5, rp.crc32c, rp.awss3etag, rp.chunk_size,"
        " array_agg(sl.id) OVER (PARTITION BY sl.file_storage_id, rp.path)"
        " FROM storage_storagelocation sl"
        " JOIN storage_referencedpath_storage_locations m ON m.storagelocation_id = sl.id"
        " JOIN storage_referencedpath rp ON rp.id = m.referencedpath_id"
        " WHERE sl.file_storage_id = ANY(%s)"
        " ORDER BY sl.file_storage_id, rp.path, rp.id",
        (ids,),
    )
    files: dict[int, list[dict[str, Any]]] = {}
    #: By item: each file's (not folder's) path, and the copies linked to it.
    holders: dict[int, list[tuple[str, list[int]]]] = {}
    for item_id, path, size, md5, crc32c, etag, chunk_size, linked in cursor.fetchall():
        if not path.endswith("/"):
            holders.setdefault(item_id, []).append((path, linked))
        # Unknown (size -1, a hash ''): left out, not null. The import keeps
        # what is left out, so a size or hash known here (an ingest hashed
        # it) is not forgotten on the source's "unknown": verifying would
        # then find any bytes good.
        entry: dict[str, Any] = {"path": path}
        if size is not None and size >= 0:
            entry["size"] = size
        if md5:
            entry["md5"] = md5
        if crc32c:
            entry["crc32c"] = crc32c
        if etag:
            entry["awss3etag"] = etag
        entry["chunk_size"] = chunk_size
        files.setdefault(item_id, []).append(entry)
    unlinked = _unlinked(locations, holders)
    for item_id, created in rows:
        key = f"{KEY_PREFIX}{item_id}"
        found = data.get(item_id)
        slug, process_type, status = found if found is not None else ("", "", "removed")
        item_locations = []
        for location_id, connector, url, state, last_update, locks in locations.get(item_id, []):
            ours = connectors.get(connector)
            if ours is None:
                skipped.add(key, connector, url, state)
                continue
            location = {
                "connector": ours,
                "url": url,
                "status": state,
                "last_update": _time(last_update),
                "open_access_logs": locks,
            }
            if location_id in unlinked:
                location["status"] = STATUS_DAMAGED
                location["damaged"] = dict.fromkeys(unlinked[location_id], UNLINKED)
            item_locations.append(location)
        yield (
            f"FileStorage {item_id}",
            {
                "key": key,
                "data_slug": slug,
                "process_type": process_type,
                "status": status,
                "created": _time(created),
                "locations": item_locations,
                "files": files.get(item_id, []),
            },
        )


def _unlinked(
    locations: Mapping[int, list[tuple[Any, ...]]],
    holders: Mapping[int, list[tuple[str, list[int]]]],
) -> dict[int, list[str]]:
    """The files (not folders) of its item each ``OK`` location is not linked to, by its
    id (``holders``: by item, each file's path and the locations linked to it).

    Resolwe links a path to the copies that hold it: a copy ``OK`` there
    that lacks a link does not hold that file, and is not taken to (an
    ``OK`` location of a document asserts every file of its item).
    """
    found: dict[int, list[str]] = {}
    for item_id, its in locations.items():
        for location in its:
            if location[3] != STATUS_DONE:
                continue
            missing = [
                path for path, linked in holders.get(item_id, ()) if location[0] not in linked
            ]
            if missing:
                found[location[0]] = missing
    return found


def _time(value: datetime) -> str:
    """A time of the source (with a zone) as ISO 8601 in UTC with ``Z``."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat() + "Z"


def connector_map(
    resolwe_names: Mapping[str, str], configured: Mapping[str, Any]
) -> dict[str, str]:
    """Resolwe's names → ours: the configured mapping, and every configured name as itself."""
    names = {name: name for name in configured}
    names.update(resolwe_names)
    return names
