"""The statements of a copy job, written out in SQL.

A job of small files spends most of its time in the catalog, and much of
that, through peewee, in building statements (``catalog.sql``): the copy
job runs a dozen statements per copy of an item, so they are written out
here, for SQLite and PostgreSQL alike.

A job (the files of one item, or of several small items) reads what it
needs (``copy_facts``), locks the sources and marks the targets ``UP``
(``start_copies``), copies, then records the files proven and closes the
locks (``record_copies``); each is a fixed number of statements however
many items the job has, and each write runs in a transaction that holds
the items' catalog locks, as ``catalog.queries.locked_item`` does. On
PostgreSQL a job never waits for one item's lock while it holds another's
(``_in_one_or_each``): an import, which locks the items it updates in its
document's order and holds them to its end, would close a circle with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import NamedTuple, TypeVar

import peewee as pw

from catalog.models import (
    STATUS_DELETING,
    STATUS_DONE,
    STATUS_PREPARING,
    STATUS_UPLOADING,
)
from catalog.paths import files_label
from catalog.queries import writing
from catalog.sql import Statement, is_sqlite
from catalog.sql import database as _database
from catalog.sql import insert as _insert
from catalog.sql import insert_statements as _insert_statements
from catalog.sql import run as _run
from catalog.sql import run_all as _run_all


class Place(NamedTuple):
    """One location of an item, as a copy job needs it."""

    id: int
    connector_name: str
    url: str
    status: str


class Entry(NamedTuple):
    """One file of an item, and whether the target has it recorded already."""

    id: int
    path: str
    size: int | None
    md5: str | None
    crc32c: str | None
    awss3etag: str | None
    chunk_size: int
    recorded: bool


class CopyFacts(NamedTuple):
    """What a copy job reads of one item before it starts."""

    id: int
    key: str | None
    places: list[Place]
    #: The files asked for that the item has, by path.
    entries: dict[str, Entry]


class Proven(NamedTuple):
    """One file copied and validated, to record."""

    entry: Entry
    validated_by: str
    size: int
    duration_ms: int
    #: The S3 etag of the bytes at the part size the copy was uploaded with,
    #: and that part size, when it is not the catalog's ``chunk_size``.
    etag: tuple[str, int] | None = None


class Start(NamedTuple):
    """One item's copy about to start: lock ``source_id``, make ``target_id`` ``UP``."""

    item_id: int
    source_id: int
    target_id: int
    reason: str


class Record(NamedTuple):
    """One item's files proven on ``target``, to record, and its source's lock to close."""

    item_id: int
    key: str | None
    target: Place
    source_name: str
    proven: Sequence[Proven]
    log_id: int


def copy_facts(target: str, wanted: Sequence[tuple[int, Sequence[str]]]) -> dict[int, CopyFacts]:
    """Each item's key and locations, and those of its files ``paths`` it has, by item id.

    ``wanted``: (item id, paths). Each file says whether the item's location
    on ``target`` has it recorded. An item not in the catalog, or removed
    (it counts nowhere: nothing of it is copied), is left out.
    Two statements, however many items.
    """
    ids = list(dict.fromkeys(item_id for item_id, _ in wanted))
    if not ids:
        return {}
    items = ", ".join("?" * len(ids))
    keys: dict[int, str | None] = {}
    places: dict[int, list[Place]] = {}
    for item_id, key, *place in _run(
        "SELECT f.id, f.key, l.id, l.connector_name, l.url, l.status FROM file_storage AS f"
        " LEFT JOIN storage_location AS l ON l.file_storage_id = f.id"
        f" WHERE f.id IN ({items}) AND f.removed IS NULL",
        ids,
    ):
        keys[item_id] = key
        places.setdefault(item_id, [])
        if place[0] is not None:
            places[item_id].append(Place(*place))
    asked = {item_id: set(paths) for item_id, paths in wanted}
    # The union of the paths: items of one job often share their files' names.
    paths = list(dict.fromkeys(path for _, item_paths in wanted for path in item_paths))
    entries: dict[int, dict[str, Entry]] = {item_id: {} for item_id in keys}
    if paths:
        for row in _run(
            "SELECT r.file_storage_id, r.id, r.path, r.size, r.md5, r.crc32c, r.awss3etag,"
            " r.chunk_size, lf.id FROM referenced_path AS r"
            " LEFT JOIN storage_location AS t"
            " ON t.file_storage_id = r.file_storage_id AND t.connector_name = ?"
            " LEFT JOIN location_file AS lf"
            " ON lf.referenced_path_id = r.id AND lf.storage_location_id = t.id"
            f" WHERE r.file_storage_id IN ({items}) AND r.path IN ({', '.join('?' * len(paths))})",
            (target, *ids, *paths),
        ):
            if row[0] in entries and row[2] in asked.get(row[0], ()):
                entries[row[0]][row[2]] = Entry(*row[1:8], recorded=row[8] is not None)
    return {
        item_id: CopyFacts(item_id, keys[item_id], places[item_id], entries[item_id])
        for item_id in ids
        if item_id in keys
    }


def start_copies(
    starts: Sequence[Start], *, expires: datetime | None, now: datetime
) -> dict[int, int]:
    """Lock each source with an access log and make each target ``UP``, in one transaction.

    Under the items' catalog locks. Returns the access log's id by item id;
    an item whose source is no longer ``OK`` (or that is gone) is left out,
    and nothing is done for it. Two round trips on PostgreSQL: the locks and
    what they protect are read in one, the writes made in the other. (Where
    another session holds one of the items, a transaction an item, in turn:
    ``_in_one_or_each``.)
    """
    logs: dict[int, int] = {}
    for part in _in_one_or_each(
        starts,
        lambda start: start.item_id,
        lambda some, wait: _start_copies(some, expires=expires, now=now, wait=wait),
    ):
        logs.update(part)
    return logs


def _start_copies(
    starts: Sequence[Start], *, expires: datetime | None, now: datetime, wait: bool
) -> dict[int, int]:
    """``start_copies`` in one transaction; its locks wait for another session's if ``wait``."""
    if not starts:
        return {}
    database = _database()
    sources = ", ".join("?" * len(starts))
    with writing(database):
        ok = {
            (location_id, item_id)
            for location_id, item_id in _run_all(
                [
                    *_locking(database, [start.item_id for start in starts], wait=wait),
                    (
                        "SELECT id, file_storage_id FROM storage_location"
                        f" WHERE id IN ({sources}) AND status = ?",
                        [*(start.source_id for start in starts), STATUS_DONE],
                    ),
                ]
            )
        }
        going = [s for s in starts if (s.source_id, s.item_id) in ok]
        if not going:
            return {}
        targets = ", ".join("?" * len(going))
        logs = {
            location_id: log_id
            for log_id, location_id in _insert(
                "access_log (storage_location_id, started, finished, reason, expires)",
                [(start.source_id, now, None, start.reason, expires) for start in going],
                returning="id, storage_location_id",
                before=[
                    (
                        "UPDATE storage_location SET status = ?, last_update = ?"
                        f" WHERE id IN ({targets}) AND status = ?",
                        [
                            STATUS_UPLOADING,
                            now,
                            *(start.target_id for start in going),
                            STATUS_PREPARING,
                        ],
                    )
                ],
            )
        }
    return {start.item_id: logs[start.source_id] for start in going}


class Recorded(NamedTuple):
    """What ``record_copies`` recorded: the items, and the files left out as changed."""

    items: set[int]
    #: (item id, path) of files proven against hashes that are no longer the
    #: item's (an import or ingest changed the file meanwhile): not recorded.
    changed: list[tuple[int, str]]


def copy_reason(target: str) -> str:
    """How the reason of a copy job's source lock begins (``copy to TARGET: files``).

    The scan knows a copy still under way by it (``scheduler.scan``).
    """
    return f"copy to {target}: "


def record_copies(records: Sequence[Record], *, actor: str, now: datetime) -> Recorded:
    """Record the files proven and close the sources' access logs, in one transaction.

    Each file gets its ``location_file`` row (verified now: the copy was
    validated), each item a line in the history (its files, bytes and
    copying time); each location is stamped (progress) and becomes ``OK``
    if every file of its item is recorded now. A file whose catalog hashes
    changed since the job read them is not recorded (``Recorded.changed``):
    the bytes copied are the old version. An item whose location is gone or
    being deleted gets nothing recorded. The logs are closed either way.
    Three round trips on PostgreSQL: the locks taken, the logs closed and
    the targets read in one, the files' hashes read in another, the records
    written in the last. (Where another session holds one of the items, a
    transaction an item, in turn: ``_in_one_or_each``.)
    """
    items: set[int] = set()
    changed: list[tuple[int, str]] = []
    for part in _in_one_or_each(
        records,
        lambda record: record.item_id,
        lambda some, wait: _record_copies(some, actor=actor, now=now, wait=wait),
    ):
        items |= part.items
        changed += part.changed
    return Recorded(items, changed)


def _record_copies(records: Sequence[Record], *, actor: str, now: datetime, wait: bool) -> Recorded:
    """``record_copies`` in one transaction; its locks wait for another session's if ``wait``."""
    if not records:
        return Recorded(set(), [])
    database = _database()
    marks = ", ".join("?" * len(records))
    with writing(database):
        status = {
            location_id: (item_id, state)
            for location_id, item_id, state in _run_all(
                [
                    *_locking(database, [record.item_id for record in records], wait=wait),
                    (
                        f"UPDATE access_log SET finished = ? WHERE id IN ({marks})",
                        [now, *(record.log_id for record in records)],
                    ),
                    (
                        "SELECT id, file_storage_id, status FROM storage_location"
                        f" WHERE id IN ({marks})",
                        [record.target.id for record in records],
                    ),
                ]
            )
        }
        # A location of another item, or gone (with its item, or deleted), or
        # being deleted: nothing is recorded there.
        kept = [
            r
            for r in records
            if status.get(r.target.id, (None, None))[0] == r.item_id
            and status[r.target.id][1] != STATUS_DELETING
        ]
        if not kept:
            return Recorded(set(), [])
        current = _current_hashes([done.entry.id for r in kept for done in r.proven])
        changed = [
            (r.item_id, done.entry.path)
            for r in kept
            for done in r.proven
            if current.get(done.entry.id) != _hashes_of(done.entry)
        ]
        if changed:
            gone = {path for _, path in changed}
            kept = [
                Record(
                    r.item_id,
                    r.key,
                    r.target,
                    r.source_name,
                    [done for done in r.proven if done.entry.path not in gone],
                    r.log_id,
                )
                for r in kept
            ]
        # The etag of a file uploaded in larger parts than the catalog's was
        # computed with, recorded with its part size (``chunk_size``).
        etags = [
            (
                "UPDATE referenced_path SET awss3etag = ?, chunk_size = ? WHERE id = ?",
                [done.etag[0], done.etag[1], done.entry.id],
            )
            for r in kept
            for done in r.proven
            if done.etag is not None
        ]
        files = _insert_statements(
            "location_file"
            " (storage_location_id, referenced_path_id, copied, validated_by, verified)",
            [
                (r.target.id, done.entry.id, now, done.validated_by, now)
                for r in kept
                for done in r.proven
            ],
            on_conflict="DO NOTHING",
        )
        # One line of history per item and job: the files themselves are
        # recorded above, each with when and how it was proven.
        history = _insert_statements(
            "action (started, finished, actor, action, item_key, file_storage_id, source,"
            " target, path, result, bytes, duration_ms)",
            [
                (
                    now,
                    now,
                    actor,
                    "copy",
                    r.key,
                    r.item_id,
                    r.source_name,
                    r.target.connector_name,
                    files_label([done.entry.path for done in r.proven]),
                    "ok",
                    sum(done.size for done in r.proven),
                    sum(done.duration_ms for done in r.proven),
                )
                for r in kept
                if r.proven
            ],
        )
        _run_all(
            [
                *etags,
                *files,
                *history,
                _finishing([r.target.id for r in kept], now=now, touch=True),
            ]
        )
    return Recorded({r.item_id for r in kept}, changed)


def _hashes_of(entry: Entry) -> tuple[object, ...]:
    return (entry.size, entry.md5, entry.crc32c, entry.awss3etag)


def _current_hashes(path_ids: Sequence[int]) -> dict[int, tuple[object, ...]]:
    """The catalog's size and hashes of files, as they are now; by id."""
    found: dict[int, tuple[object, ...]] = {}
    for start in range(0, len(path_ids), 500):
        chunk = path_ids[start : start + 500]
        for path_id, *hashes in _run(
            "SELECT id, size, md5, crc32c, awss3etag FROM referenced_path"
            f" WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ):
            found[path_id] = tuple(hashes)
    return found


#: A location's every file (not folder) of its item has a good ``location_file`` row:
#: no file lacks one. Looked for from the last path: a copy's jobs go in path
#: order, so while it is under way its last file is missing and the answer
#: comes at the first row. From the first path (as a NOT EXISTS was), a job
#: read past every file the jobs before it recorded: one item of 50,000
#: files in jobs of 128 took 12.5-14.4 s against 4.5-5.0 s (SQLite), and
#: more than 896 s against 7.6 s on PostgreSQL (``bench_once.py --only wide``).
_COMPLETE = (
    "(SELECT r.id FROM referenced_path AS r"
    " WHERE r.file_storage_id = storage_location.file_storage_id"
    " AND r.path NOT LIKE '%/' AND NOT EXISTS (SELECT 1 FROM location_file AS lf"
    " WHERE lf.storage_location_id = storage_location.id AND lf.referenced_path_id = r.id"
    " AND lf.problem IS NULL)"
    " ORDER BY r.path DESC LIMIT 1) IS NULL"
)
#: A location's ``last_verified`` once complete: its least recently verified
#: file's time (null if one never was; ``?``, now, if it has no files).
_LAST_VERIFIED = (
    "(SELECT CASE WHEN COUNT(*) = 0 THEN ? WHEN COUNT(*) = COUNT(lf.verified)"
    " THEN MIN(lf.verified) END FROM location_file AS lf"
    " WHERE lf.storage_location_id = storage_location.id AND lf.problem IS NULL)"
)


def finish_copies(location_ids: Sequence[int], *, now: datetime, touch: bool) -> set[int]:
    """Make each location ``OK`` whose every file is recorded; the ids of those made so.

    One statement. ``touch``: stamp every location's ``last_update`` (progress),
    complete or not; else only those made ``OK``.
    """
    if not location_ids:
        return set()
    rows = _run_all([_finishing(location_ids, now=now, touch=touch)]).fetchall()
    return {location_id for location_id, status in rows if status == STATUS_DONE}


def _finishing(location_ids: Sequence[int], *, now: datetime, touch: bool) -> Statement:
    """``finish_copies``' statement; it returns each location's id and status.

    Only a copy under way (``PR``, ``UP``) becomes ``OK`` here; its files
    were validated as they were copied, so it was verified then.
    """
    where = f"id IN ({', '.join('?' * len(location_ids))})"
    if not touch:
        where += f" AND {_COMPLETE}"
    finishing = f"status IN (?, ?) AND {_COMPLETE}"
    return (
        f"UPDATE storage_location SET last_update = ?,"
        f" last_verified = CASE WHEN {finishing} THEN {_LAST_VERIFIED} ELSE last_verified END,"
        f" status = CASE WHEN {finishing} THEN ? ELSE status END"
        f" WHERE {where} RETURNING id, status",
        [
            now,
            STATUS_PREPARING,
            STATUS_UPLOADING,
            now,
            STATUS_PREPARING,
            STATUS_UPLOADING,
            STATUS_DONE,
            *location_ids,
        ],
    )


def _locking(database: pw.Database, item_ids: Sequence[int], *, wait: bool) -> list[Statement]:
    """The statements that take the items' catalog locks, as ``catalog.queries.locked_item``.

    On PostgreSQL the items' rows, in id order; unless ``wait``, an item
    another session holds fails the statement at once (``NOWAIT``). On
    SQLite none: the transaction (``writing``) holds the database's write lock.
    """
    if is_sqlite(database):
        return []
    ids = sorted(set(item_ids))
    marks = ", ".join("?" * len(ids))
    locking = f"SELECT id FROM file_storage WHERE id IN ({marks}) ORDER BY id FOR UPDATE"
    return [(locking if wait else f"{locking} NOWAIT", ids)]


_Part = TypeVar("_Part")
_Done = TypeVar("_Done")
#: PostgreSQL's error code of a lock that ``NOWAIT`` did not get.
_LOCK_NOT_AVAILABLE = "55P03"


def _in_one_or_each(
    parts: Sequence[_Part],
    item_of: Callable[[_Part], int],
    run: Callable[[Sequence[_Part], bool], _Done],
) -> list[_Done]:
    """``run(parts, wait)``: in one transaction, or, where that would wait, one an item.

    A transaction that waits for an item's lock while it holds another's
    can close a circle with a session that took them in another order: an
    import, which locks each item it updates in its document's order and
    holds them until it commits. PostgreSQL then ends one of the two
    ("deadlock detected"), the import as likely as the job, and the import
    stores nothing. So the items' locks are taken without waiting
    (``wait`` false); if another session holds one, that transaction is
    undone and ``run`` goes again for each item's parts alone, each
    waiting for its item while it holds no other. One item, or SQLite (one
    writer at a time): ``run`` once, waiting.
    """
    if is_sqlite(_database()) or len({item_of(part) for part in parts}) < 2:
        return [run(parts, True)]
    try:
        return [run(parts, False)]
    except pw.OperationalError as exc:
        if getattr(getattr(exc, "orig", None), "pgcode", None) != _LOCK_NOT_AVAILABLE:
            raise
    each: dict[int, list[_Part]] = {}
    for part in parts:
        each.setdefault(item_of(part), []).append(part)
    return [run(item_parts, True) for item_parts in each.values()]
