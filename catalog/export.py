"""Exporting the catalog as import items: what ``import`` reads, streamed in key order.

Every item with a key becomes one item of the import document (SPEC §6):
its fields, its locations with their status, last access and verification,
open locks (not a worker's: it ends with its job) and damaged files, and its
files with their sizes and hashes. A removed item keeps its status and says
when (``"removed"``). Items are read a batch at a time (keyset pages by
key), so memory stays flat for any catalog; ``export | import`` into an
empty catalog gives the same export again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import IO, Any

import peewee as pw

from catalog import sql
from catalog.models import STATUS_DAMAGED

#: Items read per round trip.
DEFAULT_BATCH = 2_000


@contextmanager
def snapshot(database: pw.Database) -> Iterator[None]:
    """A read-only transaction that sees the catalog as it was when it began.

    SQLite's read transactions do; PostgreSQL's need ``REPEATABLE READ``
    (each statement would otherwise see what committed meanwhile, and an
    export could hold an item twice or miss one that moved).
    """
    with database.atomic():
        if not sql.is_sqlite(database):
            database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def export_items(*, batch: int = DEFAULT_BATCH) -> Iterator[dict[str, Any]]:
    """Every item of the catalog with a key, as an import item, in key order."""
    after: str | None = None
    while True:
        rows = sql.run(
            "SELECT id, key, data_slug, process_type, status, created, removed FROM file_storage"
            " WHERE key IS NOT NULL"
            + (" AND key > ?" if after is not None else "")
            + " ORDER BY key LIMIT ?",
            [after, batch] if after is not None else [batch],
        ).fetchall()
        if not rows:
            return
        yield from _items(rows)
        after = rows[-1][1]


def exported_count() -> int:
    """How many items ``export_items`` yields (in the same snapshot: the same number)."""
    return int(sql.run("SELECT COUNT(*) FROM file_storage WHERE key IS NOT NULL", []).fetchone()[0])


def _items(rows: list[tuple[Any, ...]]) -> Iterator[dict[str, Any]]:
    ids = [row[0] for row in rows]
    marks = ", ".join("?" * len(ids))
    locations: dict[int, list[dict[str, Any]]] = {}
    by_id: dict[int, dict[str, Any]] = {}
    # The open locks that never end by themselves: a worker's (``expires``)
    # is its job's, which ends here, in this catalog; imported as a lock for
    # good it would keep the copy from ever being deleted.
    for location_id, item_id, connector, url, status, last_update, last_verified, locks in sql.run(
        "SELECT l.id, l.file_storage_id, l.connector_name, l.url, l.status, l.last_update,"
        " l.last_verified, (SELECT COUNT(*) FROM access_log a WHERE a.storage_location_id = l.id"
        " AND a.finished IS NULL AND a.expires IS NULL)"
        f" FROM storage_location l WHERE l.file_storage_id IN ({marks})"
        " ORDER BY l.connector_name",
        ids,
    ).fetchall():
        location: dict[str, Any] = {"connector": connector, "url": url, "status": status}
        location["last_update"] = _time(last_update)
        if last_verified is not None:
            location["last_verified"] = _time(last_verified)
        if locks:
            location["open_access_logs"] = locks
        locations.setdefault(item_id, []).append(location)
        by_id[location_id] = location
    damaged = [lid for lid, loc in by_id.items() if loc["status"] == STATUS_DAMAGED]
    if damaged:
        marks_dm = ", ".join("?" * len(damaged))
        for location_id, path, problem in sql.run(
            "SELECT f.storage_location_id, p.path, f.problem FROM location_file f"
            " JOIN referenced_path p ON p.id = f.referenced_path_id"
            f" WHERE f.storage_location_id IN ({marks_dm}) AND f.problem IS NOT NULL"
            " ORDER BY p.path",
            damaged,
        ).fetchall():
            by_id[location_id].setdefault("damaged", {})[path] = problem
    files: dict[int, list[dict[str, Any]]] = {}
    for item_id, path, size, md5, crc32c, etag, chunk_size in sql.run(
        "SELECT file_storage_id, path, size, md5, crc32c, awss3etag, chunk_size"
        f" FROM referenced_path WHERE file_storage_id IN ({marks}) ORDER BY path",
        ids,
    ).fetchall():
        file: dict[str, Any] = {"path": path}
        for name, value in (("size", size), ("md5", md5), ("crc32c", crc32c), ("awss3etag", etag)):
            if value is not None:
                file[name] = value
        file["chunk_size"] = chunk_size
        files.setdefault(item_id, []).append(file)
    for item_id, key, data_slug, process_type, status, created, removed in rows:
        item = {
            "key": key,
            "data_slug": data_slug,
            "process_type": process_type,
            "status": status,
            "created": _time(created),
            "locations": locations.get(item_id, []),
            "files": files.get(item_id, []),
        }
        if removed is not None:
            # Its producer status and when: imported, its grace goes on.
            item["removed"] = _time(removed)
        yield item


def _time(value: Any) -> str:
    """A catalog time (naive UTC; text on SQLite) as ISO 8601 with its zone."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.isoformat() + "Z"


def write_items(items: Iterable[dict[str, Any]], out: IO[str], *, format: str = "json") -> int:
    """Write ``items`` as a JSON document (``json``) or JSON Lines (``jsonl``); how many."""
    count = 0
    if format == "jsonl":
        for item in items:
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
            count += 1
        return count
    out.write('{"items": [')
    for item in items:
        out.write(("," if count else "") + "\n" + json.dumps(item, ensure_ascii=False))
        count += 1
    out.write("\n]}\n")
    return count
