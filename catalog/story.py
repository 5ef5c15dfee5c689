"""An item's story for an operator: what it is, where its copies are, in what state, what happened.

``item_story`` gathers, for one item, its files with their sizes and
hashes, each location with its state and each file's state there (as
``catalog.integrity`` defines them), the open locks and who holds them,
the files that are good nowhere, and the latest of its history.
``history`` reads the action table with the usual filters,
``action_names`` the kinds of action it holds, and
``outcome_since`` and ``failures_since`` what a run did (by the index on
``action.started``: only the run's rows are read, however long the
history). All return plain values (times as ISO-8601 strings) that the
command line prints as text or JSON; none writes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from catalog.integrity import lost_files
from catalog.models import (
    STATUS_DAMAGED,
    STATUS_DELETING,
    STATUS_DONE,
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
)
from catalog.queries import item_by_key

#: What a file of a location is, by the location's status and the file's row.
GOOD = "good"
ASSERTED_GOOD = "asserted"
BAD = "bad"
NOT_COPIED = "not copied yet"
COPIED = "copied"
TO_REMOVE = "to remove"
REMOVED = "removed"

#: The result of an action that failed for good.
FAILED = "failed"
#: History entries ``item_story`` includes, at most (newest first).
DEFAULT_STORY_HISTORY = 20
#: History entries ``history`` lists when no limit is given.
DEFAULT_HISTORY_LIMIT = 100


def when(moment: datetime | None) -> str | None:
    """A catalog time (naive UTC) as ISO-8601 with a ``Z``; None stays None."""
    return None if moment is None else f"{moment:%Y-%m-%dT%H:%M:%S}Z"


def item_story(key: str, *, history: int = DEFAULT_STORY_HISTORY) -> dict[str, Any]:
    """Everything the catalog knows of item ``key``; ItemNotFoundError if there is none."""
    item = item_by_key(key)
    files = list(
        ReferencedPath.select()
        .where(ReferencedPath.file_storage == item)
        .order_by(ReferencedPath.path)
    )
    locations = list(
        StorageLocation.select()
        .where(StorageLocation.file_storage == item)
        .order_by(StorageLocation.connector_name)
    )
    rows: dict[int, dict[int, LocationFile]] = {}
    for row in LocationFile.select().where(
        LocationFile.storage_location.in_([loc.id for loc in locations])
    ):
        rows.setdefault(row.storage_location_id, {})[row.referenced_path_id] = row
    locks: dict[int, list[AccessLog]] = {}
    for log in (
        AccessLog.select()
        .where(
            AccessLog.storage_location.in_([loc.id for loc in locations])
            & AccessLog.finished.is_null()
        )
        .order_by(AccessLog.started)
    ):
        locks.setdefault(log.storage_location_id, []).append(log)
    real_files = [entry for entry in files if not entry.path.endswith("/")]
    return {
        "key": item.key,
        "data_slug": item.data_slug,
        "process_type": item.process_type,
        "status": item.status,
        "created": when(item.created),
        "removed": when(item.removed),
        "files": [
            {
                "path": entry.path,
                "size": entry.size,
                "md5": entry.md5,
                "crc32c": entry.crc32c,
                "awss3etag": entry.awss3etag,
                "chunk_size": entry.chunk_size,
            }
            for entry in files
        ],
        "locations": [
            _location(loc, real_files, rows.get(loc.id, {}), locks.get(loc.id, []))
            for loc in locations
        ],
        "lost": lost_files([item.id]).get(item.id, []),
        "history": _actions(Action.file_storage == item, limit=history),
    }


def _location(
    location: StorageLocation,
    files: Sequence[ReferencedPath],
    rows: dict[int, LocationFile],
    locks: Sequence[AccessLog],
) -> dict[str, Any]:
    states = {entry.path: _file_state(location.status, rows.get(entry.id)) for entry in files}
    verified = [row.verified for row in rows.values() if row.verified is not None]
    return {
        "connector": location.connector_name,
        "url": location.url,
        "status": location.status,
        "last_access": when(location.last_update),
        "last_verified": when(location.last_verified or (max(verified) if verified else None)),
        "locks": [
            {"reason": log.reason, "since": when(log.started), "expires": when(log.expires)}
            for log in locks
        ],
        "files": states,
    }


def _file_state(status: str, row: LocationFile | None) -> dict[str, Any]:
    """A file's state on a location of ``status`` (``catalog.integrity`` draws them)."""
    if status in (STATUS_DONE, STATUS_DAMAGED):
        if row is None:
            return {"state": ASSERTED_GOOD}
        if row.problem is not None:
            return {"state": BAD, "problem": row.problem, "found": when(row.problem_found)}
        return {"state": GOOD, "by": row.validated_by, "verified": when(row.verified)}
    if status == STATUS_DELETING:
        return {"state": TO_REMOVE if row is not None else REMOVED}
    return {"state": COPIED if row is not None else NOT_COPIED}


def history(
    *,
    key: str | None = None,
    since: datetime | None = None,
    action: str | None = None,
    connector: str | None = None,
    failed: bool = False,
    limit: int = DEFAULT_HISTORY_LIMIT,
) -> list[dict[str, Any]]:
    """The latest ``limit`` actions, newest first: of item ``key``, since, of a kind, failed.

    ``connector``: only actions with it as their source or target.

    By the key the history recorded, so the actions of an item since
    removed from the catalog are found too. ``failed``: only the jobs that
    failed for good (``result`` ``failed``), not the refusals or the damage
    found, which are outcomes.
    """
    where = Action.id.is_null(False)
    if key is not None:
        item = FileStorage.get_or_none(FileStorage.key == key)
        mine = Action.item_key == key
        if item is not None:
            mine |= Action.file_storage == item.id
        where &= mine
    if since is not None:
        where &= Action.started >= since
    if action is not None:
        where &= Action.action == action
    if connector is not None:
        where &= (Action.target == connector) | (Action.source == connector)
    if failed:
        where &= Action.result == FAILED
    return _actions(where, limit=limit)


def action_names() -> list[str]:
    """The kinds of action the history holds, in order.

    One look into the index on ``action (action, id)`` per kind (a loose
    index scan), not a read of every row: a history of millions of actions
    holds a handful of kinds.
    """
    database = Action._meta.database
    rows = database.execute_sql(
        "WITH RECURSIVE names(name) AS ("
        " SELECT MIN(action) FROM action"
        " UNION ALL"
        " SELECT (SELECT MIN(action) FROM action WHERE action > names.name)"
        " FROM names WHERE names.name IS NOT NULL)"
        " SELECT name FROM names WHERE name IS NOT NULL"
    )
    return [name for (name,) in rows]


def outcome_since(since: datetime) -> dict[str, dict[str, int]]:
    """Counts of the actions recorded since ``since``, by action and result.

    Counted here, not grouped by the database: SQLite, which keeps no
    statistics, would rather walk the whole index on ``(action, id)`` in
    order than group the few rows the index on the time finds.
    """
    counts: dict[str, dict[str, int]] = {}
    for action, result in (
        Action.select(Action.action, Action.result).where(Action.started >= since).tuples()
    ):
        results = counts.setdefault(action, {})
        results[result] = results.get(result, 0) + 1
    return counts


def failures_since(since: datetime) -> list[dict[str, Any]]:
    """The jobs that failed for good since ``since``, in order: what, of which item, where, why."""
    rows = (
        Action.select()
        .where((Action.started >= since) & (Action.result == FAILED))
        # By time first: ordered by id alone, SQLite walks the whole table
        # in id order rather than sort the few rows the index finds.
        .order_by(Action.started, Action.id)
    )
    return [
        {
            "action": row.action,
            "key": row.item_key,
            "target": row.target,
            "path": row.path,
            "error": row.error,
        }
        for row in rows
    ]


def _actions(where: Any, *, limit: int) -> list[dict[str, Any]]:
    return [
        {
            "started": when(row.started),
            "finished": when(row.finished),
            "actor": row.actor,
            "action": row.action,
            "key": row.item_key,
            "source": row.source,
            "target": row.target,
            "path": row.path,
            "result": row.result,
            "bytes": row.bytes,
            "duration_ms": row.duration_ms,
            "error": row.error,
        }
        for row in Action.select().where(where).order_by(Action.id.desc()).limit(limit)
    ]
