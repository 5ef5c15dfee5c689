"""The Dramatiq actors: each decodes a job, runs one operation, and lets its error decide.

=====================  ===================================================
actor                  runs (``workers.operations``)
=====================  ===================================================
``copy_files``         ``copy_items`` for the files of one item: stream each
                       from the item's preferred good copy, hash on the way,
                       record it good once the checksum holds; the location
                       is ``OK`` with its last file
``copy_items``         the same for the files of several small items
``copy_file``          ``copy_files`` of one file
``finish_copy``        ``finish_location``: an item without files is copied
``repair_location``    ``repair_location``: copy the bad files of a damaged
                       copy again, each from the best copy that holds it good
``delete_files``       ``delete_files``: re-check the delete rule under the
                       item's lock, confirm the other copies on their
                       backends, remove the files; the location goes with
                       its last file
``delete_location``    ``delete_files`` of every file of the copy
``verify_files``       ``verify_item_files``: re-hash files of a copy, record
                       what the backend answered (good, missing, different)
``verify_location``    ``verify_files`` of every file of the copy
``audit_connector``    ``workers.audit.audit_connector``: the connector's
                       objects against the catalog; lost and mismatched
                       files recorded (their copies damaged, repaired by
                       the scan), dark objects reported, none removed
``remove_location``    ``remove_location``: a removed item's copy goes whole
                       (no delete rule, no confirmation; never a locked
                       copy), and the item with its last copy
=====================  ===================================================

Queues and arguments are the contract in ``workers.messages``. Retry rules
are actor options: a transient error (a connector's ``transient`` ones, a
lost database connection, the broker out of reach) is retried with
exponential backoff from ``DEFAULT_MIN_BACKOFF_MS`` to
``DEFAULT_MAX_BACKOFF_MS``, up to the runtime's ``max_retries``
(``workers.runtime.DEFAULT_MAX_RETRIES``); a checksum mismatch is tried
``DEFAULT_MISMATCH_RETRIES`` more times; anything else fails the message at
once. A job is stopped at its time limit (``messages.time_limit_ms``):
a timeout, retried as a transient failure is. A
message that fails for good is dead-lettered (Redis keeps it a week, under
``dramatiq:QUEUE.XQ``) and recorded in the action history with the item's
key and the reason (``GiveUpHistory``, unless the operation recorded it).

The actors use the ``Runtime`` installed in the process (``install``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import dramatiq
import peewee as pw
from dramatiq.middleware import CurrentMessage, Middleware, Retries, TimeLimitExceeded

from catalog.errors import CatalogError
from catalog.models import Action, FileStorage, utcnow
from catalog.paths import files_label
from catalog.settings import record_audit
from connectors.errors import ChecksumMismatch, ConnectorError
from workers.broker import Pending, note_dead, unreachable
from workers.messages import (
    ACTOR_AUDIT,
    ACTOR_COPY,
    ACTOR_COPY_ITEMS,
    ACTOR_COPY_MANY,
    ACTOR_DELETE,
    ACTOR_DELETE_MANY,
    ACTOR_FINISH,
    ACTOR_REMOVE,
    ACTOR_REPAIR,
    ACTOR_VERIFY,
    ACTOR_VERIFY_MANY,
    DEFAULT_TIME_LIMIT_MS,
    PENDING_AUDIT,
    PENDING_REMOVE,
    PENDING_REPAIR,
    QUEUE_COPY,
    QUEUE_DELETE,
    QUEUE_VERIFY,
)
from workers.operations import (
    DELETED,
    FILES_DELETED,
    GONE,
    CopyReport,
    copy_items,
    delete_files,
    finish_location,
    remove_location,
    repair_location,
    verify_item_files,
)
from workers.runtime import DEFAULT_MAX_RETRIES, Runtime
from workers.telemetry import Done, JobLog, Work, WorkerMetrics, reporting

#: Tries again after a checksum mismatch (damage on the way), then gives up.
DEFAULT_MISMATCH_RETRIES = 2
#: Backoff between retries, doubling from the first to the cap (milliseconds).
DEFAULT_MIN_BACKOFF_MS = 1_000
DEFAULT_MAX_BACKOFF_MS = 300_000
#: How long after a job's time limit its locks end by themselves.
DEFAULT_LOCK_MARGIN = timedelta(minutes=5)
#: Who the action history says did the work.
ACTOR_NAME = "worker"

logger = logging.getLogger(__name__)

_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Make ``runtime`` the one this process's actors use."""
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    if _runtime is None:
        raise RuntimeError("no runtime installed: call workers.actors.install first")
    return _runtime


def look_first(paths: Sequence[str], *, retries: int) -> bool:
    """Whether a copy job looks for its files at the destination before writing them.

    A job of small files tried for the first time writes them without
    looking: nothing of its location was written before, except by a
    worker killed on this very job, whose files it writes again (64 MiB at
    most). A retry looks, and so does a job of one file, which may be large.
    """
    return retries > 0 or len(paths) < 2


def _current_retries() -> int:
    running = CurrentMessage.get_current_message()
    return int(running.options.get("retries", 0)) if running is not None else 0


def lock_expiry() -> datetime:
    """When a lock taken by the running job ends by itself: after the job's time limit.

    Dramatiq stops a job at its time limit; a lock still open after that,
    and ``DEFAULT_LOCK_MARGIN``, belongs to a worker that died (the scan
    closes it).
    """
    running = CurrentMessage.get_current_message()
    limit_ms = DEFAULT_TIME_LIMIT_MS
    if running is not None:
        limit_ms = running.options.get("time_limit") or limit_ms
    return utcnow() + timedelta(milliseconds=limit_ms) + DEFAULT_LOCK_MARGIN


def is_transient(retries: int, exc: BaseException) -> bool:
    """Whether to retry: transient failures up to the runtime's ``max_retries`` times.

    A checksum mismatch is permanent for the connector (the bad object is
    gone by then), but bytes damaged on the way are a one-off: the job tries
    again ``DEFAULT_MISMATCH_RETRIES`` times before giving up. A job stopped
    at its time limit (a backend slowed down) timed out: transient, as SPEC §3
    has it (what it finished was recorded; the retry goes on from there).
    """
    limit = _runtime.max_retries if _runtime is not None else DEFAULT_MAX_RETRIES
    if isinstance(exc, ChecksumMismatch):
        return retries < min(DEFAULT_MISMATCH_RETRIES, limit)
    transient = getattr(exc, "transient", None)
    if transient is None:
        transient = isinstance(
            exc, (TimeLimitExceeded, pw.OperationalError, pw.InterfaceError, *unreachable())
        )
    return bool(transient) and retries < limit


# -- the actors' bodies ----------------------------------------------------------


# Actors return what they did (``telemetry.Done``: Dramatiq keeps no results),
# for the job's log line and the metrics (``telemetry.JobLog``); what was
# done goes to the action history too.


def copy_file_job(item_id: int, target: str, path: str) -> Done:
    return copy_files_job(item_id, target, [path])


def copy_files_job(item_id: int, target: str, paths: list[str]) -> Done:
    report = _copy(target, [(item_id, paths)], look=look_first(paths, retries=_current_retries()))
    return _copied(report)


def copy_items_job(target: str, items: list[list[Any]]) -> Done:
    wanted = [(item_id, paths) for item_id, paths in items]
    return _copied(_copy(target, wanted, look=_current_retries() > 0))


def _copied(report: CopyReport) -> Done:
    parts = [f"{report.copied} copied"]
    if report.already_there:
        parts.append(f"{report.already_there} there already")
    if report.not_wanted:
        parts.append(f"{report.not_wanted} item(s) not wanted")
    return Done(
        files=report.copied + report.already_there, bytes=report.bytes, result=", ".join(parts)
    )


def _copy(target: str, wanted: list[tuple[int, list[str]]], *, look: bool) -> CopyReport:
    """``copy_items`` with this process's runtime, locks ending after the job's time limit."""
    runtime = current()
    with _catalog(runtime):
        return copy_items(
            target,
            wanted,
            connectors=runtime.connector,
            preference=runtime.preference,
            actor=ACTOR_NAME,
            lock_expires=lock_expiry(),
            look_first=look,
        )


def finish_copy_job(item_id: int, target: str) -> Done:
    with _catalog(current()):
        done = finish_location(item_id, target)
    return Done(result="finished" if done else "not wanted")


def delete_files_job(item_id: int, connector: str, paths: list[str] | None) -> Done:
    runtime = current()
    with _catalog(runtime):
        item = FileStorage.get_or_none(FileStorage.id == item_id)
        outcome = GONE
        if item is not None:
            outcome = delete_files(
                item_id,
                connector,
                paths,
                check=runtime.delete_check(item, connector, runtime.clock()),
                connectors=runtime.connector,
                actor=ACTOR_NAME,
            )
    runtime.pending.done(Pending.key(QUEUE_DELETE, item_id, connector))
    deleted = outcome in (DELETED, FILES_DELETED)
    return Done(files=len(paths) if deleted and paths is not None else 0, result=outcome)


def delete_location_job(item_id: int, connector: str) -> Done:
    return delete_files_job(item_id, connector, None)


def verify_files_job(item_id: int, connector: str, paths: list[str] | None) -> Done:
    """Verify files of the item's OK copy on ``connector``, locked meanwhile (no delete)."""
    runtime = current()
    with _catalog(runtime):
        report = verify_item_files(
            item_id,
            connector,
            paths,
            connectors=runtime.connector,
            now=utcnow(),
            actor=ACTOR_NAME,
            lock_expires=lock_expiry(),
        )
    runtime.pending.done(Pending.key(QUEUE_VERIFY, item_id, connector))
    if report is None:
        return Done(result="no OK copy")
    return Done(
        files=report.files,
        bytes=report.bytes,
        result="ok" if report.ok else f"{len(report.problems)} bad file(s): {report.status}",
    )


def verify_location_job(item_id: int, connector: str) -> Done:
    return verify_files_job(item_id, connector, None)


def audit_connector_job(connector: str) -> Done:
    """Audit ``connector`` against the catalog, as ``resolwe-storage audit`` does (no removal)."""
    # Loaded by the first audit: most workers' lives, and every run of
    # copies, go without one (its module brings tempfile and the compressors).
    from workers.audit import audit_connector

    runtime = current()
    with _catalog(runtime):
        report = audit_connector(runtime.connector(connector), runtime.database, now=utcnow())
        summary = (
            f"{report.objects} object(s), {report.expected} expected: {report.lost} lost, "
            f"{report.mismatched} mismatched, {report.dark} dark ({report.dark_bytes} bytes)"
        )
        if report.lost_items:
            lost = sorted(report.lost_items)
            summary += (
                f"; {len(lost)} item(s) LOST (no good copy anywhere): "
                + ", ".join(lost[:5])
                + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            )
        with runtime.database.atomic():
            record_audit(connector, finished=utcnow(), note=summary)
            Action.create(
                actor=ACTOR_NAME,
                action="audit",
                target=connector,
                result="ok" if report.ok else "damaged",
                duration_ms=int(report.seconds * 1000),
                error=None if report.ok else summary,
            )
    # Freed once done (or given up: ``GiveUpHistory``), not between tries: one at a time.
    runtime.pending.done(Pending.key(PENDING_AUDIT, 0, connector))
    if not report.ok:
        logger.error("audit of %s: %s", connector, summary)
    return Done(files=report.objects, result=summary)


def remove_location_job(item_id: int, connector: str) -> Done:
    """Delete the copy on ``connector`` of a removed item (and the item with its last copy)."""
    runtime = current()
    with _catalog(runtime):
        outcome = remove_location(
            item_id,
            connector,
            connectors=runtime.connector,
            actor=ACTOR_NAME,
            removal_delay=runtime.removal_delay,
            now=runtime.clock(),
        )
    runtime.pending.done(Pending.key(PENDING_REMOVE, item_id, connector))
    return Done(result=str(outcome))


def repair_location_job(item_id: int, connector: str) -> Done:
    """Copy the bad files of the item's damaged copy on ``connector`` again."""
    runtime = current()
    with _catalog(runtime):
        report = repair_location(
            item_id,
            connector,
            connectors=runtime.connector,
            preference=runtime.preference,
            actor=ACTOR_NAME,
            lock_expires=lock_expiry(),
        )
    runtime.pending.done(Pending.key(PENDING_REPAIR, item_id, connector))
    if report.unrepairable:
        logger.error(
            "item %s is LOST for %s: no good copy anywhere to repair its copy on %s from",
            item_id,
            files_label(report.unrepairable),
            connector,
        )
    return Done(
        files=report.repaired,
        bytes=report.bytes,
        result=f"{report.repaired} repaired, now {report.status}",
    )


@contextmanager
def _catalog(runtime: Runtime) -> Iterator[None]:
    """The worker thread's catalog connection: kept open between jobs, dropped when broken."""
    runtime.database.connect(reuse_if_open=True)
    try:
        yield
    except (pw.OperationalError, pw.InterfaceError):
        # A server restarted or a connection cut: the next job connects afresh.
        runtime.database.close()
        raise


ACTORS: dict[str, tuple[str, Callable[..., Any]]] = {
    ACTOR_COPY_MANY: (QUEUE_COPY, copy_files_job),
    ACTOR_COPY_ITEMS: (QUEUE_COPY, copy_items_job),
    ACTOR_COPY: (QUEUE_COPY, copy_file_job),
    ACTOR_FINISH: (QUEUE_COPY, finish_copy_job),
    ACTOR_DELETE_MANY: (QUEUE_DELETE, delete_files_job),
    ACTOR_DELETE: (QUEUE_DELETE, delete_location_job),
    ACTOR_VERIFY_MANY: (QUEUE_VERIFY, verify_files_job),
    ACTOR_VERIFY: (QUEUE_VERIFY, verify_location_job),
    ACTOR_REPAIR: (QUEUE_COPY, repair_location_job),
    ACTOR_REMOVE: (QUEUE_DELETE, remove_location_job),
    ACTOR_AUDIT: (QUEUE_VERIFY, audit_connector_job),
}


class GiveUpHistory(Middleware):
    """Records a job given up in the action history, and frees its marker.

    Every failure for good: retries used up, or an error no retry mends. An
    operation that recorded its failure itself, with what it was doing,
    marks the error (``recorded``) and is not recorded twice.
    """

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or not message.failed:
            return
        if _runtime is None:
            return
        queue, _ = ACTORS.get(message.actor_name, ("", None))
        args = list(message.args)
        retries = message.options.get("retries", 0)
        logger.warning("%s%s given up: %s", message.actor_name, tuple(args), exception)
        marker = _marker(message.actor_name, args)
        if marker is not None:
            _runtime.pending.done(marker)
        action = _ACTIONS.get(message.actor_name, queue or message.actor_name)
        # A permanent error fails at its first try; Dramatiq counts that try too.
        how = f"gave up after {retries} tries" if is_transient(0, exception) else "failed"
        reason = f"{how}: {_why(message, exception)}"
        keys: list[str] = []
        try:
            with _catalog(_runtime):
                # An audit names no item: its line names the connector alone,
                # so that ``run --once`` (which reads the history) sees it failed.
                work = _work_of(message.actor_name, args)
                if message.actor_name == ACTOR_AUDIT and args:
                    work = [(None, args[0], None)]
                for item_id, target, paths in work:
                    item = None
                    if item_id is not None:
                        item = FileStorage.get_or_none(FileStorage.id == item_id)
                    if item is not None and item.key is not None:
                        keys.append(item.key)
                    if getattr(exception, "recorded", False):
                        continue  # the operation recorded it, with what it was doing
                    Action.create(
                        actor=ACTOR_NAME,
                        action=action,
                        item_key=item.key if item is not None else None,
                        file_storage=item,
                        target=target,
                        path=_paths_of(paths) if paths is not None else None,
                        result="failed",
                        error=reason,
                    )
        except (pw.OperationalError, pw.InterfaceError) as exc:
            # The catalog is out of reach (most likely why the job failed):
            # the dead letter keeps the job, the log says so once.
            logger.warning("%s not recorded in the history: %s", message.actor_name, exc)
        # Beside the dead letter, for ``queues``: whose job it was, and why it died.
        note_dead(broker, message.message_id, keys=keys, reason=reason)


def _why(message: dramatiq.Message, exception: BaseException) -> str:
    """What ended a job, for the history: the error's text (a time limit has none)."""
    if isinstance(exception, TimeLimitExceeded):
        limit = message.options.get("time_limit") or DEFAULT_TIME_LIMIT_MS
        return f"stopped at its time limit ({limit / 1000:g} s)"
    return str(exception) or type(exception).__name__


def _database() -> pw.Database | None:
    return _runtime.database if _runtime is not None else None


def _marker(actor: str, args: list[Any]) -> str | None:
    """The pending marker a job of ``actor`` frees when it ends, if any."""
    if actor == ACTOR_AUDIT and args:
        return Pending.key(PENDING_AUDIT, 0, args[0])
    if len(args) < 2:
        return None
    if actor == ACTOR_REPAIR:
        return Pending.key(PENDING_REPAIR, args[0], args[1])
    if actor == ACTOR_REMOVE:
        return Pending.key(PENDING_REMOVE, args[0], args[1])
    queue, _ = ACTORS.get(actor, ("", None))
    if queue in (QUEUE_DELETE, QUEUE_VERIFY):
        return Pending.key(queue, args[0], args[1])
    return None


def _work_of(actor: str, args: list[Any]) -> list[tuple[Any, Any, Any]]:
    """(item id or None, connector, paths or None) of each item a job works on.

    Read from any message, one of another service's that is not of the
    documented shape included: what is not an item id is None, so that the
    job is still logged, and recorded with its reason when it fails.
    """
    if actor == ACTOR_COPY_ITEMS and len(args) == 2:
        entries = args[1] if isinstance(args[1], list) else []
        work = [
            (_item_id(entry[0]), args[0], entry[1])
            for entry in entries
            if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)
        ]
        return work or [(None, args[0], None)]
    if len(args) < 2:
        return []
    return [(_item_id(args[0]), args[1], args[2] if len(args) > 2 else None)]


def _item_id(value: Any) -> int | None:
    """``value`` if it is an item id (an integer), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


#: The action a job of each actor does, as the history and the log name it.
_ACTIONS = {ACTOR_REPAIR: "repair", ACTOR_REMOVE: "remove", ACTOR_AUDIT: "audit"}


def describe(message: dramatiq.Message) -> Work | None:
    """What ``message`` asks: queue, action, connector, items; None when not one of ours."""
    queue, _ = ACTORS.get(message.actor_name, ("", None))
    args = list(message.args)
    if not queue or not args:
        return None
    action = _ACTIONS.get(message.actor_name, queue)
    if message.actor_name == ACTOR_AUDIT:
        return Work(queue, action, str(args[0]))
    work = _work_of(message.actor_name, args)
    if not work:
        return None
    named = [paths for _, _, paths in work]
    files = None
    if all(isinstance(paths, list) for paths in named):
        files = sum(len(paths) for paths in named)
    elif all(isinstance(paths, str) for paths in named):
        files = len(named)
    items = [item for item, _, _ in work if item is not None]
    return Work(queue, action, str(work[0][1]), items, files)


def _paths_of(value: Any) -> str:
    """The file path(s) of a copy job, for the history."""
    if isinstance(value, list) and value:
        return files_label(value)
    return str(value)


def declare_actors(
    broker: dramatiq.Broker, *, metrics: WorkerMetrics | None = None
) -> dict[str, dramatiq.Actor]:
    """Declare every actor on ``broker`` (with the retry rules, the history and the job log).

    ``metrics``: where the job log counts jobs (None: it only logs).
    """
    logs = [m for m in broker.middleware if isinstance(m, JobLog)]
    if logs:
        logs[0].metrics = metrics or logs[0].metrics
    else:
        # Its "after" hook must run after Retries' too, to tell a retry from a failure.
        broker.add_middleware(JobLog(describe, _database, metrics), before=Retries)
    if not any(isinstance(m, GiveUpHistory) for m in broker.middleware):
        # Its hook must run after the Retries middleware's, which decides
        # that a message fails for good; "after" hooks run last added first.
        broker.add_middleware(GiveUpHistory(), before=Retries)
    if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
        broker.add_middleware(CurrentMessage())
    declared = {}
    for name, (queue, body) in ACTORS.items():
        declared[name] = dramatiq.actor(
            reporting(body),
            broker=broker,
            actor_name=name,
            queue_name=queue,
            max_retries=DEFAULT_MAX_RETRIES,
            min_backoff=DEFAULT_MIN_BACKOFF_MS,
            max_backoff=DEFAULT_MAX_BACKOFF_MS,
            time_limit=DEFAULT_TIME_LIMIT_MS,
            retry_when=is_transient,
        )
    return declared


def expected_failures() -> tuple[type[BaseException], ...]:
    """Errors a job may end with in normal operation; anything else is a bug.

    A line each, no traceback (``broker.QuietLogs``). Asked once the broker
    is made: Redis's errors are among them once its client is loaded
    (``broker.unreachable``).
    """
    return (ConnectorError, CatalogError, pw.OperationalError, pw.InterfaceError, *unreachable())
