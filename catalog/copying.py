"""The statements of a copy job, written out in SQL.

A job of small files spends most of its time in the catalog, and most of
that not in the database but in building statements: peewee builds each
anew, 0.3 ms for a simple select and 1.5 ms for a ten-row insert, where
sending a written-out statement costs a few microseconds. The copy job
runs a dozen statements per copy of an item, so these are written here
once, for SQLite and PostgreSQL alike (``?`` placeholders, turned into
``%s`` for PostgreSQL); everything else in the catalog stays peewee.

A job reads what it needs (``copy_facts``), locks the source and marks the
target ``UP`` (``start_copy``), copies, then records the files proven and
closes the lock (``record_copies``); each write runs in a transaction that
holds the item's catalog lock, as ``catalog.queries.locked_item`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee as pw

from catalog.models import (
    STATUS_DELETING,
    STATUS_DONE,
    STATUS_PREPARING,
    STATUS_UPLOADING,
    FileStorage,
)
from catalog.queries import _is_sqlite, writing


@dataclass(frozen=True)
class Place:
    """One location of the item, as a copy job needs it."""

    id: int
    connector_name: str
    url: str
    status: str


@dataclass(frozen=True)
class Entry:
    """One file of the item, and whether the target has it recorded already."""

    id: int
    path: str
    size: int | None
    md5: str | None
    crc32c: str | None
    awss3etag: str | None
    chunk_size: int
    recorded: bool


@dataclass(frozen=True)
class CopyFacts:
    """What a copy job reads before it starts."""

    key: str | None
    places: list[Place]
    #: The files asked for that the item has, by path.
    entries: dict[str, Entry]


@dataclass(frozen=True)
class Proven:
    """One file copied and validated, to record."""

    entry: Entry
    validated_by: str
    size: int
    duration_ms: int


def copy_facts(item_id: int, target: str, paths: Sequence[str]) -> CopyFacts | None:
    """The item's key and locations, and the files ``paths`` it has; None: no such item.

    Each file says whether the item's location on ``target`` has it recorded.
    """
    rows = _run(
        "SELECT f.key, l.id, l.connector_name, l.url, l.status FROM file_storage AS f"
        " LEFT JOIN storage_location AS l ON l.file_storage_id = f.id WHERE f.id = ?",
        (item_id,),
    ).fetchall()
    if not rows:
        return None
    places = [Place(*row[1:]) for row in rows if row[1] is not None]
    entries: dict[str, Entry] = {}
    if paths:
        marks = ", ".join("?" * len(paths))
        for row in _run(
            "SELECT r.id, r.path, r.size, r.md5, r.crc32c, r.awss3etag, r.chunk_size, lf.id"
            " FROM referenced_path AS r LEFT JOIN location_file AS lf"
            " ON lf.referenced_path_id = r.id AND lf.storage_location_id ="
            " (SELECT id FROM storage_location WHERE file_storage_id = ? AND connector_name = ?)"
            f" WHERE r.file_storage_id = ? AND r.path IN ({marks})",
            (item_id, target, item_id, *paths),
        ):
            entries[row[1]] = Entry(*row[:7], recorded=row[7] is not None)
    return CopyFacts(rows[0][0], places, entries)


def start_copy(
    item_id: int,
    source_id: int,
    target_id: int,
    *,
    reason: str,
    expires: datetime | None,
    now: datetime,
) -> int | None:
    """Lock location ``source_id`` with an access log and make ``target_id`` ``UP``, at once.

    Under the item's catalog lock. Returns the access log's id, or None
    (and changes nothing) when the source is no longer ``OK``.
    """
    with locked(item_id):
        row = _run(
            "INSERT INTO access_log (storage_location_id, started, finished, reason, expires)"
            " SELECT ?, ?, NULL, ?, ? WHERE EXISTS"
            " (SELECT 1 FROM storage_location WHERE id = ? AND status = ?) RETURNING id",
            (source_id, now, reason, expires, source_id, STATUS_DONE),
        ).fetchone()
        if row is None:
            return None
        _run(
            "UPDATE storage_location SET status = ?, last_update = ? WHERE id = ? AND status = ?",
            (STATUS_UPLOADING, now, target_id, STATUS_PREPARING),
        )
    return int(row[0])


def record_copies(
    item_id: int,
    key: str | None,
    target: Place,
    source_name: str,
    proven: Sequence[Proven],
    *,
    actor: str,
    log_id: int,
    now: datetime,
) -> bool:
    """Record ``proven`` files on ``target``, close the access log, in one transaction.

    Each file gets its ``location_file`` row and a line in the history; the
    location is stamped (progress) and becomes ``OK`` if every file of the
    item is recorded now. False, recording nothing, when the location is
    gone or being deleted; the log is closed either way.
    """
    with locked(item_id) as exists:
        _run("UPDATE access_log SET finished = ? WHERE id = ?", (now, log_id))
        status = _run("SELECT status FROM storage_location WHERE id = ?", (target.id,)).fetchone()
        if not exists or status is None or status[0] == STATUS_DELETING:
            return False
        _insert(
            "location_file (storage_location_id, referenced_path_id, copied, validated_by)",
            [(target.id, done.entry.id, now, done.validated_by) for done in proven],
            ignore_conflicts=True,
        )
        _insert(
            "action (started, finished, actor, action, item_key, file_storage_id, source,"
            " target, path, result, bytes, duration_ms)",
            [
                (
                    now,
                    now,
                    actor,
                    "copy",
                    key,
                    item_id,
                    source_name,
                    target.connector_name,
                    done.entry.path,
                    "ok",
                    done.size,
                    done.duration_ms,
                )
                for done in proven
            ],
        )
        _run(
            "UPDATE storage_location SET last_update = ?, status = CASE WHEN NOT EXISTS"
            " (SELECT 1 FROM referenced_path AS r WHERE r.file_storage_id = ?"
            " AND r.path NOT LIKE '%/' AND NOT EXISTS (SELECT 1 FROM location_file AS lf"
            " WHERE lf.storage_location_id = ? AND lf.referenced_path_id = r.id))"
            " THEN ? ELSE status END WHERE id = ?",
            (now, item_id, target.id, STATUS_DONE, target.id),
        )
    return True


@contextmanager
def locked(item_id: int) -> Iterator[bool]:
    """``catalog.queries.locked_item``, written out: yields whether the item exists."""
    database = _database()
    with writing(database):
        lock = "" if _is_sqlite(database) else " FOR UPDATE"
        yield (
            _run(f"SELECT 1 FROM file_storage WHERE id = ?{lock}", (item_id,)).fetchone()
            is not None
        )


def _insert(into: str, rows: Sequence[tuple[Any, ...]], *, ignore_conflicts: bool = False) -> None:
    """``INSERT INTO {into} VALUES`` the ``rows``, in one statement per 500."""
    for start in range(0, len(rows), DEFAULT_INSERT_ROWS):
        chunk = rows[start : start + DEFAULT_INSERT_ROWS]
        row = "(" + ", ".join("?" * len(chunk[0])) + ")"
        tail = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
        _run(
            f"INSERT INTO {into} VALUES {', '.join([row] * len(chunk))}{tail}",
            [value for values in chunk for value in values],
        )


#: Rows per ``INSERT`` (SQLite takes at most 32,766 parameters a statement).
DEFAULT_INSERT_ROWS = 500


def _run(sql: str, params: Sequence[Any]) -> Any:
    """Execute ``sql`` (``?`` placeholders) on the catalog; the cursor."""
    database = _database()
    if _is_sqlite(database):
        # What peewee stores for a datetime in SQLite (sqlite3's own adapter
        # is deprecated): its text, which peewee reads back.
        params = [str(value) if isinstance(value, datetime) else value for value in params]
    else:
        sql = _for_postgres(sql)
    return database.execute_sql(sql, params)


_POSTGRES_SQL: dict[str, str] = {}


def _for_postgres(sql: str) -> str:
    """``sql`` with psycopg2's placeholders (and its ``%`` signs doubled); cached."""
    found = _POSTGRES_SQL.get(sql)
    if found is None:
        found = _POSTGRES_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return found


def _database() -> pw.Database:
    return FileStorage._meta.database
