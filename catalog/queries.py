"""Named, reusable catalog queries."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import peewee as pw

from catalog import sql
from catalog.errors import ItemNotFoundError, LocationConflictError
from catalog.integrity import keys_of, lost_files
from catalog.models import (
    IMPORT_LOCK_REASON,
    STATUS_DAMAGED,
    STATUS_DONE,
    STATUS_PREPARING,
    AccessLog,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
    utcnow,
)
from catalog.sql import is_sqlite

#: A copy's last access is written at most this often: reads in a burst share one write.
DEFAULT_ACCESS_RESOLUTION = timedelta(minutes=1)


def record_access(location_ids: Sequence[int], *, now: datetime) -> int:
    """Record that the copies ``location_ids`` were used at ``now``: their ``last_update``.

    Delete delays count from it (SPEC §5, "last access"). Only a copy that
    counts (``OK``) is touched: on a copy under way ``last_update`` marks its
    progress. A copy used within ``DEFAULT_ACCESS_RESOLUTION`` is left as it
    is, so at most one write per copy per minute; ``last_update`` never moves
    back. Returns how many were written.
    """
    if not location_ids:
        return 0
    return int(
        StorageLocation.update(last_update=now)
        .where(
            StorageLocation.id.in_(list(location_ids))
            & (StorageLocation.status == STATUS_DONE)
            & (StorageLocation.last_update < now - DEFAULT_ACCESS_RESOLUTION)
        )
        .execute()
    )


def item_by_key(key: str) -> FileStorage:
    """The item with ``key``; ItemNotFoundError if there is none."""
    item = FileStorage.get_or_none(FileStorage.key == key)
    if item is None:
        raise ItemNotFoundError(f"no item with key {key!r} in the catalog")
    return item


def open_lock_counts(item: FileStorage) -> dict[int, int]:
    """Open access logs per location id of ``item``."""
    rows = (
        AccessLog.select(AccessLog.storage_location, pw.fn.COUNT(AccessLog.id))
        .join(StorageLocation)
        .where((StorageLocation.file_storage == item) & AccessLog.finished.is_null())
        .group_by(AccessLog.storage_location)
        .tuples()
    )
    return {location_id: count for location_id, count in rows}


#: Lost items ``status`` names, at most.
DEFAULT_LOST_SHOWN = 100


def status_summary() -> dict[str, Any]:
    """Counts of items by status, and of locations by connector and status; lost items.

    ``lost`` names up to ``DEFAULT_LOST_SHOWN`` items with a file that is
    good nowhere (``catalog.integrity``), ``lost_items`` counts them all.
    """
    items: dict[str, int] = {
        status: count
        for status, count in FileStorage.select(FileStorage.status, pw.fn.COUNT(FileStorage.id))
        .group_by(FileStorage.status)
        .tuples()
    }
    locations = location_counts()
    locks = AccessLog.select().where(AccessLog.finished.is_null()).count()
    lost = lost_files()
    keys = keys_of(list(lost)[:DEFAULT_LOST_SHOWN])
    removed = FileStorage.select().where(FileStorage.removed.is_null(False)).count()
    return {
        "items": {
            "total": sum(items.values()),
            "by_status": dict(sorted(items.items())),
            "removed": removed,
        },
        "locations": {name: dict(sorted(v.items())) for name, v in sorted(locations.items())},
        "damaged_locations": sum(v.get(STATUS_DAMAGED, 0) for v in locations.values()),
        "lost_items": len(lost),
        "lost": [
            {"key": keys.get(item_id), "files": paths}
            for item_id, paths in list(lost.items())[:DEFAULT_LOST_SHOWN]
        ],
        "open_access_logs": locks,
    }


def location_counts() -> dict[str, dict[str, int]]:
    """Locations per connector and status (``OK``, ``DM``, ...), in one grouped query."""
    counts: dict[str, dict[str, int]] = {}
    for connector, status, count in (
        StorageLocation.select(
            StorageLocation.connector_name, StorageLocation.status, pw.fn.COUNT(StorageLocation.id)
        )
        .group_by(StorageLocation.connector_name, StorageLocation.status)
        .tuples()
    ):
        counts.setdefault(connector, {})[status] = count
    return counts


@contextmanager
def locked_item(item_id: int) -> Iterator[FileStorage | None]:
    """A transaction in which no other session changes the item's locations.

    PostgreSQL locks the item's row (``FOR UPDATE``): sessions deciding about
    the same item queue, others go on. SQLite has one writer at a time, so
    the transaction takes the write lock when it begins (``IMMEDIATE``), not
    at its first write, when a decision read before it could already be
    stale. Yields the item, or None when it no longer exists. Everything that
    decides on the item's copies (a delete, a copy becoming OK) runs in here.
    """
    database = FileStorage._meta.database
    query = FileStorage.select().where(FileStorage.id == item_id)
    with writing(database):
        yield (query.first() if is_sqlite(database) else query.for_update().first())


def writing(database: pw.Database) -> Any:
    """A transaction that will write: on SQLite it takes the write lock when it begins.

    A SQLite transaction that reads first and writes later cannot wait for
    another writer that committed meanwhile (its snapshot is stale): it fails
    at once with "database is locked". Taking the lock first makes it wait
    (``busy_timeout``) instead.
    """
    if is_sqlite(database):
        return database.atomic(lock_type="IMMEDIATE")
    return database.atomic()


def ok_locations(item_id: int) -> list[StorageLocation]:
    """The item's ``OK`` locations (the copies that count)."""
    return list(
        StorageLocation.select().where(
            (StorageLocation.file_storage == item_id) & (StorageLocation.status == STATUS_DONE)
        )
    )


def location_on(item_id: int, connector_name: str) -> StorageLocation | None:
    """The item's location on ``connector_name`` (an item has at most one there), if any."""
    return StorageLocation.get_or_none(
        (StorageLocation.file_storage == item_id)
        & (StorageLocation.connector_name == connector_name)
    )


def open_lock_count(location_id: int) -> int:
    """Open access logs (locks) of one location."""
    return (
        AccessLog.select()
        .where((AccessLog.storage_location == location_id) & AccessLog.finished.is_null())
        .count()
    )


def reserve_location(item_id: int, connector_name: str, *, url: str) -> StorageLocation | None:
    """A new ``PR`` location of the item on ``connector_name``, for a copy about to be queued.

    None when the item already has a location there (of any status): the
    copy is queued or done already, so planning it again finds nothing due.
    Raises ``LocationConflictError`` when another item holds ``url`` there.
    """
    outcome = reserve_locations([(item_id, connector_name, url)])[0]
    if outcome == URL_TAKEN:
        raise LocationConflictError(
            f"{connector_name}: url {url!r} is another item's location already"
        )
    if outcome == URL_OVERLAPS:
        (theirs, key) = overlaps_at(connector_name, [url]).get(url, ("?", None))
        how = "inside" if url.startswith(f"{theirs}/") else "around"
        raise LocationConflictError(
            f"{connector_name}: url {url!r} lies {how} item {key!r}'s location {theirs!r}"
        )
    if outcome == LOCATION_EXISTS:
        return None
    return StorageLocation.get(
        (StorageLocation.file_storage == item_id)
        & (StorageLocation.connector_name == connector_name)
    )


#: Outcomes of ``reserve_locations``, per wanted location.
RESERVED = "reserved"
LOCATION_EXISTS = "location exists"
URL_TAKEN = "url taken"
URL_OVERLAPS = "url overlaps"
#: Locations inserted per statement (five parameters each).
DEFAULT_RESERVE_BATCH = 500


def reserve_locations(wanted: Sequence[tuple[int, str, str]]) -> list[str]:
    """``reserve_location`` for many (item id, connector, url) at once, in a few statements.

    Returns, in order, ``reserved`` (a new ``PR`` location), ``location exists``
    (the item has a location on the connector), ``url taken`` (another
    item's location holds the url there) or ``url overlaps`` (another item's
    location there lies inside or around the url, ``locations_at``: a copy
    would write over its files, and a delete of one would remove the
    other's). Rows that another session inserts meanwhile count as not
    ours: two scans at once never both reserve one location. Run it inside
    a transaction that the caller commits.
    """
    ours: set[tuple[int, str]] = set()
    now = utcnow()
    for start in range(0, len(wanted), DEFAULT_RESERVE_BATCH):
        chunk = wanted[start : start + DEFAULT_RESERVE_BATCH]
        inserted = sql.insert(
            "storage_location (file_storage_id, connector_name, url, status, last_update)",
            [(item_id, name, url, STATUS_PREPARING, now) for item_id, name, url in chunk],
            on_conflict="DO NOTHING",
            returning="file_storage_id, connector_name",
        )
        ours.update((item_id, name) for item_id, name in inserted)
    # Looked for once reserved: the locations reserved here are in the table,
    # so two of them that overlap each other are both found.
    overlapping = _overlapping([entry for entry in wanted if entry[:2] in ours])
    if overlapping:
        for start in range(0, len(overlapping), DEFAULT_RESERVE_BATCH):
            chunk = overlapping[start : start + DEFAULT_RESERVE_BATCH]
            for name in {name for _, name in chunk}:
                StorageLocation.delete().where(
                    StorageLocation.file_storage.in_([i for i, n in chunk if n == name])
                    & (StorageLocation.connector_name == name)
                    & (StorageLocation.status == STATUS_PREPARING)
                ).execute()
        ours.difference_update(overlapping)
    refused = [(item_id, name) for item_id, name, _ in wanted if (item_id, name) not in ours]
    present: set[tuple[int, str]] = set()
    for start in range(0, len(refused), DEFAULT_RESERVE_BATCH):
        chunk = refused[start : start + DEFAULT_RESERVE_BATCH]
        present.update(
            StorageLocation.select(StorageLocation.file_storage, StorageLocation.connector_name)
            .where(
                StorageLocation.file_storage.in_({item_id for item_id, _ in chunk})
                & StorageLocation.connector_name.in_({name for _, name in chunk})
            )
            .tuples()
        )
    overlaps = set(overlapping)
    return [
        RESERVED
        if (item_id, name) in ours
        else URL_OVERLAPS
        if (item_id, name) in overlaps
        else LOCATION_EXISTS
        if (item_id, name) in present
        else URL_TAKEN
        for item_id, name, _ in wanted
    ]


def _overlapping(reserved: Sequence[tuple[int, str, str]]) -> list[tuple[int, str]]:
    """The (item id, connector) of the ``reserved`` (item id, connector, url) whose url
    has another location of the connector inside or around it."""
    by_connector: dict[str, list[tuple[int, str]]] = {}
    for item_id, name, url in reserved:
        by_connector.setdefault(name, []).append((item_id, url))
    found: list[tuple[int, str]] = []
    for name, entries in by_connector.items():
        for start in range(0, len(entries), DEFAULT_RESERVE_BATCH):
            chunk = entries[start : start + DEFAULT_RESERVE_BATCH]
            hit = overlaps_at(name, [url for _, url in chunk])
            found += [(item_id, name) for item_id, url in chunk if url in hit]
    return found


def overlaps_at(connector: str, urls: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """Of ``urls``, those with another location of ``connector`` inside or around them:
    url -> (that location's url, its item's key) (``locations_at``)."""
    found: dict[str, tuple[str, str | None]] = {}
    for url, theirs, key in locations_at(connector, urls):
        if theirs != url:
            found.setdefault(url, (theirs, key))
    return found


#: The reason of the hold a presigned URL puts on its copy (``hold_for_url``).
URL_HOLD_REASON = "presigned URL"


def hold_for_url(location_id: int, *, now: datetime, until: datetime) -> None:
    """Keep the copy ``location_id`` from every delete until ``until``, when a presigned
    URL of it ends: the URL keeps working for its life, whatever the delete delay.

    One open access log of ``URL_HOLD_REASON`` a copy, its ``expires`` moved
    on by a URL that outlives it by more than ``DEFAULT_ACCESS_RESOLUTION``
    (a burst of URLs writes once); the scan closes it once past
    (``close_expired_locks``). Call it under the item's lock.
    """
    held = (
        AccessLog.select(AccessLog.id, AccessLog.expires)
        .where(
            (AccessLog.storage_location == location_id)
            & (AccessLog.reason == URL_HOLD_REASON)
            & AccessLog.finished.is_null()
            & AccessLog.expires.is_null(False)
        )
        .order_by(AccessLog.expires.desc())
        .first()
    )
    if held is None:
        AccessLog.create(
            storage_location=location_id, started=now, reason=URL_HOLD_REASON, expires=until
        )
    elif held.expires < until - DEFAULT_ACCESS_RESOLUTION:
        AccessLog.update(expires=until).where(AccessLog.id == held.id).execute()


def close_expired_locks(now: datetime) -> list[AccessLog]:
    """Close the open access logs whose ``expires`` is before ``now``; the ones closed.

    Those are locks of workers that ended without closing them (killed mid-job),
    and the holds of presigned URLs that have ended (``hold_for_url``).
    """
    expired = list(
        AccessLog.select(AccessLog, StorageLocation)
        .join(StorageLocation)
        .where(
            AccessLog.finished.is_null()
            & AccessLog.expires.is_null(False)
            & (AccessLog.expires < now)
        )
    )
    # In batches: a pool that died at once leaves tens of thousands, more than
    # one statement may name (SQLite: 250,000 parameters).
    for start in range(0, len(expired), DEFAULT_RESERVE_BATCH):
        ids = [log.id for log in expired[start : start + DEFAULT_RESERVE_BATCH]]
        AccessLog.update(finished=now).where(
            AccessLog.id.in_(ids) & AccessLog.finished.is_null()
        ).execute()
    return expired


def item_files(item_ids: Sequence[int]) -> dict[int, list[tuple[str, int | None]]]:
    """The files (not folders) of each item as (path, size), in path order, by item id.

    Written out (``catalog.sql``): a scan asks this of every item it copies,
    and peewee took as long to build the statement as the server to run it.
    """
    files: dict[int, list[tuple[str, int | None]]] = {item_id: [] for item_id in item_ids}
    for start in range(0, len(item_ids), DEFAULT_RESERVE_BATCH):
        chunk = list(item_ids[start : start + DEFAULT_RESERVE_BATCH])
        for item_id, path, size in sql.run(
            "SELECT file_storage_id, path, size FROM referenced_path"
            f" WHERE file_storage_id IN ({', '.join('?' * len(chunk))}) AND path NOT LIKE ?"
            " ORDER BY file_storage_id, path",
            [*chunk, "%/"],
        ):
            files[item_id].append((path, size))
    return files


def mark_files_to_delete(location_id: int, item_id: int, *, now: datetime) -> None:
    """Give each file of the item a row on the location: on a ``DE`` location, still to remove.

    Files already recorded keep their rows; the rest (an imported copy has
    none) get one, so the location goes when the last row does.
    """
    # The files without a row are read first, then written out (``catalog.sql``:
    # built by peewee, 50,000 rows took a third of a delete's first job). Not
    # one INSERT ... SELECT: PostgreSQL, believing the table empty, checked
    # each file for a row by reading the rows inserted so far (15.8 s for
    # 50,000 files).
    recorded = LocationFile.select(LocationFile.id).where(
        (LocationFile.storage_location == location_id)
        & (LocationFile.referenced_path == ReferencedPath.id)
    )
    missing = (
        ReferencedPath.select(ReferencedPath.id)
        .where(
            (ReferencedPath.file_storage == item_id)
            & ~ReferencedPath.path.endswith("/")
            & ~pw.fn.EXISTS(recorded)
        )
        .tuples()
    )
    copied = LocationFile.copied.db_value(now)
    sql.insert(
        "location_file (storage_location_id, referenced_path_id, copied, validated_by)",
        [(location_id, path_id, copied, "") for (path_id,) in missing],
        on_conflict="DO NOTHING",
    )


def forget_files(location_id: int, path_ids: Sequence[int]) -> bool:
    """Drop the rows of removed files; the location too once none is left. Whether it went."""
    for start in range(0, len(path_ids), DEFAULT_RESERVE_BATCH):
        chunk = list(path_ids[start : start + DEFAULT_RESERVE_BATCH])
        LocationFile.delete().where(
            (LocationFile.storage_location == location_id) & LocationFile.referenced_path.in_(chunk)
        ).execute()
    left = LocationFile.select(LocationFile.id).where(LocationFile.storage_location == location_id)
    return bool(
        StorageLocation.delete()
        .where((StorageLocation.id == location_id) & ~pw.fn.EXISTS(left))
        .execute()
    )


class ExpectedObject(NamedTuple):
    """A file the catalog says a location holds, as an object key on its connector."""

    key: str
    size: int | None
    md5: str | None
    crc32c: str | None
    location_id: int
    path_id: int
    status: str
    item_id: int
    item_key: str | None
    path: str


def expected_objects(connector_name: str) -> Iterator[ExpectedObject]:
    """Every file of every location on ``connector_name``, as object keys, in key order.

    The key is the location's url and the file's path joined by ``/``
    (``workers.verify.object_path``); the order is the one strings compare
    in, a backend's listing's (``connectors.base.Connector.list``), so the
    two merge in one pass. Streamed in batches inside the caller's
    transaction: memory stays flat for any number of files.
    """
    catalog = sql.database()
    key = "rtrim(l.url, '/') || '/' || r.path"
    text = (
        f"SELECT {key} AS object_key, r.size, r.md5, r.crc32c, l.id, r.id, l.status,"
        " f.id, f.key, r.path FROM storage_location AS l"
        " JOIN referenced_path AS r ON r.file_storage_id = l.file_storage_id"
        " JOIN file_storage AS f ON f.id = l.file_storage_id"
        f" WHERE l.connector_name = {catalog.param} AND r.path NOT LIKE {catalog.param}"
        # In the order strings compare (code points: UTF-8 bytes), on either engine.
        f" ORDER BY {key}" + ("" if is_sqlite(catalog) else ' COLLATE "C"')
    )
    params = [connector_name, "%/"]  # a folder (its path ends in /) is no object
    for row in sql.stream(catalog, text, params, name="resolwe_storage_expected"):
        yield ExpectedObject(*row)


def ancestors_of(url: str) -> list[str]:
    """The urls that ``url`` lies inside, whole segments: ``a`` and ``a/b`` of ``a/b/c``."""
    parts = url.split("/")
    return ["/".join(parts[:depth]) for depth in range(1, len(parts))]


def locations_at(connector: str, urls: Sequence[str]) -> list[tuple[str, str, str]]:
    """The locations on ``connector`` at each of ``urls``, inside it or around it:
    ``(url, theirs, item key)``, ``url`` one of ``urls``.

    ``theirs`` is ``url``, or lies inside it (starts with ``url/``), or
    holds it (``url`` starts with ``theirs/``): two items there would share
    files, and a delete of one's copy would remove the other's. Each url
    costs one probe of the (connector_name, url) index, the range ``url`` to
    ``url0`` in byte order (``0`` follows ``/``; on PostgreSQL the column
    and its index are ``COLLATE "C"``, migration 014), and each segment
    before its last one more, an equality: an import of a million items
    whose urls have no ``/`` reads no more of the index than the check for a
    url taken did. Of the urls under one, at least one is given (on
    PostgreSQL one, on SQLite all).
    """
    found: list[tuple[str, str, str]] = []
    if not urls:
        return found
    if is_sqlite(sql.database()):
        rows = sql.run(
            f"WITH u (url) AS (VALUES {', '.join(['(?)'] * len(urls))})"
            " SELECT u.url, l.url, f.key FROM u JOIN storage_location l"
            " ON l.connector_name = ? AND l.url >= u.url AND l.url < u.url || '0'"
            " JOIN file_storage f ON f.id = l.file_storage_id",
            [*urls, connector],
        ).fetchall()
    else:
        # Each url looked up in the index on its own, a ``LATERAL`` subquery
        # with a ``LIMIT``, which the planner does not flatten: with
        # ``l.url = ANY(...)`` it read every location of the connector
        # whenever its statistics, a batch or two behind a growing import,
        # put the table under about 100,000 rows (500 index lookups cost more
        # in its model than a scan it thinks is read from disk at random).
        # Measured on 200,000 items into an empty catalog: 3.2 s of the
        # server's 27 s went to these lookups, 0.2 s so.
        rows = sql.run(
            "SELECT u.url, l.url, f.key FROM unnest(?::text[]) AS u(url)"
            " CROSS JOIN LATERAL (SELECT l.url, l.file_storage_id FROM storage_location l"
            ' WHERE l.connector_name = ? AND l.url COLLATE "C" >= u.url'
            " AND l.url COLLATE \"C\" < u.url || '0'"
            " AND (l.url = u.url OR l.url COLLATE \"C\" >= u.url || '/') LIMIT 2) AS l"
            " JOIN file_storage f ON f.id = l.file_storage_id",
            [sql.text_array(urls), connector],
        ).fetchall()
    # The range holds ``url-x`` and ``url.x`` too (``-`` and ``.`` come before ``/``).
    found += [row for row in rows if row[1] == row[0] or row[1].startswith(f"{row[0]}/")]
    holders: dict[str, list[str]] = {}
    for url in urls:
        if "/" in url:
            for ancestor in ancestors_of(url):
                holders.setdefault(ancestor, []).append(url)
    if not holders:
        return found
    if is_sqlite(sql.database()):
        condition, params = sql.one_of("l.url", list(holders))
        statement = (
            "SELECT l.url, f.key FROM storage_location l"
            " JOIN file_storage f ON f.id = l.file_storage_id"
            f" WHERE l.connector_name = ? AND {condition}"
        )
        params = [connector, *params]
    else:
        statement = (
            "SELECT u.url, f.key FROM unnest(?::text[]) AS u(url)"
            " CROSS JOIN LATERAL (SELECT l.file_storage_id FROM storage_location l"
            " WHERE l.connector_name = ? AND l.url = u.url LIMIT 1) AS l"
            " JOIN file_storage f ON f.id = l.file_storage_id"
        )
        params = [sql.text_array(list(holders)), connector]
    for theirs, key in sql.run(statement, params).fetchall():
        found += [(url, theirs, key) for url in holders[theirs]]
    return found


def locations_around(connector: str, url: str) -> list[tuple[str, str | None, str]]:
    """The locations on ``connector`` at ``url``, inside it or holding it: (url, item key, status).

    Urls are compared by whole segments, a trailing ``/`` aside: ``a/b``
    is around ``a/b/c`` and ``a``, not ``a/bc``.
    """
    ancestors = [url.rsplit("/", depth)[0] for depth in range(1, url.count("/") + 1)]
    found = []
    for location in (
        StorageLocation.select(StorageLocation, FileStorage)
        .join(FileStorage)
        .where(
            (StorageLocation.connector_name == connector)
            & (
                StorageLocation.url.in_([url, f"{url}/", *ancestors, *(f"{a}/" for a in ancestors)])
                | StorageLocation.url.startswith(f"{url}/")
            )
        )
    ):
        theirs = location.url.rstrip("/")
        if theirs == url or theirs in ancestors or theirs.startswith(f"{url}/"):
            # (``startswith`` may match regardless of case on SQLite.)
            found.append((theirs, location.file_storage.key, str(location.status)))
    return found


class IngestState(NamedTuple):
    """What the catalog holds of an item and its copy at a folder, for ``ingest``."""

    #: The item's creation time, and its copy's last access there (None: not registered).
    created: datetime | None
    last_update: datetime | None
    #: Open locks an import left on the copy (another reader's).
    import_locks: int
    #: The item's files (not folders).
    files: list[str]
    #: The files bad on the copy: path -> (the catalog's size, md5, crc32c, why).
    bad: dict[str, tuple[int | None, str | None, str | None, str]]


def ingest_state(key: str, connector: str, url: str) -> IngestState:
    """What the catalog holds of item ``key`` and its copy on ``connector`` at ``url``.

    An item with a copy there at another url gets no files (the import
    refuses it, naming both).
    """
    item = FileStorage.get_or_none(FileStorage.key == key)
    if item is None:
        return IngestState(None, None, 0, [], {})
    location = StorageLocation.get_or_none(
        (StorageLocation.file_storage == item)
        & (StorageLocation.connector_name == connector)
        & (StorageLocation.url == url)
    )
    if location is None:
        elsewhere = StorageLocation.get_or_none(
            (StorageLocation.file_storage == item) & (StorageLocation.connector_name == connector)
        )
        files = [] if elsewhere is not None else _files_of_item(item.id)
        return IngestState(item.created, None, 0, files, {})
    locks = (
        AccessLog.select()
        .where(
            (AccessLog.storage_location == location)
            & AccessLog.finished.is_null()
            & (AccessLog.reason == IMPORT_LOCK_REASON)
        )
        .count()
    )
    bad = {
        path: (size, md5, crc32c, problem)
        for path, size, md5, crc32c, problem in ReferencedPath.select(
            ReferencedPath.path,
            ReferencedPath.size,
            ReferencedPath.md5,
            ReferencedPath.crc32c,
            LocationFile.problem,
        )
        .join(LocationFile, on=(LocationFile.referenced_path == ReferencedPath.id))
        .where((LocationFile.storage_location == location) & LocationFile.problem.is_null(False))
        .tuples()
    }
    return IngestState(item.created, location.last_update, locks, _files_of_item(item.id), bad)


def _files_of_item(item_id: int) -> list[str]:
    return [
        path
        for (path,) in ReferencedPath.select(ReferencedPath.path)
        .where(ReferencedPath.file_storage == item_id)
        .tuples()
        if not path.endswith("/")
    ]
