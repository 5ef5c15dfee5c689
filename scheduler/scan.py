"""One scheduler pass: plan, then enqueue the due work per file, in batches.

For a due copy the target location is reserved (``PR``) in the catalog and
its files are queued (``workers.messages.copy_jobs``: small files share a job, and so
do small items; a ``finish_copy`` job for an item without files); a reserved location is
never planned again, so repeated scans do not queue a copy twice. Deletes
and verifications are queued per file too, and carry a marker per
location (``workers.broker.Pending``, counting their jobs) until their last job
ends. Copies and deletes under way that stopped moving (their jobs lost)
have what is left of them queued again.
Locations are reserved in a transaction that commits before their jobs are
queued, so a worker never meets a job whose location it cannot see.

The scan decides nothing itself: ``scheduler.planning`` does, with ``now``
passed in; no storage backend is contacted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dramatiq
import peewee as pw

from catalog import sql
from catalog.copying import copy_reason
from catalog.integrity import bad_files
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
from catalog.queries import (
    LOCATION_EXISTS,
    URL_HOLD_REASON,
    URL_OVERLAPS,
    URL_TAKEN,
    close_expired_locks,
    item_files,
    location_on,
    reserve_locations,
    writing,
)
from catalog.settings import deletes_paused, last_audit
from scheduler.planning import DEFAULT_PLAN_RANGE, DueItem, Planner
from scheduler.policy import COPY, DELETE, REMOVE, REPAIR, VERIFY, cutoff
from scheduler.rules import DEFAULT_MAX_REMOVALS_PER_SCAN, ConnectorPolicy
from workers.broker import BrokerUnavailable, Pending, answering, enqueue_many, unreachable
from workers.messages import (
    DEFAULT_JOB_FILES,
    PENDING_AUDIT,
    PENDING_REMOVE,
    PENDING_REPAIR,
    QUEUE_DELETE,
    QUEUE_VERIFY,
    audit_messages,
    copy_jobs,
    delete_messages,
    remove_messages,
    repair_messages,
    verify_messages,
)

#: Items whose work is reserved and queued per transaction and Redis round trip.
DEFAULT_SCAN_BATCH = 1_000
#: A copy (``PR``/``UP``) or delete (``DE``) under way that has made no
#: progress for this long has lost its jobs (a broker that lost its queues,
#: say): its files left are queued again. A duplicate job is harmless.
DEFAULT_RESUME_AFTER = timedelta(hours=1)
#: Stalled locations resumed per batch (read, queued, stamped): after an outage
#: there may be hundreds of thousands, more than one statement can name
#: (SQLite: 250,000 parameters) and more than a scan should hold at once.
DEFAULT_RESUME_BATCH = 10_000

logger = logging.getLogger(__name__)


@dataclass
class ScanReport:
    """What one scan did."""

    items: int = 0
    copies: int = 0
    deletes: int = 0
    verifies: int = 0
    repairs: int = 0
    #: Copies of removed items queued for deletion, and removed items
    #: without a copy left whose catalog rows went.
    removals: int = 0
    forgotten: int = 0
    #: Connectors whose audit was queued (``audit: {interval}``).
    audits: int = 0
    jobs: int = 0
    #: Work already queued or running (not queued again).
    pending: int = 0
    #: Copies refused because the target url is another item's location, or
    #: lies inside or around one.
    conflicts: int = 0
    #: Copies and deletes under way without progress whose files left were queued again.
    resumed: int = 0
    #: Locks of workers that died mid-job, closed as their time ran out.
    unlocked: int = 0
    #: Due deletes held back by a guard (deletes paused, or a cap per scan
    #: reached), by connector: a later scan queues them.
    held: dict[str, int] = field(default_factory=dict)
    #: Due removals held back by their cap per scan (``removal: {max_per_scan}``).
    held_removals: int = 0
    #: Deletes are paused (``catalog.settings``): none was queued.
    deletes_paused: bool = False
    #: Asked to stop (``scan(stop=)``), it ended after a batch, before the rest.
    stopped: bool = False
    plan_seconds: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for an operator."""
        return (
            ("scan stopped before its end: " if self.stopped else "scan: ")
            + f"{self.items} item(s) due; queued {self.jobs} job(s): "
            f"{self.copies} copies, {self.deletes} deletes, {self.verifies} verifications, "
            f"{self.repairs} repairs, {self.removals} removals, {self.audits} audits; "
            f"{self.pending} already queued; {self.resumed} stalled copies resumed; "
            f"{self.unlocked} expired locks closed; "
            + (
                f"{sum(self.held.values())} deletes held back "
                f"({'deletes paused' if self.deletes_paused else 'cap per scan'}); "
                if self.held
                else ""
            )
            + (
                f"{self.held_removals} removals held back (cap per scan); "
                if self.held_removals
                else ""
            )
            + f"{self.seconds:.2f} s"
        )

    def as_json(self) -> dict[str, int | float]:
        return {
            "items": self.items,
            "copies": self.copies,
            "deletes": self.deletes,
            "verifies": self.verifies,
            "repairs": self.repairs,
            "removals": self.removals,
            "forgotten": self.forgotten,
            "audits": self.audits,
            "jobs": self.jobs,
            "pending": self.pending,
            "conflicts": self.conflicts,
            "resumed": self.resumed,
            "unlocked": self.unlocked,
            "held_deletes": dict(sorted(self.held.items())),
            "held_removals": self.held_removals,
            "deletes_paused": self.deletes_paused,
            "stopped": self.stopped,
            "plan_seconds": round(self.plan_seconds, 3),
            "seconds": round(self.seconds, 3),
        }


def scan(
    policies: Mapping[str, ConnectorPolicy],
    database: pw.Database,
    broker: dramatiq.Broker,
    *,
    now: datetime,
    resume_after: timedelta = DEFAULT_RESUME_AFTER,
    removal_delay: int = 0,
    removal_cap: int | None = DEFAULT_MAX_REMOVALS_PER_SCAN,
    job_files: int = DEFAULT_JOB_FILES,
    jobs_multiple: int = 1,
    plan_range: int = DEFAULT_PLAN_RANGE,
    stop: Callable[[], bool] = lambda: False,
) -> ScanReport:
    """Plan ``policies`` at ``now`` and queue every due job; returns what was done.

    Also resumes copies under way that have not moved since ``now - resume_after``,
    and forgets removed items past ``removal_delay`` days that have no copy left.
    At most ``removal_cap`` copies of removed items are queued for removal
    (None: no cap); the rest wait for the next scans.
    Copy jobs are cut as ``copy_jobs`` cuts them with ``max_files=job_files``
    and ``jobs_multiple``. The catalog is planned ``plan_range`` items (by
    id) at a time (``Planner.due_by_ranges``), each range queued before the
    next is planned.

    ``stop`` is asked between batches: once true, the scan ends there
    (``ScanReport.stopped``), every batch it reserved queued, so that a
    process told to end (SIGTERM) or a replica that lost the lease leaves
    no copy reserved without its job and no marker without its jobs.
    """
    cut = {"max_files": job_files, "jobs_multiple": jobs_multiple}
    began = time.monotonic()
    report = ScanReport()
    # First, so the plan sees the locations those locks held as free. Real
    # time: a lock's end is a moment, whatever ``now`` the plan is made at.
    report.unlocked = _close_expired_locks()
    report.forgotten = _forget_removed(database, cutoff(now, removal_delay))
    planner = Planner(policies, database, removal_delay=removal_delay)
    paused = deletes_paused()
    report.deletes_paused = paused is not None
    budget = DeleteBudget(policies, paused=report.deletes_paused, removal_cap=removal_cap)
    # Before this scan reserves anything: its own reservations are not stalled.
    for resumed, stalled in _resume_stale(
        database, now - resume_after, report, budget, cut, batch=DEFAULT_RESUME_BATCH
    ):
        if stop():
            report.stopped = True
            break
        with answering(broker, what=f"{report.jobs} job(s) were queued before it stopped"):
            report.jobs += enqueue_many(broker, resumed)
        # Stamped once queued (a failed enqueue leaves them stalled for the
        # next scan), with the real time: the jobs went out now, whatever
        # ``now`` says.
        StorageLocation.update(last_update=utcnow()).where(
            StorageLocation.id.in_(stalled)
        ).execute()
    pending = Pending(broker)
    # A range of items planned at a time: what the scan holds stays bounded
    # however many are due (a million due items held at once took 190 MB).
    planned = time.monotonic()
    for due in [] if report.stopped else planner.due_by_ranges(now=now, width=plan_range):
        report.plan_seconds += time.monotonic() - planned
        report.items += len(due)
        if not _queue_due(database, broker, due, report, budget, pending, cut, stop):
            report.stopped = True
            break
        planned = time.monotonic()
    report.plan_seconds += time.monotonic() - planned
    if report.stopped:
        report.seconds = time.monotonic() - began
        return report
    with answering(broker, what=f"{report.jobs} job(s) were queued before it stopped"):
        audits, claimed = _due_audits(policies, pending, now=now)
        try:
            report.jobs += enqueue_many(broker, audits)
        except unreachable():
            # Not queued: its marker must not hold the next scan's back.
            with contextlib.suppress(*unreachable()):
                pending.release_many(claimed)
            raise
        report.audits = len(audits)
    report.held = budget.held
    report.held_removals = budget.held_removals
    if budget.held_removals:
        logger.warning(
            "%d due removal(s) held back: the cap of %s per scan (removal: {max_per_scan}) "
            "was reached; the next scans queue them in turn",
            budget.held_removals,
            removal_cap,
        )
    for connector, count in sorted(budget.held.items()):
        logger.warning(
            "%s: %d due delete(s) held back: %s",
            connector,
            count,
            paused.describe() if paused is not None else budget.describe(connector),
        )
    report.seconds = time.monotonic() - began
    return report


def _queue_due(
    database: pw.Database,
    broker: dramatiq.Broker,
    due: Sequence[DueItem],
    report: ScanReport,
    budget: DeleteBudget,
    pending: Pending,
    cut: Mapping[str, int],
    stop: Callable[[], bool],
) -> bool:
    """Reserve and queue the work of ``due``, in batches (``DEFAULT_SCAN_BATCH`` items).

    False when ``stop()`` ended it before a batch (those before all queued).
    """
    for batch in _chunks(due, DEFAULT_SCAN_BATCH):
        if stop():
            return False
        messages, reserved = _reserve_copies(database, batch, report, cut)
        claimed: list[str] = []
        try:
            with answering(broker, what=f"{report.jobs} job(s) were queued before it stopped"):
                others, claimed = _claim_others(pending, batch, report, budget)
                report.jobs += enqueue_many(broker, [*messages, *others])
        except BrokerUnavailable:
            # Nothing stays reserved that was not queued: the next scan plans it again.
            _unreserve(database, reserved)
            with contextlib.suppress(*unreachable()):
                for key in claimed:
                    pending.release(key)
            raise
    return True


class DeleteBudget:
    """What the deletion guards let one scan queue, per connector.

    Deletes paused: nothing. Else a connector's delete rule caps the items
    (``max_per_scan``) and their bytes (``max_bytes_per_scan``) a scan
    queues; a delete that would pass either cap is held back, counted in
    ``held``, and a later scan queues it. The first delete of a scan is
    always let through, however large, so a cap never holds an item back
    for good.
    """

    def __init__(
        self,
        policies: Mapping[str, ConnectorPolicy],
        *,
        paused: bool,
        removal_cap: int | None = None,
    ) -> None:
        self.paused = paused
        self.removal_cap = removal_cap
        self.removals = 0
        self.held_removals = 0
        self.caps = {
            name: (policy.delete.max_per_scan, policy.delete.max_bytes_per_scan)
            for name, policy in policies.items()
            if policy.delete is not None
        }
        self.items: dict[str, int] = {}
        self.bytes: dict[str, int] = {}
        self.held: dict[str, int] = {}

    def take(self, connector: str, size: int) -> bool:
        """Whether one more delete of ``size`` bytes from ``connector`` may be queued now."""
        items, total = self.items.get(connector, 0), self.bytes.get(connector, 0)
        max_items, max_bytes = self.caps.get(connector, (None, None))
        over = (
            self.paused
            or (max_items is not None and items + 1 > max_items)
            or (max_bytes is not None and items > 0 and total + size > max_bytes)
        )
        if over:
            self.held[connector] = self.held.get(connector, 0) + 1
            return False
        self.items[connector] = items + 1
        self.bytes[connector] = total + size
        return True

    def take_removal(self) -> bool:
        """Whether one more copy of a removed item may be queued for removal now."""
        if self.removal_cap is not None and self.removals + 1 > self.removal_cap:
            self.held_removals += 1
            return False
        self.removals += 1
        return True

    def describe(self, connector: str) -> str:
        max_items, max_bytes = self.caps.get(connector, (None, None))
        caps = [
            f"{max_items} item(s)" if max_items is not None else "",
            f"{max_bytes} bytes" if max_bytes is not None else "",
        ]
        return (
            f"its cap per scan ({' and '.join(cap for cap in caps if cap)}) was reached; "
            "the next scans queue them in turn"
        )


def _due_audits(
    policies: Mapping[str, ConnectorPolicy], pending: Pending, *, now: datetime
) -> tuple[list[dramatiq.Message], list[str]]:
    """The audit jobs due (``audit: {interval}``), one a connector, and the markers claimed.

    Due when the connector's last audit finished more than ``interval`` days
    before ``now`` (or never); its marker keeps a second one from being
    queued while one is queued or running: never two at once.
    """
    due = []
    for name, policy in sorted(policies.items()):
        if policy.audit is None:
            continue
        last = last_audit(name)
        limit = cutoff(now, policy.audit.interval)
        if last is not None and (limit is None or last >= limit):
            continue
        due.append(name)
    if not due:
        return [], []
    keys = [Pending.key(PENDING_AUDIT, 0, name) for name in due]
    fresh = pending.claim(keys)
    return [
        job for name, new in zip(due, fresh, strict=True) if new for job in audit_messages(name)
    ], [key for key, new in zip(keys, fresh, strict=True) if new]


def _forget_removed(database: pw.Database, before: datetime | None) -> int:
    """Drop removed items past the grace that have no location left; their history stays.

    The usual way an item goes is with its last copy (``workers.operations.
    remove_location``); this takes those that had none, or lost their last
    one otherwise. How many went.
    """
    if before is None:
        return 0
    with writing(database):
        gone = list(
            FileStorage.select(FileStorage.id, FileStorage.key).where(
                (FileStorage.removed < before)
                & ~pw.fn.EXISTS(
                    StorageLocation.select(StorageLocation.id).where(
                        StorageLocation.file_storage == FileStorage.id
                    )
                )
            )
        )
        # In batches: tens of thousands may go at once (the unreferenced items of
        # an import from Resolwe), more than one statement may name.
        for start in range(0, len(gone), DEFAULT_SCAN_BATCH):
            batch = gone[start : start + DEFAULT_SCAN_BATCH]
            Action.insert_many(
                [
                    {
                        "actor": "scheduler",
                        "action": "remove",
                        "item_key": item.key,
                        "result": "ok",
                        "error": None,
                    }
                    for item in batch
                ]
            ).execute()
            FileStorage.delete().where(FileStorage.id.in_([item.id for item in batch])).execute()
    return len(gone)


def _unreserve(database: pw.Database, reserved: Sequence[tuple[int, str]]) -> None:
    """Drop the reservations (``PR``, nothing copied yet) of copies whose jobs were not queued."""
    with writing(database):
        for item_id, connector in reserved:
            StorageLocation.delete().where(
                (StorageLocation.file_storage == item_id)
                & (StorageLocation.connector_name == connector)
                & (StorageLocation.status == STATUS_PREPARING)
                & ~pw.fn.EXISTS(
                    LocationFile.select(LocationFile.id).where(
                        LocationFile.storage_location == StorageLocation.id
                    )
                )
            ).execute()


def _close_expired_locks() -> int:
    """Close the locks of workers that died mid-job, once past their expiry, and the
    holds of presigned URLs that ended (quietly: that is how they end); how many."""
    closed = close_expired_locks(utcnow())
    closed = [log for log in closed if log.reason != URL_HOLD_REASON]
    for start in range(0, len(closed), DEFAULT_SCAN_BATCH):  # four values a row
        Action.insert_many(
            [
                {
                    "actor": "scheduler",
                    "action": "unlock",
                    "file_storage": log.storage_location.file_storage_id,
                    "target": log.storage_location.connector_name,
                    "error": f"access log {log.id} ({log.reason}) expired at "
                    f"{log.expires:%Y-%m-%dT%H:%M:%SZ}: its worker ended without closing it",
                }
                for log in closed[start : start + DEFAULT_SCAN_BATCH]
            ]
        ).execute()
    if closed:
        logger.warning("closed %d expired access log(s) of workers gone", len(closed))
    return len(closed)


def _resume_stale(
    database: pw.Database,
    before: datetime,
    report: ScanReport,
    budget: DeleteBudget,
    cut: dict[str, int],
    *,
    batch: int,
) -> Iterator[tuple[list[dramatiq.Message], list[int]]]:
    """Jobs for the work left of copies and deletes under way that stopped before
    ``before``, ``batch`` locations at a time (by id): each batch's jobs and the ids
    of its locations, which the caller queues and stamps before the next is read.

    A copy (``PR``/``UP``) gets its files not yet recorded (none of a
    removed item: it is not copied), a delete (``DE``) those not yet removed.
    """
    after = 0
    while True:
        # Read only (the caller stamps the locations once their jobs are queued).
        with database.atomic():
            stale = list(
                StorageLocation.select(
                    StorageLocation.id,
                    StorageLocation.file_storage,
                    StorageLocation.connector_name,
                    StorageLocation.status,
                )
                .where(
                    StorageLocation.status.in_(
                        [STATUS_PREPARING, STATUS_UPLOADING, STATUS_DELETING]
                    )
                    & (StorageLocation.last_update < before)
                    & (StorageLocation.id > after)
                )
                .order_by(StorageLocation.id)
                .limit(batch)
            )
            if not stale:
                return
            after = stale[-1].id
            alive = _copies_running(stale)
            stale = [location for location in stale if location.id not in alive]
            if not stale:
                continue
            found = _resumed(stale, report, budget, cut)
        yield found


def _copies_running(stale: Sequence[StorageLocation]) -> set[int]:
    """The ids of those of ``stale`` (``PR``/``UP``) whose copy job still runs.

    A job copying a large file records nothing until it ends, and its time
    limit grows with the file (10 GiB: 95 minutes): the hour without
    progress does not say it was lost. Its source lock, open and not yet
    expired (``workers.actors.lock_expiry``: the job's time limit and a
    margin), says it is alive; once the job ends, or its lock expires and
    the scan closes it, the copy is resumed if still unfinished.
    """
    copying = [loc for loc in stale if loc.status in (STATUS_PREPARING, STATUS_UPLOADING)]
    if not copying:
        return set()
    reasons: dict[int, list[str]] = {}
    for item_id, reason in (
        AccessLog.select(StorageLocation.file_storage, AccessLog.reason)
        .join(StorageLocation)
        .where(
            StorageLocation.file_storage.in_([loc.file_storage_id for loc in copying])
            & AccessLog.finished.is_null()
            # Locks expire in real time, as ``close_expired_locks`` closes them.
            & (AccessLog.expires > utcnow())
        )
        .tuples()
    ):
        reasons.setdefault(item_id, []).append(reason or "")
    return {
        loc.id
        for loc in copying
        if any(
            reason.startswith(copy_reason(loc.connector_name))
            for reason in reasons.get(loc.file_storage_id, ())
        )
    }


def _resumed(
    stale: Sequence[StorageLocation], report: ScanReport, budget: DeleteBudget, cut: dict[str, int]
) -> tuple[list[dramatiq.Message], list[int]]:
    """The jobs of the work left of ``stale`` (one batch), and the ids of its locations."""
    messages: list[dramatiq.Message] = []
    left: dict[int, list[tuple[str, int | None]]] = {}
    recorded = pw.fn.EXISTS(
        LocationFile.select(LocationFile.id).where(
            (LocationFile.storage_location == StorageLocation.id)
            & (LocationFile.referenced_path == ReferencedPath.id)
        )
    )
    deleting = StorageLocation.status == STATUS_DELETING
    for start in range(0, len(stale), DEFAULT_SCAN_BATCH):
        ids = [location.id for location in stale[start : start + DEFAULT_SCAN_BATCH]]
        for location_id, path, size in (
            StorageLocation.select(StorageLocation.id, ReferencedPath.path, ReferencedPath.size)
            .join(
                ReferencedPath,
                on=ReferencedPath.file_storage == StorageLocation.file_storage,
            )
            .where(
                StorageLocation.id.in_(ids)
                & ~ReferencedPath.path.endswith("/")
                & ((deleting & recorded) | (~deleting & ~recorded))
            )
            .order_by(StorageLocation.id, ReferencedPath.path)
            .tuples()
        ):
            left.setdefault(location_id, []).append((path, size))
    # A delete under way keeps a row per file still to remove and goes with
    # its last one, so a DE location without rows was marked by something
    # else (an import, an earlier version): every file of it is removed.
    unmarked = [
        location.file_storage_id
        for location in stale
        if location.status == STATUS_DELETING and location.id not in left
    ]
    every_file = item_files(unmarked) if unmarked else {}
    copies: dict[str, list[tuple[int, list[tuple[str, int | None]]]]] = {}
    removed = {
        item.id
        for item in FileStorage.select(FileStorage.id).where(
            FileStorage.id.in_([location.file_storage_id for location in stale])
            & FileStorage.removed.is_null(False)
        )
    }
    resumed: list[int] = []
    for location in stale:
        files = left.get(location.id, [])
        if location.status == STATUS_DELETING:
            files = files or every_file.get(location.file_storage_id, [])
            if budget.paused:  # a delete under way waits too; the caps are for new ones
                budget.take(location.connector_name, 0)
                continue
            build = remove_messages if location.file_storage_id in removed else delete_messages
            messages += build(location.file_storage_id, location.connector_name, files)
        elif location.file_storage_id in removed:
            # Nothing is copied of a removed item: restored, its copy goes
            # on; else its removal deletes the reservation. Stamped, so it is
            # not read again before the next hour.
            resumed.append(location.id)
            continue
        else:
            copies.setdefault(location.connector_name, []).append((location.file_storage_id, files))
        report.resumed += 1
        resumed.append(location.id)
    for target, items in copies.items():
        messages += copy_jobs(target, items, **cut)
    return messages, resumed


def _reserve_copies(
    database: pw.Database, batch: Sequence[DueItem], report: ScanReport, cut: dict[str, int]
) -> tuple[list[dramatiq.Message], list[tuple[int, str]]]:
    """Reserve the due copies' locations; their jobs, and the (item id, target) reserved."""
    wanted = [
        (item.item_id, item.source, target)
        for item in batch
        for action, target in item.arms
        if action == COPY and item.source is not None
    ]
    if not wanted:
        return [], []
    ids = sorted({item_id for item_id, _, _ in wanted})
    messages: list[dramatiq.Message] = []
    with writing(database):
        urls = {
            (item_id, connector): url
            for item_id, connector, url in sql.run(
                "SELECT file_storage_id, connector_name, url FROM storage_location"
                f" WHERE file_storage_id IN ({', '.join('?' * len(ids))}) AND status = ?",
                [*ids, STATUS_DONE],
            )
        }
        files = item_files(ids)
        asked = [
            (item_id, target, urls[item_id, source])
            for item_id, source, target in wanted
            if (item_id, source) in urls  # else the source went away since the plan
        ]
        reserved: dict[str, list[tuple[int, list[tuple[str, int | None]]]]] = {}
        for (item_id, target, url), outcome in zip(asked, reserve_locations(asked), strict=True):
            if outcome in (URL_TAKEN, URL_OVERLAPS):
                logger.warning(
                    "not copying item %s: %s: url %r %s",
                    item_id,
                    target,
                    url,
                    "is another item's location already"
                    if outcome == URL_TAKEN
                    else "lies inside or around another item's location there",
                )
                report.conflicts += 1
                continue
            if outcome == LOCATION_EXISTS:
                report.pending += 1
                continue
            report.copies += 1
            reserved.setdefault(target, []).append((item_id, files.get(item_id, [])))
    for target, items in reserved.items():
        messages += copy_jobs(target, items, **cut)
    return messages, [
        (item_id, target) for target, items in reserved.items() for item_id, _ in items
    ]


def _claim_others(
    pending: Pending, batch: Sequence[DueItem], report: ScanReport, budget: DeleteBudget
) -> tuple[list[dramatiq.Message], list[str]]:
    """The jobs of the due deletes, verifications and repairs not queued yet; their markers.

    A delete the guards hold back (``DeleteBudget``) is not queued, and its
    marker is freed for a later scan.
    """
    wanted = []
    for item in batch:
        for action, connector in item.arms:
            if action in (DELETE, REMOVE) and budget.paused:
                budget.take(connector, 0)  # counted as held
            elif action in (DELETE, REMOVE, VERIFY, REPAIR):
                wanted.append((action, item.item_id, connector))
    if not wanted:
        return [], []
    files = item_files(sorted({item_id for action, item_id, _ in wanted if action != REPAIR}))
    builders = {DELETE: delete_messages, REMOVE: remove_messages, VERIFY: verify_messages}
    jobs = [
        _repair_jobs(item_id, connector)
        if action == REPAIR
        else builders[action](item_id, connector, files[item_id])
        for action, item_id, connector in wanted
    ]
    keys = [Pending.key(_QUEUES[action], item_id, name) for action, item_id, name in wanted]
    fresh = pending.claim(keys, [len(location_jobs) for location_jobs in jobs])
    messages = []
    claimed, held = [], []
    for (action, item_id, connector), key, location_jobs, new in zip(
        wanted, keys, jobs, fresh, strict=True
    ):
        if not new:
            report.pending += 1
            continue
        if action == DELETE and not budget.take(connector, _size(files[item_id])):
            held.append(key)
            continue
        if action == REMOVE and not budget.take_removal():
            held.append(key)
            continue
        claimed.append(key)
        if action == DELETE:
            report.deletes += 1
        elif action == REMOVE:
            report.removals += 1
        elif action == VERIFY:
            report.verifies += 1
        else:
            report.repairs += 1
        messages += location_jobs
    pending.release_many(held)
    return messages, claimed


def _size(files: Sequence[tuple[str, int | None]]) -> int:
    return sum(size or 0 for _, size in files)


def _repair_jobs(item_id: int, connector: str) -> list[dramatiq.Message]:
    """The job that repairs the item's damaged copy on ``connector``, sized by its bad files."""
    location = location_on(item_id, connector)
    bad = bad_files(location.id) if location is not None else []
    return repair_messages(item_id, connector, [(b.path, b.size) for b in bad])


_QUEUES = {
    DELETE: QUEUE_DELETE,
    REMOVE: PENDING_REMOVE,
    VERIFY: QUEUE_VERIFY,
    REPAIR: PENDING_REPAIR,
}


def _chunks(items: Sequence[DueItem], size: int) -> Iterator[Sequence[DueItem]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
