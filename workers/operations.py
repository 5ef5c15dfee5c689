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

Verifications: a job re-hashes some files of an ``OK`` (or damaged) copy,
locked with an access log meanwhile, and records each (``workers.verify``):
a file found bad makes the copy damaged (``catalog.integrity``).

Deletes: a job removes some files of a copy. Under the item's catalog lock,
it is refused while deletes are paused (``catalog.settings``), and SPEC §5
conditions 3–6 are checked against the catalog as it is then; the
copies it counts are confirmed on their backends (``workers.confirm``; one
that fails is marked damaged and the delete refused); under the lock again
the location is marked ``DE`` (by the first job to run; the others find the
decision taken, and go on while the copies it counted still count); then
its files are removed (never through a link), then their rows, and with the
last row the location.

Repairs: a job copies the bad files of a damaged copy again, each from the
most preferred copy where it is good, validated; the copy counts again once
every file is good (``repair_location``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import peewee as pw

from catalog.copying import (
    CopyFacts,
    Entry,
    Place,
    Proven,
    Record,
    Recorded,
    Start,
    copy_facts,
    copy_reason,
    finish_copies,
    record_copies,
    start_copies,
)
from catalog.integrity import (
    bad_files,
    content_of,
    good_holders,
    lost_files,
    record_bad,
    record_good,
    settle,
    still_current,
)
from catalog.models import (
    ITEM_STATUS_DONE,
    STATUS_DAMAGED,
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
    location_on,
    locked_item,
    mark_files_to_delete,
    ok_locations,
    open_lock_count,
)
from catalog.settings import deletes_paused
from connectors.base import (
    BatchedLanding,
    Connector,
    Landing,
    ObjectInfo,
    concurrent_writes,
    copy_run,
    delete_all,
    landing,
    make_root,
)
from connectors.errors import ChecksumMismatch, ConnectorError, InvalidPath, ObjectNotFound
from connectors.transfer import UNKNOWN, Expected, copy_file
from workers.confirm import confirm_copy
from workers.errors import ItemChangedError, LocationGoneError, NoSourceError
from workers.verify import (
    FileProblem,
    VerifyReport,
    object_path,
    read_and_compare,
    verify_files,
)

logger = logging.getLogger(__name__)

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
#: The history's name for the removal of a removed item's copy.
REMOVE_ACTION = "remove"


class DeleteCheck(NamedTuple):
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


#: Statuses of a location that an access lock may be taken on: a copy that
#: counts, and, for its verification or repair, a damaged one.
READABLE = (STATUS_DONE,)
READABLE_OR_DAMAGED = (STATUS_DONE, STATUS_DAMAGED)


def open_access_log(
    location: StorageLocation,
    reason: str,
    *,
    expires: datetime | None = None,
    statuses: Sequence[str] = READABLE,
) -> AccessLog:
    """Lock ``location`` with an open access log: it is not deleted until the log closes.

    Taken under the item's catalog lock, after checking that the location's
    status is still one of ``statuses``: a delete decided a moment earlier
    raises ``LocationGoneError``.
    """
    with locked_item(location.file_storage_id):
        current = StorageLocation.get_or_none(StorageLocation.id == location.id)
        if current is None or current.status not in statuses:
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
    location: StorageLocation,
    reason: str,
    *,
    expires: datetime | None = None,
    statuses: Sequence[str] = READABLE,
) -> Iterator[AccessLog]:
    """``location`` locked by an open access log for the block (``open_access_log``).

    ``expires``: when the lock ends by itself should the block never end (a
    worker killed meanwhile); the scan closes it then.
    """
    log = open_access_log(location, reason, expires=expires, statuses=statuses)
    try:
        yield log
    finally:
        close_access_log(log)


class CopyReport(NamedTuple):
    """What a copy job did: files copied and proven, files found recorded already."""

    copied: int = 0
    already_there: int = 0
    #: Bytes of the files copied.
    bytes: int = 0
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
    copied from each item's preferred ``OK`` location as the catalog says
    now: small files side by side where the destination takes several
    writes at once (``_copy_side_by_side``), the others in order. When a
    file fails, those copied before it (or beside it) are recorded, then
    the error is raised: a retry carries on from what was not recorded.
    An item with no ``OK`` copy to copy from, or whose source went
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
    recorded = Recorded(set(), [])
    batch = Landing(landed=False)
    try:
        # The sources stay locked until the copies are recorded. The files
        # land (durable) together where the destination can do that.
        with landing(destination) as batch:
            sources = {plan.item.id: connectors(plan.source.connector_name) for plan in started}
            rest = started
            # A batched landing is per thread: such a destination keeps to one.
            if not destination.can(BatchedLanding) and concurrent_writes(destination) > 1:
                rest = _copy_side_by_side(started, sources, destination, target, actor, proven)
            for plan in rest:
                source = sources[plan.item.id]
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
    if recorded.changed:
        item_id, path = recorded.changed[0]
        problem = problem or ItemChangedError(
            f"item {item_id}: {path!r} changed while it was copied; copying the new version"
        )
    if problem is not None:
        raise problem
    return CopyReport(
        copied=sum(len(proven[item_id]) for item_id in recorded.items),
        already_there=already_there,
        bytes=sum(done.size for item_id in recorded.items for done in proven[item_id]),
        not_wanted=not_wanted + len(started) - len(recorded.items),
    )


def _copy_side_by_side(
    plans: Sequence[_Plan],
    sources: dict[int, Connector],
    destination: Connector,
    target: str,
    actor: str,
    proven: dict[int, list[Proven]],
) -> list[_Plan]:
    """Copy the small files of ``plans`` side by side; the plans with larger files are returned.

    A store answers each write after a round trip: one file after another,
    a job of 125 small files waits 125 of them (12.5 s at 100 ms); side by
    side, a few (``benchmarks/LATENCY.md``). The bytes move on the process's
    transfer threads; the catalog is written here, on the job's thread. The
    files proven are added to ``proven`` whatever happens to the others.
    After a failure no further file is begun; those under way end, then the
    first failure is raised, as one after another would (a retry carries on
    from what was not recorded). Larger files keep to one at a time (an S3
    upload of one sends its parts side by side already).
    """
    small = [
        (plan, entry)
        for plan in plans
        for entry in plan.todo
        if entry.size is not None and entry.size <= DEFAULT_SIDE_BY_SIDE_MAX_SIZE
    ]
    if len(small) < 2:
        return list(plans)
    stop = threading.Event()

    def attempt(plan: _Plan, entry: Entry) -> tuple[float, Proven | Exception | None]:
        """(seconds a failure took, the file proven, its failure, or None: not begun)."""
        if stop.is_set():
            return 0.0, None
        began = time.monotonic()
        try:
            return 0.0, _transfer(plan, entry, sources[plan.item.id], destination)
        except Exception as exc:
            stop.set()
            return time.monotonic() - began, exc

    pool = _transfer_pool()
    futures = [pool.submit(attempt, plan, entry) for plan, entry in small]
    try:
        wait(futures)
    except BaseException:
        stop.set()  # the job is being stopped: begin nothing more
        raise
    problem: Exception | None = None
    for (plan, entry), future in zip(small, futures, strict=True):
        seconds, outcome = future.result()
        if isinstance(outcome, Exception):
            _note_failure(plan, entry, outcome, seconds, target, actor)
            _judge_source(plan, entry, sources[plan.item.id], outcome)
            _judge_destination(plan.item.id, plan.location.id, entry, outcome)
            problem = problem or outcome
        elif outcome is not None:
            proven[plan.item.id].append(outcome)
    if problem is not None:
        raise problem
    sent = {id(entry) for _, entry in small}
    rest = []
    for plan in plans:
        left = [entry for entry in plan.todo if id(entry) not in sent]
        if left:
            rest.append(_Plan(plan.item, plan.location, plan.source, left, plan.present))
    return rest


#: Paths one statement names at most, for a job that names its files (a job
#: from another service may name more than a statement takes).
DEFAULT_NAMED_PATHS = 10_000
#: Files up to this size go side by side (``_copy_side_by_side``): their
#: bytes are held in memory by the write, so at most this times the
#: connector's ``concurrent_writes`` per process.
DEFAULT_SIDE_BY_SIDE_MAX_SIZE = 2 * 1024 * 1024
#: Threads of a worker process that move the bytes of small files side by
#: side, shared by its jobs; each connector bounds its own requests besides.
DEFAULT_TRANSFER_THREADS = 64
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _transfer_pool() -> ThreadPoolExecutor:
    """The process's transfer threads, started on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(DEFAULT_TRANSFER_THREADS, thread_name_prefix="transfer")
        return _pool


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
    try:
        return _transfer(plan, entry, source, destination)
    except Exception as exc:
        _note_failure(plan, entry, exc, time.monotonic() - began, target, actor)
        _judge_source(plan, entry, source, exc)
        _judge_destination(plan.item.id, plan.location.id, entry, exc)
        raise


def _note_failure(
    plan: _Plan, entry: Entry, exc: Exception, seconds: float, target: str, actor: str
) -> None:
    """A permanent failure to copy a file goes to the history (and is marked as recorded there)."""
    if getattr(exc, "transient", True):
        return
    _history(
        actor,
        "copy",
        FileStorage(id=plan.item.id, key=plan.item.key),
        plan.source.connector_name,
        target,
        entry.path,
        time.monotonic() - seconds,
        exc,
    )
    exc.recorded = True  # type: ignore[attr-defined]


#: Errors of a copy that may say its source is bad (or the destination, or
#: the bytes on the way): a missing object, other bytes, a link leading out
#: of the root. Reading the source again on its own tells which.
SOURCE_EVIDENCE = (ChecksumMismatch, ObjectNotFound, InvalidPath)


def _judge_source(plan: _Plan, entry: Entry, source: Connector, exc: Exception) -> None:
    """After a copy found its source's bytes not the catalog's (or none): is the source bad?

    The bytes read on the way may have been damaged there, or the write's:
    the source is read again on its own (as a repair does, ``_repair_one``),
    and only that answer is evidence. A source found bad is recorded so
    (damaged: it no longer counts, for a delete or as the next try's
    source); an error reaching it concludes nothing.
    """
    if not isinstance(exc, SOURCE_EVIDENCE):
        return
    try:
        problem, _ = read_and_compare(source, object_path(plan.source, entry.path), entry)  # type: ignore[arg-type]
    except ConnectorError:
        return
    if problem is None:
        return
    now = utcnow()
    with locked_item(plan.item.id):
        here = StorageLocation.get_or_none(StorageLocation.id == plan.source.id)
        if here is None or here.status not in READABLE_OR_DAMAGED:
            return
        if entry.id not in still_current({entry.id: content_of(entry)}):  # type: ignore[arg-type]
            return  # a new version meanwhile: the old hashes judge nothing
        record_bad(here.id, [(entry.id, problem)], now=now)
        settle(here.id, now=now)
    logger.warning(
        "copy of %s to %s: its source on %s is bad (%s); marked damaged",
        entry.path,
        plan.location.connector_name,
        plan.source.connector_name,
        problem,
    )


#: The problem of a file whose object a failed write replaced, then removed.
OVERWRITTEN = "missing: replaced by another job's write of it, which failed validation"


def _judge_destination(item_id: int, location_id: int, entry: Any, exc: Exception) -> None:
    """After a write that failed validation, its object removed: the file is not there now.

    Delivery is at least once: a duplicate or redelivered job of the same
    file may have run beside this one, and copied the file there and
    recorded it good meanwhile. This job's write replaced those bytes and
    its ``ChecksumMismatch`` removed them (``copy_file``), so a good row of
    the file there is no longer true. Under the item's lock it is undone:
    on a copy under way the row goes (the file is copied again), on a copy
    that counts or a damaged one it becomes bad (the copy is repaired). No
    row, or a bad one: nothing to undo. Any other error wrote nothing that
    replaced the object, or concludes nothing.
    """
    if not isinstance(exc, ChecksumMismatch):
        return
    now = utcnow()
    with locked_item(item_id):
        here = StorageLocation.get_or_none(StorageLocation.id == location_id)
        if here is None:
            return
        good = LocationFile.get_or_none(
            (LocationFile.storage_location == location_id)
            & (LocationFile.referenced_path == entry.id)
            & LocationFile.problem.is_null()
        )
        if good is None:
            return
        if here.status in (STATUS_PREPARING, STATUS_UPLOADING):
            LocationFile.delete().where(LocationFile.id == good.id).execute()
        elif here.status in READABLE_OR_DAMAGED:
            record_bad(location_id, [(entry.id, OVERWRITTEN)], now=now)
            settle(location_id, now=now)
        else:
            return  # being deleted: its delete removes it anyway
    logger.warning(
        "%s on %s was recorded good by another job; a duplicate's failed write removed it: %s",
        entry.path,
        here.connector_name,
        exc,
    )


def _transfer(plan: _Plan, entry: Entry, source: Connector, destination: Connector) -> Proven:
    """Copy one file of ``plan`` and prove it; touches no catalog (runs on any thread)."""
    began = time.monotonic()
    where = object_path(plan.location, entry.path)
    result = copy_file(
        source,
        object_path(plan.source, entry.path),
        destination,
        where,
        expected=Expected(entry.size, entry.md5, entry.crc32c, entry.awss3etag, entry.chunk_size),
        present=plan.present.get(where) if plan.present is not None else UNKNOWN,
    )
    elapsed = int((time.monotonic() - began) * 1000)
    etag = None
    computed = result.hashes
    if computed is not None and computed.awss3etag and computed.chunk_size != entry.chunk_size:
        # Uploaded in parts of another size than the catalog's etag was
        # computed with (a file too large for 10,000 of them): the etag of
        # these bytes at the parts used, so the store's ETag proves them later.
        etag = (computed.awss3etag, computed.chunk_size)
    return Proven(entry, result.validated_by, result.size, elapsed, etag)


def _reason(target: str, todo: Sequence[Entry]) -> str:
    """Why a source is locked: the access log's reason."""
    return copy_reason(target) + files_label([entry.path for entry in todo])


def _already_there(destination: Connector, paths: Sequence[str]) -> dict[str, ObjectInfo] | None:
    """What ``destination`` holds at ``paths``, from one listing; None to ask per file.

    A copy of several files lists their common prefix once instead of asking
    about each file before writing it (a request per file on a store), which
    is what keeps a retried job from copying again what is there already.
    A destination root never made is made first (``make_root``): nothing is
    there yet. Elsewhere a missing root is no answer (``BackendUnavailable``).
    """
    if len(paths) < 2:
        return None
    # Character by character: "a/f01" and "a/f02" share "a/f0", a narrower listing.
    first, last = min(paths), max(paths)
    length = next(
        (n for n, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first)
    )
    prefix = first[:length]
    # A listing prefix ending in a "." or ".." name ("a/.bashrc", "a/.profile")
    # is no path a connector takes: list its folder instead.
    folder, _, name = prefix.rpartition("/")
    if name in (".", ".."):
        prefix = f"{folder}/" if folder else ""
    wanted = set(paths)
    # A copy's look, on the write path: a root never made is made (empty) first.
    make_root(destination)
    return {info.path: info for info in destination.list(prefix) if info.path in wanted}


def finish_location(item_id: int, target: str) -> bool:
    """Make the item's location on ``target`` ``OK`` if every file is recorded there.

    Also what finishes a copy of an item without files. Returns whether the
    location is ``OK`` now.
    """
    with locked_item(item_id) as item:
        location = location_on(item_id, target)
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
    """Verify files ``paths`` (None: all) of the item's copy on ``connector_name``.

    A copy that counts (``OK``) or a damaged one (``DM``: found whole again,
    it counts again). The copy is locked meanwhile (no delete under it;
    ``lock_expires`` as in ``access_lock``). None when there is no such copy
    there (any more): nothing to verify.
    """
    location = location_on(item_id, connector_name)
    if location is None or location.status not in READABLE_OR_DAMAGED:
        return None
    entries = ReferencedPath.select().where(ReferencedPath.file_storage == item_id)
    if paths is not None:
        entries = entries.where(ReferencedPath.path.in_(list(paths)))
    try:
        with access_lock(location, "verify", expires=lock_expires, statuses=READABLE_OR_DAMAGED):
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
    location: StorageLocation, check: DeleteCheck, counted: Sequence[StorageLocation]
) -> str | None:
    """Why SPEC §5 conditions 3–6 forbid deleting ``location`` now; None if they allow it.

    ``counted`` are the item's copies that count (``OK``, on a configured
    connector: ``counted_copies``), ``location`` among them if it counts.
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
    if len(counted) <= check.min_other_copies:
        return (
            f"{len(counted)} OK copies, counting this one; "
            f"more than {check.min_other_copies} needed"
        )
    if preferred(counted, check.preference).id == location.id:
        return "it is the preferred copy"
    return None


def counted_copies(item_id: int, check: DeleteCheck) -> list[StorageLocation]:
    """The item's copies that count: ``OK``, on a configured connector (one we can confirm)."""
    configured = set(check.preference)
    return [loc for loc in ok_locations(item_id) if loc.connector_name in configured]


class _Deciders:
    """Per process, one thread at a time decides the delete of a copy (``delete_files``).

    Until a delete is decided, every job of it that starts would confirm
    every file of the item: with eight threads, the first eight jobs of an
    item of 50,000 files each listed the other copy whole and held all its
    files' rows (one worker process: 550 MB and 31.6 s; 102 MB and 12.8 s
    with this, ``benchmarks/bench_delete.py``). The jobs of one copy that start
    before it is decided wait here for the first; after it, they find the
    location ``DE`` and confirm only their own files. Only the order
    changes: every decision is still made under the item's catalog lock.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[int, str], tuple[threading.Lock, list[int]]] = {}

    @contextmanager
    def __call__(self, item_id: int, connector_name: str) -> Iterator[None]:
        location = location_on(item_id, connector_name)
        if location is not None and location.status == STATUS_DELETING:
            yield  # decided: its jobs go side by side
            return
        key = (item_id, connector_name)
        with self._guard:
            lock, users = self._locks.setdefault(key, (threading.Lock(), [0]))
            users[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._guard:
                users[0] -= 1
                if not users[0]:
                    del self._locks[key]


_deciding = _Deciders()


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

    The first job of a delete to run decides (the others of the process
    wait for it, ``_Deciders``): under the item's catalog lock it re-checks
    the rules against the catalog as it is now, and lists the other copies
    it counts. Every job then confirms on their backends
    (``workers.confirm``) that those copies hold the files it is about to
    remove (the first job: every file of the item), and decides under the
    lock again:

    - a copy that fails is marked damaged (repaired later); the first job
      refuses the delete, and says why;
    - the first job, the rules still allowing it and the copies counted
      still those confirmed, marks the location ``DE`` and each of its files
      still to remove;
    - a later job goes on while enough of the copies it confirmed still
      count; else the delete stops there: the location becomes damaged, the
      files removed so far bad, for repair to bring back.

    Then the files go (never through a symbolic link), then their rows, and
    with the last row the location. Returns ``deleted`` (the location is
    gone), ``files deleted`` (others are left to other jobs), ``refused``
    (the rules or a confirmation forbid it now: in the history with the
    reason) or ``gone`` (nothing to delete). A duplicate job removes nothing
    twice that matters: deleting a missing object is not an error. A failure
    for good is recorded in the history before it is raised.
    """
    began = time.monotonic()
    with _deciding(item_id, connector_name):
        decided = _confirm_and_decide(item_id, connector_name, paths, check, connectors, actor)
    if isinstance(decided, str):
        return decided
    item, location, found = decided
    try:
        delete_all(
            connectors(connector_name),
            [object_path(location, entry.path) for entry in found],
            within=location.url.rstrip("/"),
        )
    except Exception as exc:
        if not getattr(exc, "transient", False):
            _history(actor, "delete", item, None, connector_name, _label(paths, False), began, exc)
            exc.recorded = True  # type: ignore[attr-defined]
        raise
    with locked_item(item_id) as current:
        here = StorageLocation.get_or_none(StorageLocation.id == location.id)
        if here is not None and here.status != STATUS_DELETING:
            # The delete was stopped (``_stop``) while these files went, the
            # copy maybe repaired since: they are missing there now, whatever
            # their rows say (a file without a row would count as good).
            now = utcnow()
            record_bad(
                here.id,
                [(entry.id, "missing: removed by a delete that was stopped") for entry in found],
                now=now,
            )
            settle(here.id, now=now)
            _history(
                actor,
                "delete",
                current or item,
                None,
                connector_name,
                _label(paths, False),
                began,
                None,
            )
            return FILES_DELETED
        gone = forget_files(location.id, [entry.id for entry in found])
        if not gone:
            # Progress: a delete whose location stops moving is resumed by the scan.
            StorageLocation.update(last_update=utcnow()).where(
                StorageLocation.id == location.id
            ).execute()
        _history(
            actor, "delete", current or item, None, connector_name, _label(paths, gone), began, None
        )
    return DELETED if gone else FILES_DELETED


def _confirm_and_decide(
    item_id: int,
    connector_name: str,
    paths: Sequence[str] | None,
    check: DeleteCheck,
    connectors: ConnectorLookup,
    actor: str,
) -> str | tuple[FileStorage, StorageLocation, list[ReferencedPath]]:
    """``delete_files`` up to the removal: the outcome, or what may go now and from where."""
    with locked_item(item_id) as item:
        location = location_on(item_id, connector_name)
        if item is None or location is None:
            return GONE
        paused = deletes_paused()
        if paused is not None:
            # Whatever was queued before the pause: nothing is removed while it lasts.
            _refuse(actor, item, connector_name, paused.describe())
            return REFUSED
        key = item.key
        counted = counted_copies(item_id, check)
        if location.status != STATUS_DELETING:
            reason = why_not_delete(location, check, counted)
            if reason is not None:
                _refuse(actor, item, connector_name, reason)
                return REFUSED
        elif not LocationFile.select().where(LocationFile.storage_location == location.id).exists():
            # Marked DE elsewhere (an import, an earlier version): no row says
            # what is left, so every file is, or the first job to end would
            # take the location while others still have files to remove.
            mark_files_to_delete(location.id, item_id, now=utcnow())
        others = [loc for loc in counted if loc.id != location.id]
    item = FileStorage(id=item_id, key=key)
    entries = ReferencedPath.select().where(
        (ReferencedPath.file_storage == item_id) & ~ReferencedPath.path.endswith("/")
    )
    # The first job confirms every file (it decides for the whole copy),
    # a later one the files it removes: only those are read, so the jobs of
    # an item of many files do not each read all of them (50,000 files in
    # 50 jobs: 120 s when each did, and looked each file up in a set of its
    # paths built anew; 57-65 s after). Backends are read outside the catalog
    # lock (on SQLite it is the whole catalog's); an error reaching one is
    # raised: nothing is concluded.
    if location.status == STATUS_DELETING and paths is not None:
        named = sorted(set(paths))
        found = sorted(
            (
                entry
                for start in range(0, len(named), DEFAULT_NAMED_PATHS)
                for entry in entries.where(
                    ReferencedPath.path.in_(named[start : start + DEFAULT_NAMED_PATHS])
                )
            ),
            key=lambda entry: entry.path,
        )
        confirming = found
    else:
        every = list(entries.order_by(ReferencedPath.path))
        wanted = None if paths is None else set(paths)
        found = every if wanted is None else [entry for entry in every if entry.path in wanted]
        confirming = found if location.status == STATUS_DELETING else every
    problems = {
        other.id: confirm_copy(other, connectors(other.connector_name), confirming)
        for other in others
    }
    outcome = _decide(item, location, others, problems, confirming, check, actor)
    if outcome is not None:
        return outcome
    # On a DE location the rows are the files still to remove: a file without
    # one went already (this is a duplicate job), and by the time this job
    # removed it again its path may hold a new copy's file.
    return item, location, _still_to_remove(location.id, found)


def _still_to_remove(location_id: int, found: Sequence[ReferencedPath]) -> list[ReferencedPath]:
    """Those of ``found`` that still have a row on the ``DE`` location (not removed yet)."""
    ids = [entry.id for entry in found]
    left: set[int] = set()
    for start in range(0, len(ids), DEFAULT_NAMED_PATHS):
        left.update(
            path_id
            for (path_id,) in LocationFile.select(LocationFile.referenced_path)
            .where(
                (LocationFile.storage_location == location_id)
                & LocationFile.referenced_path.in_(ids[start : start + DEFAULT_NAMED_PATHS])
            )
            .tuples()
        )
    return [entry for entry in found if entry.id in left]


def _refuse(
    actor: str, item: FileStorage, connector_name: str, reason: str, *, action: str = "delete"
) -> None:
    Action.create(
        actor=actor,
        action=action,
        item_key=item.key,
        file_storage=item,
        target=connector_name,
        result=REFUSED,
        error=reason,
    )


def _decide(
    item: FileStorage,
    location: StorageLocation,
    others: Sequence[StorageLocation],
    problems: dict[int, list[FileProblem]],
    entries: Sequence[ReferencedPath],
    check: DeleteCheck,
    actor: str,
) -> str | None:
    """Under the item's lock: record what the confirmation found, and decide.

    None when the files may go now (the location is ``DE``), else the
    outcome (``refused``, ``gone``).
    """
    paths = {entry.path: entry.id for entry in entries}
    now = utcnow()
    with locked_item(item.id) as current:
        if current is None:
            return GONE
        # A copy deleted, or being deleted, since it was confirmed (another
        # delete of the item, at once) lacks its files for that reason: it is
        # not damaged, it just no longer counts (``counted_copies`` below).
        still = {
            loc.id: loc.status
            for loc in StorageLocation.select(StorageLocation.id, StorageLocation.status).where(
                StorageLocation.id.in_([other.id for other in others])
            )
        }
        # A file of which a new version was registered since its hashes were
        # read: what the confirmation found of it is no evidence (the copy
        # stays unconfirmed, not damaged).
        judged = {paths[p.path] for other in others for p in problems[other.id]}
        content = {entry.id: content_of(entry) for entry in entries if entry.id in judged}
        evidence = still_current(content) if content else set()
        evident = {
            other.id: [p for p in problems[other.id] if paths[p.path] in evidence]
            for other in others
            if still.get(other.id) in (STATUS_DONE, STATUS_DAMAGED)
        }
        damaged = [other for other in others if evident.get(other.id)]
        for other in damaged:
            record_bad(other.id, [(paths[p.path], p.problem) for p in evident[other.id]], now=now)
            settle(other.id, now=now)
        here = StorageLocation.get_or_none(StorageLocation.id == location.id)
        if here is None:
            return GONE
        counted = counted_copies(item.id, check)
        confirmed = {other.id for other in others if not problems[other.id]}
        if here.status == STATUS_DELETING:
            # Decided already (by this delete's first job, maybe just now).
            holding = [loc for loc in counted if loc.id in confirmed]
            if len(holding) >= max(check.min_other_copies, 1):
                return None
            _stop(current, here, len(holding), actor, now=now)
            return REFUSED
        if damaged:
            first = damaged[0]
            found = evident[first.id]
            _refuse(
                actor,
                current,
                location.connector_name,
                f"the copy on {first.connector_name} is damaged: {found[0].path}: "
                f"{found[0].problem}"
                + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
                + "; it will be repaired",
            )
            return REFUSED
        reason = why_not_delete(here, check, counted)
        if current.status != ITEM_STATUS_DONE:
            # SPEC §5 condition 2, which the scan judged: the producer may have
            # taken the item up again since (only a finished item is policy's).
            reason = f"the item's status is {current.status!r}, not OK"
        unconfirmed = [loc for loc in counted if loc.id != here.id and loc.id not in confirmed]
        if reason is None and unconfirmed:
            raise LocationGoneError(
                f"the copy on {unconfirmed[0].connector_name} came to count while the others "
                "were confirmed; deciding again"
            )
        if reason is not None:
            _refuse(actor, current, location.connector_name, reason)
            return REFUSED
        StorageLocation.update(status=STATUS_DELETING, last_update=now, files_recorded=False).where(
            StorageLocation.id == here.id
        ).execute()
        mark_files_to_delete(here.id, item.id, now=now)
    return None


def _stop(
    item: FileStorage, location: StorageLocation, holding: int, actor: str, *, now: datetime
) -> None:
    """Stop a delete under way whose copies no longer hold enough: the location is damaged.

    The files removed so far are bad there, for repair to bring back.
    """
    removed = [
        (path_id, "missing: removed by a delete that was stopped")
        for (path_id,) in ReferencedPath.select(ReferencedPath.id)
        .where(
            (ReferencedPath.file_storage == item.id)
            & ~ReferencedPath.path.endswith("/")
            & ~fn_exists_row(location.id)
        )
        .tuples()
    ]
    StorageLocation.update(status=STATUS_DAMAGED).where(StorageLocation.id == location.id).execute()
    record_bad(location.id, removed, now=now)
    settle(location.id, now=now)
    _refuse(
        actor,
        item,
        location.connector_name,
        f"stopped: only {holding} other copy(ies) still hold its files; "
        f"{len(removed)} file(s) removed so far are to be repaired",
    )


def fn_exists_row(location_id: int) -> pw.Expression:
    """A row of ``location_id`` exists for the ``ReferencedPath`` of the outer query."""
    return pw.fn.EXISTS(
        LocationFile.select(LocationFile.id).where(
            (LocationFile.storage_location == location_id)
            & (LocationFile.referenced_path == ReferencedPath.id)
        )
    )


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


@dataclass
class RepairReport:
    """What a repair did: files copied again (or found good after all), and what is left."""

    repaired: int = 0
    bytes: int = 0
    #: Files of the location still bad: no copy anywhere holds them good (lost).
    unrepairable: list[str] = field(default_factory=list)
    #: The location's status after (``OK`` when whole again).
    status: str | None = None


@dataclass
class _Fix:
    """One bad file of a damaged location, and where it is good."""

    entry: ReferencedPath
    holders: list[StorageLocation]


def repair_location(
    item_id: int,
    connector_name: str,
    *,
    connectors: ConnectorLookup,
    preference: Sequence[str],
    actor: str = "worker",
    lock_expires: datetime | None = None,
) -> RepairReport:
    """Copy the bad files of the item's damaged copy on ``connector_name`` again, validated.

    Each bad file comes from the most preferred configured copy where it is
    good (an ``OK`` copy, or a damaged one where that file is good); the
    sources and the damaged copy are locked meanwhile. What the damaged copy
    holds already with the right hash is kept (``copy_file`` looks first).
    A source whose bytes turn out not to be the catalog's, read twice, is
    marked bad there and the next source tried. Once every file is good the
    location is ``OK`` again. Files good nowhere are left (lost): the report
    names them. Nothing to do when the location is not damaged (any more).
    """
    began = time.monotonic()
    report = RepairReport()
    configured = set(preference)
    with locked_item(item_id) as item:
        location = location_on(item_id, connector_name)
        if item is None or location is None or location.status != STATUS_DAMAGED:
            report.status = None if location is None else str(location.status)
            return report
        bad = bad_files(location.id)
        holders = good_holders(item_id, [b.path_id for b in bad], exclude=location.id)
        entries = {
            entry.id: entry
            for entry in ReferencedPath.select().where(
                ReferencedPath.id.in_([b.path_id for b in bad])
            )
        }
        fixes = []
        for b in bad:
            usable = [h for h in holders[b.path_id] if h.connector_name in configured]
            if usable:
                ranked = sorted(usable, key=lambda h: _rank(h, preference))
                fixes.append(_Fix(entries[b.path_id], ranked))
            else:
                report.unrepairable.append(b.path)
        sources = {h.id: h for fix in fixes for h in fix.holders}
        logs = [
            AccessLog.create(
                storage_location=loc_id, reason=f"repair of {connector_name}", expires=lock_expires
            )
            for loc_id in [location.id, *sources]
        ]
        key = item.key
    destination = connectors(connector_name)
    proven: list[tuple[int, str]] = []
    found_bad: dict[int, list[tuple[int, str]]] = {}
    used: set[str] = set()
    failure: BaseException | None = None
    try:
        for fix in fixes:
            result = _repair_one(fix, location, destination, connectors, found_bad)
            if result is not None:
                used.add(result[0])
                proven.append((fix.entry.id, result[1].validated_by))
                report.bytes += result[1].size
    except BaseException as exc:
        failure = exc
        raise
    finally:
        report.status = _record_repair(
            FileStorage(id=item_id, key=key),
            location,
            fixes,
            proven,
            found_bad,
            logs,
            actor=actor,
            sources=sorted(used),
            began=began,
            report=report,
            failure=failure,
        )
    return report


def _rank(location: StorageLocation, preference: Sequence[str]) -> tuple[int, int, str]:
    """Sources in order: copies that count first, then by preference."""
    order = {name: index for index, name in enumerate(preference)}
    return (
        0 if location.status == STATUS_DONE else 1,
        order.get(location.connector_name, len(order)),
        location.connector_name,
    )


def _repair_one(
    fix: _Fix,
    target: StorageLocation,
    destination: Connector,
    connectors: ConnectorLookup,
    found_bad: dict[int, list[tuple[int, str]]],
) -> tuple[str, Any] | None:
    """Copy one bad file from the first of its holders that really holds it; (source, result).

    None when every holder turned out bad (recorded in ``found_bad``). A
    holder whose backend does not answer is passed over for the next; if
    none answered, the last such error is raised (nothing is concluded).
    """
    entry = fix.entry
    expected = Expected(entry.size, entry.md5, entry.crc32c, entry.awss3etag, entry.chunk_size)
    unanswered: ConnectorError | None = None
    for holder in fix.holders:
        source = connectors(holder.connector_name)
        try:
            result = copy_file(
                source,
                object_path(holder, entry.path),
                destination,
                object_path(target, entry.path),
                expected=expected,
            )
        except SOURCE_EVIDENCE as exc:
            # A concurrent repair of this file may have recorded it good meanwhile.
            _judge_destination(target.file_storage_id, target.id, entry, exc)
            # The source's bytes, read again on their own: the backend's answer decides.
            problem, _ = read_and_compare(source, object_path(holder, entry.path), entry)
            if problem is None:
                raise  # damage on the way, or at the destination: tried again later
            found_bad.setdefault(holder.id, []).append((entry.id, problem))
            logger.warning(
                "repair of %s on %s: the copy on %s is bad too (%s): %s",
                entry.path,
                target.connector_name,
                holder.connector_name,
                problem,
                exc,
            )
            continue
        except ConnectorError as exc:
            if not exc.transient:
                raise
            # An outage of the source (or of the destination, which the next
            # try meets too): no evidence; another good copy may answer.
            logger.warning(
                "repair of %s on %s: the copy on %s did not answer (%s); trying the next",
                entry.path,
                target.connector_name,
                holder.connector_name,
                exc,
            )
            unanswered = exc
            continue
        return holder.connector_name, result
    if unanswered is not None:
        raise unanswered
    return None


def _record_repair(
    item: FileStorage,
    location: StorageLocation,
    fixes: Sequence[_Fix],
    proven: Sequence[tuple[int, str]],
    found_bad: dict[int, list[tuple[int, str]]],
    logs: Sequence[AccessLog],
    *,
    actor: str,
    sources: Sequence[str],
    began: float,
    report: RepairReport,
    failure: BaseException | None,
) -> str | None:
    """Record a repair's outcome in one transaction; the location's status after."""
    now = utcnow()
    with locked_item(item.id) as current:
        AccessLog.update(finished=now).where(
            AccessLog.id.in_([log.id for log in logs]) & AccessLog.finished.is_null()
        ).execute()
        if current is None:
            return None
        # A file changed meanwhile (a new version registered): the bytes read
        # were judged against its old hashes, which proves nothing of it now,
        # neither of the copy made nor of a source found different.
        still = still_current({fix.entry.id: content_of(fix.entry) for fix in fixes})
        for holder_id, problems in found_bad.items():
            record_bad(holder_id, [bad for bad in problems if bad[0] in still], now=now)
            settle(holder_id, now=now)
        here = StorageLocation.get_or_none(StorageLocation.id == location.id)
        if here is None or here.status != STATUS_DAMAGED:
            return None if here is None else str(here.status)
        kept = [(path_id, kind) for path_id, kind in proven if path_id in still]
        record_good(location.id, kept, now=now, verified_at=now)
        status = settle(location.id, now=now)
        report.repaired = len(kept)
        left = [b.path for b in bad_files(location.id)]
        lost = lost_files([item.id]).get(item.id, [])
        error = None
        if failure is not None:
            error = str(failure) or type(failure).__name__
        elif lost:
            error = "LOST: no good copy anywhere of " + files_label(lost)
        elif left:
            error = f"still damaged: {files_label(left)}"
        if kept or error:
            Action.create(
                started=now,
                finished=now,
                actor=actor,
                action="repair",
                item_key=current.key,
                file_storage=current,
                source=", ".join(sources) or None,
                target=location.connector_name,
                path=files_label([fix.entry.path for fix in fixes]) if fixes else None,
                result="ok" if error is None else "failed",
                bytes=report.bytes,
                duration_ms=int((time.monotonic() - began) * 1000),
                error=error,
            )
        if failure is not None:
            failure.recorded = True  # type: ignore[attr-defined]
        report.unrepairable = sorted(set(report.unrepairable) | set(lost))
        return status


def remove_location(
    item_id: int,
    connector_name: str,
    *,
    connectors: Callable[[str], Connector],
    actor: str = "worker",
    removal_delay: int = 0,
    now: datetime | None = None,
) -> str:
    """Delete the copy on ``connector_name`` of a removed item; the item goes with its last copy.

    SPEC §5 "unreferenced items": the producer said the item is gone, so
    every copy goes, the preferred and the last included, without the delete
    rules and without confirming the others. Under the item's lock it is
    refused when the item was restored meanwhile, when deletes are paused,
    or when the copy is locked (an open access log: the scan plans it again
    once the lock is gone), or while the removal grace (``removal_delay``
    days after the removal, at ``now``; negative: never over) lasts, since
    ``restore`` may still bring the item back whole, whoever queued the
    job (a service may enqueue it by hand). The location is marked ``DE`` first, so a job
    that dies midway is finished by a later one. When the item has no
    location left, its catalog rows go too; its history stays, by key.
    Returns ``deleted``, ``refused`` or ``gone``.
    """
    began = time.monotonic()
    judged = now or utcnow()
    now = utcnow()
    with locked_item(item_id) as item:
        location = location_on(item_id, connector_name)
        if item is None or location is None:
            return GONE
        reason = None
        if item.removed is None:
            reason = "the item is no longer removed (restored)"
        elif removal_delay < 0 or not item.removed < judged - timedelta(days=removal_delay):
            reason = (
                f"removed {item.removed:%Y-%m-%dT%H:%M:%SZ}, within the removal grace of "
                f"{removal_delay} day(s)"
            )
        elif (paused := deletes_paused()) is not None:
            reason = paused.describe()
        elif open_lock_count(location.id):
            reason = "the copy is locked (an open access log); it goes once the lock is closed"
        if reason is not None:
            _refuse(actor, item, connector_name, reason, action=REMOVE_ACTION)
            return REFUSED
        if location.status != STATUS_DELETING:
            StorageLocation.update(
                status=STATUS_DELETING, last_update=now, files_recorded=False
            ).where(StorageLocation.id == location.id).execute()
            mark_files_to_delete(location.id, item_id, now=now)
        key = item.key
    entries = list(
        ReferencedPath.select(ReferencedPath.id, ReferencedPath.path).where(
            (ReferencedPath.file_storage == item_id) & ~ReferencedPath.path.endswith("/")
        )
    )
    delete_all(
        connectors(connector_name),
        [object_path(location, entry.path) for entry in entries],
        within=location.url.rstrip("/"),
    )
    with locked_item(item_id) as current:
        forget_files(location.id, [entry.id for entry in entries])
        StorageLocation.delete().where(StorageLocation.id == location.id).execute()
        last = not StorageLocation.select().where(StorageLocation.file_storage == item_id).exists()
        Action.create(
            actor=actor,
            action=REMOVE_ACTION,
            item_key=key,
            file_storage=None if last else current,
            target=connector_name,
            result="ok",
            duration_ms=int((time.monotonic() - began) * 1000),
            error=None,
        )
        if last and current is not None:
            # Its rows go; the history keeps its key (``action.file_storage`` is set null).
            FileStorage.delete().where(FileStorage.id == item_id).execute()
    return DELETED
