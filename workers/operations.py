"""What one job does: copy, verify or delete files of an item's copy.

Each operation reads the catalog as it is when the job runs (the scan that
planned it may be stale), does its I/O, and records the outcome. Every one
is idempotent: a duplicate or redelivered job finds its work done, or not
wanted any more, and returns without I/O. Errors from the connectors pass
through typed (``connectors.errors``), so the caller decides retry versus
give up by their ``transient`` flag; operations record the outcome of what
they finished in the action history.

Copies: the location on the target is reserved by the scan
(``catalog.queries.reserve_locations``, status ``PR``); a job copies some
files of one item (one, or a batch of small ones) or the files of several
small items (``catalog.copying`` holds its statements): in one transaction
it locks each source with an access log (expiring after the job's time
limit, should the worker die) and makes each target ``UP``; it copies and
validates each file (on a local destination they land, durable, together:
``connectors.base.BatchedLanding``); in one more transaction it gives each
file that landed a ``LocationFile`` row, records the history, closes the
access logs and makes each location whose every file is recorded ``OK``.
While a source is locked it cannot be deleted under the copy.

Verifications: a job re-hashes some files of an ``OK`` copy, locked with
an access log meanwhile, and records each (``workers.verify``).

Deletes: a job removes some files of a copy. Under the item's catalog lock,
SPEC §5 conditions 3–6 are checked against the catalog as it is then and
the location marked ``DE`` (by the first job to run; the others find the
decision taken); then its files are removed, then their rows, and with the
last row the location.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from catalog.copying import (
    CopyFacts,
    Entry,
    Place,
    Proven,
    Record,
    Start,
    copy_facts,
    finish_copies,
    record_copies,
    start_copies,
)
from catalog.models import (
    STATUS_DELETING,
    STATUS_DONE,
    STATUS_PREPARING,
    STATUS_UPLOADING,
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
    utcnow,
)
from catalog.paths import files_label
from catalog.queries import (
    forget_files,
    locked_item,
    mark_files_to_delete,
    ok_locations,
    open_lock_count,
)
from connectors.base import Connector, Landing, ObjectInfo, copy_run, delete_all, landing
from connectors.errors import PermanentError, TransientError
from connectors.transfer import UNKNOWN, Expected, copy_file
from workers.verify import VerifyReport, object_path, verify_files

#: Finds a configured connector by name.
ConnectorLookup = Callable[[str], Connector]

#: Outcomes of a copy job.
COPIED = "copied"
ALREADY_THERE = "already there"
NOT_WANTED = "not wanted"
#: Outcomes of a delete job.
DELETED = "deleted"
FILES_DELETED = "files deleted"
REFUSED = "refused"
GONE = "gone"


class NoSourceError(PermanentError):
    """No ``OK`` copy of the item is left to copy from."""


class LocationGoneError(TransientError):
    """The location chosen a moment ago is no longer ``OK``; choosing again may work."""


@dataclass(frozen=True)
class DeleteCheck:
    """The rule a delete is re-checked against (SPEC §5, conditions 3–6).

    ``cutoff``: the location's ``last_update`` must be before it (None: the
    delay is negative, never delete). ``preference``: connector names from
    most to least preferred.
    """

    cutoff: datetime | None
    min_other_copies: int
    preference: Sequence[str]


def preferred(locations: Sequence[StorageLocation], preference: Sequence[str]) -> StorageLocation:
    """The preferred of ``locations`` (all ``OK``): by ``preference``, then by name."""
    rank = {name: index for index, name in enumerate(preference)}
    return min(
        locations, key=lambda loc: (rank.get(loc.connector_name, len(rank)), loc.connector_name)
    )


def open_access_log(
    location: StorageLocation, reason: str, *, expires: datetime | None = None
) -> AccessLog:
    """Lock ``location`` with an open access log: it is not deleted until the log closes.

    Taken under the item's catalog lock, after checking that the location is
    still ``OK``: a delete decided a moment earlier raises ``LocationGoneError``.
    """
    with locked_item(location.file_storage_id):
        return _open_log_locked(location, reason, expires)


def _open_log_locked(location: StorageLocation, reason: str, expires: datetime | None) -> AccessLog:
    """``open_access_log`` for a caller that holds the item's catalog lock already."""
    current = StorageLocation.get_or_none(StorageLocation.id == location.id)
    if current is None or current.status != STATUS_DONE:
        raise LocationGoneError(
            f"{location.connector_name}: the copy at {location.url!r} is no longer OK"
        )
    return AccessLog.create(storage_location=current, reason=reason, expires=expires)


def close_access_log(log: AccessLog) -> None:
    """Unlock: the access log is finished now (nothing to do if it is already)."""
    if log.finished is not None:
        return
    now = utcnow()
    AccessLog.update(finished=now).where(
        (AccessLog.id == log.id) & AccessLog.finished.is_null()
    ).execute()
    log.finished = now


@contextmanager
def access_lock(
    location: StorageLocation, reason: str, *, expires: datetime | None = None
) -> Iterator[AccessLog]:
    """``location`` locked by an open access log for the block (``open_access_log``).

    ``expires``: when the lock ends by itself should the block never end (a
    worker killed meanwhile); the scan closes it then.
    """
    log = open_access_log(location, reason, expires=expires)
    try:
        yield log
    finally:
        close_access_log(log)


@dataclass(frozen=True)
class CopyReport:
    """What a copy job did: files copied and proven, files found recorded already."""

    copied: int = 0
    already_there: int = 0
    #: Items whose copy is not wanted: the item, its files or the reserved
    #: location are gone, or the location is OK or ``DE``.
    not_wanted: int = 0

    @property
    def outcome(self) -> str:
        if self.not_wanted:
            return NOT_WANTED
        return COPIED if self.copied else ALREADY_THERE


def copy_item_file(
    item_id: int,
    target: str,
    path: str,
    *,
    connectors: ConnectorLookup,
    preference: Sequence[str],
    actor: str = "worker",
    lock_expires: datetime | None = None,
) -> str:
    """Copy file ``path`` of item ``item_id`` to its location on ``target``.

    Returns ``copied``, ``already there`` (recorded before: a duplicate job)
    or ``not wanted``; see ``copy_item_files``.
    """
    return copy_item_files(
        item_id,
        target,
        [path],
        connectors=connectors,
        preference=preference,
        actor=actor,
        lock_expires=lock_expires,
    ).outcome


def copy_item_files(
    item_id: int,
    target: str,
    paths: Sequence[str],
    *,
    connectors: ConnectorLookup,
    preference: Sequence[str],
    actor: str = "worker",
    lock_expires: datetime | None = None,
    look_first: bool = True,
) -> CopyReport:
    """Copy files ``paths`` of item ``item_id`` to its location on ``target`` (``copy_items``)."""
    return copy_items(
        target,
        [(item_id, paths)],
        connectors=connectors,
        preference=preference,
        actor=actor,
        lock_expires=lock_expires,
        look_first=look_first,
    )


@dataclass
class _Plan:
    """One item's part of a copy job."""

    item: CopyFacts
    location: Place
    source: Place
    todo: list[Entry]
    #: What the destination holds at the files' paths; None: ask per file.
    present: dict[str, ObjectInfo] | None


def copy_items(
    target: str,
    wanted: Sequence[tuple[int, Sequence[str]]],
    *,
    connectors: ConnectorLookup,
    preference: Sequence[str],
    actor: str = "worker",
    lock_expires: datetime | None = None,
    look_first: bool = True,
) -> CopyReport:
    """Copy files of items to their locations on ``target``: ``wanted`` is (item id, paths).

    Small files share a job: those of one copy, or of several small items.
    However many items, the catalog is read once, the sources locked in one
    transaction, and what was copied recorded in one more. Files recorded
    before (a duplicate or redelivered job) are skipped; the rest are
    copied, in order, from each item's preferred ``OK`` location as the
    catalog says now. When a file fails, those copied before it are
    recorded, then the error is raised: a retry carries on from the failed
    one. An item with no ``OK`` copy to copy from, or whose source went
    meanwhile, does not hold the others back: they are copied, then its
    error is raised. ``lock_expires``: when the sources' locks end should
    this job never end. ``look_first``: find what the destination holds
    already (one listing per item for several files, a request for one)
    and keep what matches; without it every file is written, which is as
    correct and, for a job of small files tried for the first time, one
    request fewer each.
    """
    merged: dict[int, list[str]] = {}
    for item_id, paths in wanted:
        merged.setdefault(item_id, []).extend(paths)
    asked = [(item_id, list(dict.fromkeys(paths))) for item_id, paths in merged.items()]
    facts = copy_facts(target, asked)
    not_wanted = already_there = 0
    problem: Exception | None = None
    plans: list[_Plan] = []
    destination = connectors(target)
    for item_id, paths in asked:
        item = facts.get(item_id)
        location = None
        if item is not None:
            location = next((p for p in item.places if p.connector_name == target), None)
        if item is None or location is None or not item.entries:
            not_wanted += 1
            continue
        if location.status not in (STATUS_PREPARING, STATUS_UPLOADING):
            not_wanted += 1
            continue
        already_there += sum(1 for entry in item.entries.values() if entry.recorded)
        todo = [
            item.entries[path]
            for path in paths
            if path in item.entries and not item.entries[path].recorded
        ]
        if not todo:
            finish_location(item_id, target)
            continue
        sources = [p for p in item.places if p.status == STATUS_DONE and p.connector_name != target]
        if not sources:
            problem = problem or NoSourceError(
                f"item {item.key or item_id}: no OK copy to copy {todo[0].path!r} from"
            )
            continue
        present: dict[str, ObjectInfo] | None = {}  # nothing there: copy each file
        if look_first:
            present = _already_there(destination, [object_path(location, e.path) for e in todo])
        plans.append(_Plan(item, location, preferred(sources, preference), todo, present))

    logs = start_copies(
        [
            Start(plan.item.id, plan.source.id, plan.location.id, _reason(target, plan.todo))
            for plan in plans
        ],
        expires=lock_expires,
        now=utcnow(),
    )
    for plan in plans:
        if plan.item.id not in logs:
            problem = problem or LocationGoneError(
                f"{plan.source.connector_name}: the copy at {plan.source.url!r} is no longer OK"
            )
    started = [plan for plan in plans if plan.item.id in logs]
    proven: dict[int, list[Proven]] = {plan.item.id: [] for plan in started}
    recorded: set[int] = set()
    batch = Landing(landed=False)
    try:
        # The sources stay locked until the copies are recorded. The files
        # land (durable) together where the destination can do that.
        with landing(destination) as batch:
            for plan in started:
                source = connectors(plan.source.connector_name)
                with copy_run(destination, source):
                    for entry in plan.todo:
                        proven[plan.item.id].append(
                            _copy_one(plan, entry, source, destination, target, actor)
                        )
    finally:
        # What was proven (and landed) is kept, even when a later file
        # failed; the sources are unlocked in the same transaction.
        recorded = record_copies(
            [
                Record(
                    plan.item.id,
                    plan.item.key,
                    plan.location,
                    plan.source.connector_name,
                    proven[plan.item.id] if batch.landed else [],
                    logs[plan.item.id],
                )
                for plan in started
            ],
            actor=actor,
            now=utcnow(),
        )
    if problem is not None:
        raise problem
    return CopyReport(
        copied=sum(len(proven[item_id]) for item_id in recorded),
        already_there=already_there,
        not_wanted=not_wanted + len(started) - len(recorded),
    )


def _copy_one(
    plan: _Plan,
    entry: Entry,
    source: Connector,
    destination: Connector,
    target: str,
    actor: str,
) -> Proven:
    """Copy one file of ``plan`` and prove it; a permanent failure goes to the history."""
    began = time.monotonic()
    where = object_path(plan.location, entry.path)
    try:
        result = copy_file(
            source,
            object_path(plan.source, entry.path),
            destination,
            where,
            expected=Expected(
                entry.size, entry.md5, entry.crc32c, entry.awss3etag, entry.chunk_size
            ),
            present=plan.present.get(where) if plan.present is not None else UNKNOWN,
        )
    except Exception as exc:
        if not getattr(exc, "transient", True):
            _history(
                actor,
                "copy",
                FileStorage(id=plan.item.id, key=plan.item.key),
                plan.source.connector_name,
                target,
                entry.path,
                began,
                exc,
            )
        raise
    elapsed = int((time.monotonic() - began) * 1000)
    return Proven(entry, result.validated_by, result.size, elapsed)


def _reason(target: str, todo: Sequence[Entry]) -> str:
    """Why a source is locked: the access log's reason."""
    return f"copy to {target}: {files_label([entry.path for entry in todo])}"


def _already_there(destination: Connector, paths: Sequence[str]) -> dict[str, ObjectInfo] | None:
    """What ``destination`` holds at ``paths``, from one listing; None to ask per file.

    A copy of several files lists their common prefix once instead of asking
    about each file before writing it (a request per file on a store), which
    is what keeps a retried job from copying again what is there already.
    """
    if len(paths) < 2:
        return None
    # Character by character: "a/f01" and "a/f02" share "a/f0", a narrower listing.
    first, last = min(paths), max(paths)
    length = next(
        (n for n, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first)
    )
    prefix = first[:length]
    wanted = set(paths)
    return {info.path: info for info in destination.list(prefix) if info.path in wanted}


def finish_location(item_id: int, target: str) -> bool:
    """Make the item's location on ``target`` ``OK`` if every file is recorded there.

    Also what finishes a copy of an item without files. Returns whether the
    location is ``OK`` now.
    """
    with locked_item(item_id) as item:
        location = StorageLocation.get_or_none(
            (StorageLocation.file_storage == item_id) & (StorageLocation.connector_name == target)
        )
        if item is None or location is None:
            return False
        if location.status == STATUS_DONE:
            return True
        if location.status == STATUS_DELETING:
            return False
        return location.id in finish_copies([location.id], now=utcnow(), touch=False)


def verify_item_files(
    item_id: int,
    connector_name: str,
    paths: Sequence[str] | None,
    *,
    connectors: ConnectorLookup,
    now: datetime,
    actor: str = "worker",
    lock_expires: datetime | None = None,
) -> VerifyReport | None:
    """Verify files ``paths`` (None: all) of the item's ``OK`` copy on ``connector_name``.

    The copy is locked meanwhile (no delete under it; ``lock_expires`` as in
    ``access_lock``). None when there is no ``OK`` copy there (any more):
    nothing to verify.
    """
    location = StorageLocation.get_or_none(
        (StorageLocation.file_storage == item_id)
        & (StorageLocation.connector_name == connector_name)
    )
    if location is None or location.status != STATUS_DONE:
        return None
    entries = ReferencedPath.select().where(ReferencedPath.file_storage == item_id)
    if paths is not None:
        entries = entries.where(ReferencedPath.path.in_(list(paths)))
    try:
        with access_lock(location, "verify", expires=lock_expires):
            return verify_files(
                location,
                connectors(connector_name),
                list(entries.order_by(ReferencedPath.path)),
                now=now,
                actor=actor,
                whole=paths is None,
            )
    except LocationGoneError:
        return None  # deleted meanwhile


def why_not_delete(
    location: StorageLocation, check: DeleteCheck, others: Sequence[StorageLocation]
) -> str | None:
    """Why SPEC §5 conditions 3–6 forbid deleting ``location`` now; None if they allow it.

    ``others`` are the item's ``OK`` locations, ``location`` among them.
    """
    if location.status != STATUS_DONE:
        return f"the location is {location.status}, not OK"
    if check.cutoff is None:
        return "the delete delay is negative: never"
    if not location.last_update < check.cutoff:
        return f"last accessed {location.last_update:%Y-%m-%dT%H:%M:%S}, too recently"
    locks = open_lock_count(location.id)
    if locks:
        return f"locked by {locks} open access log(s)"
    if len(others) <= check.min_other_copies:
        return (
            f"{len(others)} OK copies, counting this one; more than {check.min_other_copies} needed"
        )
    if preferred(others, check.preference).id == location.id:
        return "it is the preferred copy"
    return None


def delete_location(
    item_id: int,
    connector_name: str,
    *,
    check: DeleteCheck,
    connectors: ConnectorLookup,
    actor: str = "worker",
) -> str:
    """Delete the item's whole location on ``connector_name`` if the rules allow it now.

    ``delete_files`` of every file of the item.
    """
    return delete_files(
        item_id, connector_name, None, check=check, connectors=connectors, actor=actor
    )


def delete_files(
    item_id: int,
    connector_name: str,
    paths: Sequence[str] | None,
    *,
    check: DeleteCheck,
    connectors: ConnectorLookup,
    actor: str = "worker",
) -> str:
    """Remove files ``paths`` (None: all) of the item's copy on ``connector_name``, if allowed.

    The first job of a delete to run re-checks the rules under the item's
    catalog lock, and if they allow it marks the location ``DE`` and each
    of its files still to remove; a job that finds it ``DE`` goes on (the
    decision is taken). Then the files go, then their rows, and with the
    last row the location. Returns ``deleted`` (the location is gone),
    ``files deleted`` (others are left to other jobs), ``refused`` (the
    rules forbid it now: recorded in the history with the reason) or
    ``gone`` (nothing to delete). A duplicate job removes nothing twice
    that matters: deleting a missing object is not an error.
    """
    began = time.monotonic()
    with locked_item(item_id) as item:
        location = StorageLocation.get_or_none(
            (StorageLocation.file_storage == item_id)
            & (StorageLocation.connector_name == connector_name)
        )
        if item is None or location is None:
            return GONE
        if location.status != STATUS_DELETING:
            reason = why_not_delete(location, check, ok_locations(item_id))
            if reason is not None:
                Action.create(
                    actor=actor,
                    action="delete",
                    item_key=item.key,
                    file_storage=item,
                    target=connector_name,
                    result="refused",
                    error=reason,
                )
                return REFUSED
            now = utcnow()
            StorageLocation.update(status=STATUS_DELETING, last_update=now).where(
                StorageLocation.id == location.id
            ).execute()
            mark_files_to_delete(location.id, item_id, now=now)
        elif not LocationFile.select().where(LocationFile.storage_location == location.id).exists():
            # Marked DE elsewhere (an import, an earlier version): no row says
            # what is left, so every file is, or the first job to end would
            # take the location while others still have files to remove.
            mark_files_to_delete(location.id, item_id, now=utcnow())
    entries = ReferencedPath.select(ReferencedPath.id, ReferencedPath.path).where(
        (ReferencedPath.file_storage == item_id) & ~ReferencedPath.path.endswith("/")
    )
    if paths is not None:
        entries = entries.where(ReferencedPath.path.in_(list(paths)))
    found = list(entries.tuples())
    delete_all(connectors(connector_name), [object_path(location, path) for _, path in found])
    with locked_item(item_id):
        gone = forget_files(location.id, [path_id for path_id, _ in found])
        if not gone:
            # Progress: a delete whose location stops moving is resumed by the scan.
            StorageLocation.update(last_update=utcnow()).where(
                StorageLocation.id == location.id
            ).execute()
        _history(actor, "delete", item, None, connector_name, _label(paths, gone), began, None)
    return DELETED if gone else FILES_DELETED


def _label(paths: Sequence[str] | None, whole: bool) -> str | None:
    """The files a delete job removed, for the history (None: the whole copy went)."""
    if whole or not paths:
        return None
    return files_label(paths)


def _history(
    actor: str,
    action: str,
    item: FileStorage,
    source: str | None,
    target: str | None,
    path: str | None,
    began: float,
    error: BaseException | None,
    size: int | None = None,
) -> None:
    Action.create(
        actor=actor,
        action=action,
        item_key=item.key,
        file_storage=item,
        source=source,
        target=target,
        path=path,
        result="ok" if error is None else "failed",
        bytes=size,
        duration_ms=int((time.monotonic() - began) * 1000),
        error=None if error is None else str(error),
    )
