"""The integrity of copies: which count, which are damaged, which files are lost.

A location counts as a copy of its item (for ``min_other_copies``, as the
preferred location, as a source of copies and URLs) only while it is
``OK``, and it is ``OK`` only while every file of the item's current version
is good on it: written by a validated transfer, found good by a
verification, or asserted by the import (or ingest) that registered it, and
not since found missing, different or stale.

The states of a location (``StorageLocation.status``) and what moves it::

    (reserved) PR --job starts--> UP --every file proven--> OK --delete decided--> DE --> (gone)
                                                             |  ^
          a file found missing, of another size or checksum, |  | every file good again:
          or stale (the item's file changed after the copy)  v  | repaired, or re-verified
                                                             DM

A damaged location (``DM``) never counts and is never deleted by a rule: it
is repaired, its bad files copied again from a copy where they are good. An
item with a file that is good nowhere is **lost** (for that file): nothing of
it is deleted, and the file is reported until an operator acts.

Per file of a location (``LocationFile``), a row is good (``problem`` null:
copied or verified, and when), bad (``problem`` says why), or absent. What
an absent row means depends on the location: on a copy that counts or a
damaged one (``OK``, ``DM``) the file is as the import asserted it (a
catalog of a million imported items holds no row for them); on a copy under
way (``PR``, ``UP``) it is not copied yet; on a ``DE`` location the rows are
the files still to remove. So what is known to be bad is always a row. Only
an answer from a backend or a change of the item's content makes a row bad;
an error reaching a backend never does.

Every function here runs inside the caller's transaction, which holds the
item's catalog lock (``catalog.queries.locked_item``) when it decides.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import NamedTuple

import peewee as pw

from catalog import sql
from catalog.models import (
    STATUS_DAMAGED,
    STATUS_DONE,
    STATUS_PREPARING,
    STATUS_UPLOADING,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
)

#: ``validated_by`` of a row an import (or an ingest) asserted rather than proved.
ASSERTED = "asserted"
#: The problem of a file whose content changed after the copy was made.
STALE = "stale: the item's file changed after this copy was made"
#: The problem of a file added to the item after the copy was made.
NOT_COPIED = "missing: added to the item after this copy was made"
#: Rows written per statement.
DEFAULT_BATCH = 500


class BadFile(NamedTuple):
    """One file that is not good on a location, and why."""

    path_id: int
    path: str
    size: int | None
    problem: str


def _chunks(values: Sequence[object]) -> Iterable[list[object]]:
    for start in range(0, len(values), DEFAULT_BATCH):
        yield list(values[start : start + DEFAULT_BATCH])


def _files_of(item_id: int) -> pw.Select:
    return ReferencedPath.select(ReferencedPath.id).where(
        (ReferencedPath.file_storage == item_id) & ~ReferencedPath.path.endswith("/")
    )


def record_good(
    location_id: int,
    proven: Sequence[tuple[int, str]],
    *,
    now: datetime,
    verified_at: datetime | None,
) -> None:
    """Record files of a location as good: ``proven`` is (referenced path id, what proved it).

    ``verified_at``: when the bytes were last looked at (a transfer
    validated, a verification, an ingest's hashing); None for bytes only
    asserted (an import), never verified yet. A file keeps the time it was
    first recorded there (``copied``). Call ``settle`` after.
    """
    _upsert(
        location_id,
        [(path_id, kind, verified_at, None) for path_id, kind in proven],
        now=now,
        overwrite=("validated_by", "verified"),
    )


def record_bad(location_id: int, problems: Sequence[tuple[int, str]], *, now: datetime) -> None:
    """Record files of a location as not good: ``problems`` is (referenced path id, why).

    Only for evidence (a backend's answer, a change of content). Call
    ``settle`` after.
    """
    _upsert(
        location_id,
        [(path_id, "", None, problem) for path_id, problem in problems],
        now=now,
        overwrite=("verified",),
    )


_ROWS = (
    "location_file (storage_location_id, referenced_path_id, copied, validated_by, verified,"
    " problem, problem_found)"
)


def _upsert(
    location_id: int,
    files: Sequence[tuple[int, str, datetime | None, str | None]],
    *,
    now: datetime,
    overwrite: Sequence[str],
) -> None:
    """Write rows (path id, validated by, verified, problem) of a location, new or not.

    A row there already gets its ``problem`` (and when it was found) and the
    columns ``overwrite`` from the new one; it keeps the rest. Written out
    (``catalog.sql``): peewee took 90 us a row to build the statement, four
    times what the database took to run it, for the 1,000 files a
    verification job records.
    """
    kept = ", ".join(
        f"{column} = excluded.{column}" for column in ("problem", "problem_found", *overwrite)
    )
    sql.insert(
        _ROWS,
        [
            (location_id, path_id, now, kind, verified, problem, None if problem is None else now)
            for path_id, kind, verified, problem in files
        ],
        on_conflict=f"(storage_location_id, referenced_path_id) DO UPDATE SET {kept}",
    )


def settle(location_id: int, *, now: datetime) -> str | None:
    """Make the location's status and ``last_verified`` follow its files; its status now.

    ``OK`` with a bad file becomes ``DM``; ``DM`` without one becomes
    ``OK``. With every file good, ``last_verified`` is the time of the least
    recently verified one: a file with no row counts as verified when the
    location last was (as its import said, if it did), one never verified
    makes it null; no files: ``now``. Other statuses are left alone. None
    when the location is gone.

    It runs after every job that records files of the location, so each
    question is one an index answers from its first entries (migration
    013), not an aggregate of every row: the jobs of an item of 50,000
    files would otherwise cost more the further along they are. Whether a
    file lacks a row is the one question that reads every file when none
    does; its answer is kept (``files_recorded``) once it is "none".
    """
    location = StorageLocation.get_or_none(StorageLocation.id == location_id)
    if location is None:
        return None
    if location.status not in (STATUS_DONE, STATUS_DAMAGED):
        return str(location.status)
    rows = _file_rows(location)
    if rows.where(LocationFile.problem.is_null(False)).exists():
        StorageLocation.update(status=STATUS_DAMAGED).where(
            StorageLocation.id == location_id
        ).execute()
        return STATUS_DAMAGED
    before: datetime | None = location.last_verified
    recorded: bool = location.files_recorded
    last: datetime | None
    if rows.where(LocationFile.verified.is_null()).exists():
        last = None  # a file recorded but never verified
    else:
        oldest = _oldest_verified(rows)
        if oldest is not None and before is not None and before >= oldest:
            last = oldest  # whether or not a file lacks a row
        elif recorded or not _lacks_a_row(location):
            recorded = True
            last = now if oldest is None else oldest  # no files, or every one recorded
        else:
            # Files without a row: as verified as the copy was before, which
            # is no later than any row's time here.
            last = before
    StorageLocation.update(status=STATUS_DONE, last_verified=last, files_recorded=recorded).where(
        StorageLocation.id == location_id
    ).execute()
    return STATUS_DONE


def _file_rows(location: StorageLocation) -> pw.ModelSelect:
    """The location's rows of files (not folders); every row of a location is of its item's.

    Each path is looked up by its id alone: given the item too, PostgreSQL's
    planner, with statistics older than a wide item's rows, read every file
    of the item to find the few rows asked for (110 ms at 50,000 files).
    """
    current = ReferencedPath.select(ReferencedPath.id).where(
        (ReferencedPath.id == LocationFile.referenced_path) & ~ReferencedPath.path.endswith("/")
    )
    return LocationFile.select(LocationFile.id).where(
        (LocationFile.storage_location == location.id) & pw.fn.EXISTS(current)
    )


def _oldest_verified(rows: pw.ModelSelect) -> datetime | None:
    """The earliest ``verified`` of ``rows`` (None: no row has one)."""
    first = (
        rows.select(LocationFile.verified)
        .where(LocationFile.verified.is_null(False))
        .order_by(LocationFile.verified)
        .limit(1)
        .first()
    )
    return None if first is None else first.verified


def _lacks_a_row(location: StorageLocation) -> bool:
    """Whether a file of the location's item has no row there.

    Looked for from the last path: the jobs of a copy or a verification go
    in path order, so while some are to come the first file read answers.
    """
    recorded = LocationFile.select(LocationFile.id).where(
        (LocationFile.storage_location == location.id)
        & (LocationFile.referenced_path == ReferencedPath.id)
    )
    # Not ``exists()``: inside EXISTS the order is dropped, and the search
    # would begin at the first path.
    first = (
        _files_of(location.file_storage_id)
        .where(~pw.fn.EXISTS(recorded))
        .order_by(ReferencedPath.path.desc())
        .limit(1)
        .tuples()
        .first()
    )
    return first is not None


def content_of(entry: ReferencedPath) -> tuple[object, ...]:
    """A file's size and hashes as the catalog gives them: what a job judged its bytes by."""
    return (entry.size, entry.md5, entry.crc32c, entry.awss3etag)


def still_current(read: Mapping[int, tuple[object, ...]]) -> set[int]:
    """The files of ``read`` (id: ``content_of`` as a job read it) the catalog still describes so.

    A job reads a file's hashes, then its bytes; a new version registered
    in between (``content_changed``) makes what it found of the bytes no
    evidence for the file as it is now, either way: the bytes it found
    good are the old version's, those it found different may be the new
    one's. Call it under the item's lock (``catalog.queries.locked_item``),
    as the records it decides.
    """
    current: set[int] = set()
    ids = list(read)
    # Rows, not models: a verification of 50,000 files spent 1.5-2.5 s
    # building them (``benchmarks/bench_verify.py``).
    for chunk in _chunks(ids):
        cursor = sql.run(
            "SELECT id, size, md5, crc32c, awss3etag FROM referenced_path"
            f" WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )
        for path_id, *content in cursor.fetchall():
            if tuple(content) == read[path_id]:
                current.add(path_id)
    return current


def content_changed(
    item_id: int,
    path_ids: Sequence[int],
    *,
    asserted: Collection[int],
    problem: str,
    now: datetime,
    verified_at: datetime | None = None,
) -> None:
    """Files ``path_ids`` of the item are a new version (or new): what each location holds now.

    The locations ``asserted`` (ids: those an import document or an ingested
    folder says hold the item) hold the new version: their rows become good
    (``verified``: the bytes were just hashed there). Every other ``OK`` or
    ``DM`` location holds the old version or nothing: its rows become bad
    with ``problem`` (``STALE``, or ``NOT_COPIED`` for a new file) and it is
    damaged until repaired from an asserted one. A copy under way (``PR``,
    ``UP``) forgets those files, so they are copied again; a ``DE`` one is
    left to its delete.
    """
    if not path_ids:
        return
    for location in StorageLocation.select().where(StorageLocation.file_storage == item_id):
        if location.id in asserted:
            record_good(
                location.id, [(p, ASSERTED) for p in path_ids], now=now, verified_at=verified_at
            )
        elif location.status in (STATUS_DONE, STATUS_DAMAGED):
            record_bad(location.id, [(p, problem) for p in path_ids], now=now)
        elif location.status in (STATUS_PREPARING, STATUS_UPLOADING):
            for chunk in _chunks(path_ids):
                LocationFile.delete().where(
                    (LocationFile.storage_location == location.id)
                    & LocationFile.referenced_path.in_(chunk)
                ).execute()
            continue
        else:
            continue
        settle(location.id, now=now)


def bad_files(location_id: int) -> list[BadFile]:
    """The files of the location's item that are bad on it (rows with a problem), by path."""
    rows = (
        ReferencedPath.select(
            ReferencedPath.id, ReferencedPath.path, ReferencedPath.size, LocationFile.problem
        )
        .join(LocationFile, on=(LocationFile.referenced_path == ReferencedPath.id))
        .where(
            (LocationFile.storage_location == location_id)
            & LocationFile.problem.is_null(False)
            & ~ReferencedPath.path.endswith("/")
        )
        .order_by(ReferencedPath.path)
        .tuples()
    )
    return [BadFile(path_id, path, size, problem) for path_id, path, size, problem in rows]


def good_holders(
    item_id: int, path_ids: Sequence[int], *, exclude: int | None = None
) -> dict[int, list[StorageLocation]]:
    """For each of ``path_ids``, the item's locations where it is good (``OK`` or ``DM``).

    A copy that counts holds every file; a damaged one each file it has no
    bad row for. ``exclude``: a location id left out (the one being repaired).
    """
    locations = [
        location
        for location in StorageLocation.select().where(
            (StorageLocation.file_storage == item_id)
            & StorageLocation.status.in_([STATUS_DONE, STATUS_DAMAGED])
        )
        if location.id != exclude
    ]
    bad: set[tuple[int, int]] = set()
    damaged = [location.id for location in locations if location.status == STATUS_DAMAGED]
    for chunk in _chunks(path_ids):
        if damaged:
            bad.update(
                LocationFile.select(LocationFile.storage_location, LocationFile.referenced_path)
                .where(
                    LocationFile.storage_location.in_(damaged)
                    & LocationFile.referenced_path.in_(chunk)
                    & LocationFile.problem.is_null(False)
                )
                .tuples()
            )
    return {
        path_id: [location for location in locations if (location.id, path_id) not in bad]
        for path_id in path_ids
    }


def lost_files(
    item_ids: Sequence[int] | None = None, *, limit: int | None = None
) -> dict[int, list[str]]:
    """Items with a file that is good nowhere, and those files' paths; by item id.

    Only an item with a damaged location and no ``OK`` one can be lost (an
    ``OK`` copy holds every file), so only those are looked at: a file of
    theirs is lost when every damaged location has it bad. ``item_ids``:
    only these items; ``limit``: at most so many items, by id.
    """
    damaged_items = StorageLocation.select(StorageLocation.file_storage).where(
        StorageLocation.status == STATUS_DAMAGED
    )
    healthy = StorageLocation.select(StorageLocation.id).where(
        (StorageLocation.file_storage == ReferencedPath.file_storage)
        & (StorageLocation.status == STATUS_DONE)
    )
    holder = StorageLocation.alias("holder")
    held = holder.select(holder.id).where(
        (holder.file_storage == ReferencedPath.file_storage)
        & (holder.status == STATUS_DAMAGED)
        & ~pw.fn.EXISTS(
            LocationFile.select(LocationFile.id).where(
                (LocationFile.storage_location == holder.id)
                & (LocationFile.referenced_path == ReferencedPath.id)
                & LocationFile.problem.is_null(False)
            )
        )
    )
    query = (
        ReferencedPath.select(ReferencedPath.file_storage, ReferencedPath.path)
        .where(
            ReferencedPath.file_storage.in_(damaged_items)
            & ~ReferencedPath.path.endswith("/")
            & ~pw.fn.EXISTS(healthy)
            & ~pw.fn.EXISTS(held)
        )
        .order_by(ReferencedPath.file_storage, ReferencedPath.path)
    )
    if item_ids is not None:
        query = query.where(ReferencedPath.file_storage.in_(list(item_ids)))
    lost: dict[int, list[str]] = {}
    for item_id, path in query.tuples().iterator():
        if item_id not in lost and limit is not None and len(lost) >= limit:
            break
        lost.setdefault(item_id, []).append(path)
    return lost


def lost_count() -> int:
    """How many items have a file that is good nowhere."""
    return len(lost_files())


def keys_of(item_ids: Iterable[int]) -> dict[int, str | None]:
    """The keys of items, by id."""
    ids = list(item_ids)
    found: dict[int, str | None] = {}
    for chunk in _chunks(ids):
        found.update(
            FileStorage.select(FileStorage.id, FileStorage.key)
            .where(FileStorage.id.in_(chunk))
            .tuples()
        )
    return found


def describe_lost(lost: Mapping[int, Sequence[str]], keys: Mapping[int, str | None]) -> str:
    """``key (path, path), key (path)`` for a line of output."""
    parts = []
    for item_id, paths in lost.items():
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        parts.append(f"{keys.get(item_id) or f'#{item_id}'} ({shown})")
    return "; ".join(parts)


__all__ = [
    "ASSERTED",
    "NOT_COPIED",
    "STALE",
    "BadFile",
    "bad_files",
    "content_changed",
    "describe_lost",
    "good_holders",
    "keys_of",
    "lost_count",
    "lost_files",
    "record_bad",
    "record_good",
    "settle",
]
