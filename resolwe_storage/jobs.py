"""The jobs: Dramatiq actors over the worker operations, and what they run with.

Actors (queue, name, arguments), the message format other services use:

=========  ==================  ==================================
queue      actor               args
=========  ==================  ==================================
``copy``   ``copy_files``      item id, target connector, [file paths]
``copy``   ``copy_items``      target connector, [[item id, [file paths]], ...]
``copy``   ``copy_file``       item id, target connector, file path
``copy``   ``finish_copy``     item id, target connector
``delete`` ``delete_files``    item id, connector, [file paths]
``copy``   ``repair_location`` item id, connector (a damaged copy)
``delete`` ``delete_files``    item id, connector, [file paths]
``delete`` ``delete_location`` item id, connector
``verify`` ``verify_files``    item id, connector, [file paths]
``verify`` ``verify_location`` item id, connector
=========  ==================  ==================================

The scan queues work per file: copy jobs of up to ``DEFAULT_JOB_FILES``
files and ``DEFAULT_JOB_BYTES`` bytes, shared across the items of one
target (``copy_items``, or ``copy_files`` for the files of one item), as
few as those limits allow and of equal size (``copy_jobs``; a larger file
has a job of its own), so a job's catalog work is shared by its small
files; ``verify_files`` jobs within the same limits per copy;
``delete_files`` jobs of up to
``DEFAULT_DELETE_JOB_FILES`` files (one request to S3). ``copy_file`` is
``copy_files`` of one file; ``delete_location`` and ``verify_location``
work on every file of the copy; ``repair_location`` copies the bad files of
a damaged copy again (``workers.operations.repair_location``).

Each actor decodes its message, calls one operation of ``workers`` and lets
the error decide: transient errors (a connector's ``transient`` ones, a lost
database connection) are retried with exponential backoff, up to
``DEFAULT_MAX_RETRIES`` times; anything else fails the message at once. A
message that fails for good is dead-lettered (Redis keeps it a week, under
``dramatiq:QUEUE.XQ``) and recorded in the action history with the item's
key and the reason (``GiveUpHistory``, unless the operation recorded it).
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import dramatiq
import peewee as pw
from dramatiq.middleware import CurrentMessage, Middleware, Retries

from catalog.errors import CatalogError
from catalog.models import Action, FileStorage, utcnow
from catalog.paths import files_label
from connectors.base import Connector
from connectors.errors import ChecksumMismatch, ConfigurationError, ConnectorError
from resolwe_storage.broker import UNREACHABLE, Pending, message
from resolwe_storage.config import Config
from resolwe_storage.storage import build_connector
from scheduler.policy import cutoff
from scheduler.rules import preference_order, resolve_delay, resolve_min_other_copies
from workers.operations import (
    GONE,
    CopyReport,
    DeleteCheck,
    copy_items,
    delete_files,
    finish_location,
    repair_location,
    verify_item_files,
)

QUEUE_COPY = "copy"
QUEUE_DELETE = "delete"
QUEUE_VERIFY = "verify"
QUEUES = (QUEUE_COPY, QUEUE_DELETE, QUEUE_VERIFY)
ACTOR_COPY = "copy_file"
ACTOR_COPY_MANY = "copy_files"
ACTOR_COPY_ITEMS = "copy_items"
ACTOR_FINISH = "finish_copy"
ACTOR_DELETE = "delete_location"
ACTOR_DELETE_MANY = "delete_files"
ACTOR_VERIFY = "verify_location"
ACTOR_VERIFY_MANY = "verify_files"
ACTOR_REPAIR = "repair_location"
#: The marker (``broker.Pending``) of a repair queued or running.
PENDING_REPAIR = "repair"

#: Retries of a transient failure before a job is given up (dead-lettered).
DEFAULT_MAX_RETRIES = 8
#: Tries again after a checksum mismatch (damage on the way), then gives up.
DEFAULT_MISMATCH_RETRIES = 2
#: Backoff between retries, doubling from the first to the cap (milliseconds).
DEFAULT_MIN_BACKOFF_MS = 1_000
DEFAULT_MAX_BACKOFF_MS = 300_000
#: A job's time limit: this much, plus its bytes at ``DEFAULT_SLOWEST_RATE``.
DEFAULT_TIME_LIMIT_MS = 600_000
#: How long after a job's time limit its locks end by themselves.
DEFAULT_LOCK_MARGIN = timedelta(minutes=5)
#: Milliseconds a delete job is given per file, on top of ``DEFAULT_TIME_LIMIT_MS``.
DEFAULT_DELETE_MS_PER_FILE = 200
#: Bytes per second below which a transfer is taken to be stuck.
DEFAULT_SLOWEST_RATE = 2 * 1024 * 1024
#: Files of one copy that share a job: at most this many ...
DEFAULT_JOB_FILES = 128
#: ... and at most this many bytes between them.
DEFAULT_JOB_BYTES = 64 * 1024 * 1024
#: Files of one delete that share a job (S3 deletes up to 1,000 in one request).
DEFAULT_DELETE_JOB_FILES = 1_000
#: Who the action history says did the work.
ACTOR_NAME = "worker"

logger = logging.getLogger(__name__)


def time_limit_ms(size: int | None) -> int:
    """The time limit of a job moving ``size`` bytes."""
    return DEFAULT_TIME_LIMIT_MS + (size or 0) * 1000 // DEFAULT_SLOWEST_RATE


@dataclass
class Runtime:
    """What the actors of one process run with: configuration, catalog, broker."""

    config: Config
    database: pw.Database
    broker: dramatiq.Broker
    #: Retries of a transient failure before the job is given up.
    max_retries: int = DEFAULT_MAX_RETRIES
    #: The time the rules are re-checked at (``run --now`` fixes it).
    clock: Callable[[], datetime] = utcnow
    pending: Pending = field(init=False)
    _connectors: dict[str, Connector] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.pending = Pending(self.broker)
        self.preference = tuple(preference_order(self.config.policies))

    def connector(self, name: str) -> Connector:
        """The configured connector ``name``, made once per process."""
        with self._lock:
            found = self._connectors.get(name)
            if found is None:
                entry = self.config.connectors.get(name)
                if entry is None:
                    raise ConfigurationError(f"connector {name!r} is not configured")
                found = self._connectors[name] = build_connector(entry)
            return found

    def warm(self) -> None:
        """Make every configured connector and its client now, not in the first jobs.

        Building a client (boto3's takes a few hundred milliseconds of CPU)
        contacts nothing; a connector that cannot be made now fails in its
        jobs, with their retries, as before.
        """
        for name in self.config.connectors:
            try:
                getattr(self.connector(name), "client", None)
            except Exception as exc:
                logger.debug("connector %s not made in advance: %s", name, exc)

    def delete_check(self, item: FileStorage, connector: str, now: datetime) -> DeleteCheck:
        """The delete rule of ``connector`` for ``item``, as it stands at ``now``."""
        policy = self.config.policies.get(connector)
        rule = policy.delete if policy is not None else None
        if rule is None:
            return DeleteCheck(cutoff=None, min_other_copies=0, preference=self.preference)
        facts = {"data_slug": item.data_slug, "process_type": item.process_type}
        delay = resolve_delay(rule, **facts).value
        return DeleteCheck(
            cutoff=cutoff(now, delay),
            min_other_copies=resolve_min_other_copies(rule, **facts).value,
            preference=self.preference,
        )


_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Make ``runtime`` the one this process's actors use."""
    global _runtime
    _runtime = runtime


def current() -> Runtime:
    if _runtime is None:
        raise RuntimeError("no runtime installed: call resolwe_storage.jobs.install first")
    return _runtime


def copy_messages(
    item_id: int, target: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The jobs that copy ``files`` (path, size) of one item to ``target`` (``copy_jobs``)."""
    return copy_jobs(target, [(item_id, files)])


def copy_jobs(
    target: str, items: Sequence[tuple[int, Sequence[tuple[str, int | None]]]]
) -> list[dramatiq.Message]:
    """The jobs that copy to ``target`` the files (path, size) of ``items`` (item id, files).

    Small files share jobs, across items (``copy_items``; ``copy_files``
    when a job holds files of one item only), so a job's catalog work is
    shared by all of them: as few jobs as ``DEFAULT_JOB_FILES`` files and
    ``DEFAULT_JOB_BYTES`` bytes a job allow, and of equal size (2,000 files
    make 16 jobs of 125, not 15 full ones and a straggler that a pool
    waits on at the end). An item's files stay in order and together,
    except where a job boundary falls inside the item: then its first files
    end one job and the rest begin the next. A file larger than
    ``DEFAULT_JOB_BYTES`` has a job of its own; an item without files gets
    a ``finish_copy``.
    """
    messages = []
    small: list[tuple[int, str, int]] = []
    for item_id, item_files in items:
        if not item_files:
            messages.append(message(QUEUE_COPY, ACTOR_FINISH, item_id, target))
            continue
        for path, size in item_files:
            if (size or 0) > DEFAULT_JOB_BYTES:
                messages.append(_copy_files(item_id, target, [path], size or 0))
            else:
                small.append((item_id, path, size or 0))
    for run, size in _even_runs(small):
        group: list[list[Any]] = []
        for item_id, path, _ in run:
            if group and group[-1][0] == item_id:
                group[-1][1].append(path)
            else:
                group.append([item_id, [path]])
        if len(group) == 1:
            [[item_id, paths]] = group
            messages.append(_copy_files(item_id, target, paths, size))
        else:
            messages.append(
                message(QUEUE_COPY, ACTOR_COPY_ITEMS, target, group, time_limit=time_limit_ms(size))
            )
    return messages


#: Something to cut into runs: its size (or None) comes last.
_Entry = TypeVar("_Entry", bound=tuple[Any, ...])


def _even_runs(files: Sequence[_Entry]) -> list[tuple[list[_Entry], int]]:
    """``files`` (..., size) cut in order into the fewest runs the limits allow, even; with bytes.

    First into equal counts of files, as many runs as the file and byte
    limits need between them; then a run still over the byte limit (sizes
    uneven) is cut again where it fills (``_cut``).
    """
    if not files:
        return []
    total = sum(entry[-1] or 0 for entry in files)
    wanted = max(-(-len(files) // DEFAULT_JOB_FILES), -(-total // DEFAULT_JOB_BYTES))
    bounds = [len(files) * number // wanted for number in range(wanted + 1)]
    return [
        run
        for begin, end in itertools.pairwise(bounds)
        for run in _cut(files[begin:end], end - begin, DEFAULT_JOB_BYTES)
    ]


def _copy_files(item_id: int, target: str, paths: list[str], size: int) -> dramatiq.Message:
    return message(
        QUEUE_COPY, ACTOR_COPY_MANY, item_id, target, paths, time_limit=time_limit_ms(size)
    )


def verify_messages(
    item_id: int, connector: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The jobs that verify ``files`` (path, size) of the item's copy on ``connector``.

    Shared as a copy's are; each job's time limit grows with its bytes (they
    are read back). An item without files gets one job of none, which
    records the copy verified.
    """
    return [
        message(
            QUEUE_VERIFY,
            ACTOR_VERIFY_MANY,
            item_id,
            connector,
            paths,
            time_limit=time_limit_ms(size),
        )
        for paths, size in _batches(files, DEFAULT_JOB_FILES, DEFAULT_JOB_BYTES) or [([], 0)]
    ]


def repair_messages(
    item_id: int, connector: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The job that repairs the item's damaged copy on ``connector``, whose bad files are ``files``.

    One job: its time limit grows with the bytes of the bad files.
    """
    size = sum(size or 0 for _, size in files)
    return [message(QUEUE_COPY, ACTOR_REPAIR, item_id, connector, time_limit=time_limit_ms(size))]


def delete_messages(
    item_id: int, connector: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The jobs that delete the item's copy on ``connector``, whose files are ``files``.

    Up to ``DEFAULT_DELETE_JOB_FILES`` files a job, each given
    ``DEFAULT_DELETE_MS_PER_FILE`` on top of the base time limit (each is a
    request to the store, or part of one). An item without files gets one
    job of none, which removes the location.
    """
    batches = _batches(files, DEFAULT_DELETE_JOB_FILES, None) or [([], 0)]
    return [
        message(
            QUEUE_DELETE,
            ACTOR_DELETE_MANY,
            item_id,
            connector,
            paths,
            time_limit=DEFAULT_TIME_LIMIT_MS + len(paths) * DEFAULT_DELETE_MS_PER_FILE,
        )
        for paths, _ in batches
    ]


def _batches(
    files: Sequence[tuple[str, int | None]], max_files: int, max_bytes: int | None
) -> list[tuple[list[str], int]]:
    """``files`` (path, size) cut, in order, into runs of at most so many files and bytes.

    A file larger than ``max_bytes`` has a run of its own. Returns each
    run's paths and bytes.
    """
    return [([path for path, _ in run], size) for run, size in _cut(files, max_files, max_bytes)]


def _cut(
    entries: Sequence[_Entry], max_files: int, max_bytes: int | None
) -> list[tuple[list[_Entry], int]]:
    """``entries`` cut, in order, into runs of at most so many entries and bytes; with bytes.

    An entry larger than ``max_bytes`` has a run of its own.
    """
    runs: list[tuple[list[_Entry], int]] = []
    run: list[_Entry] = []
    total = 0
    for entry in entries:
        size = entry[-1] or 0
        full = len(run) >= max_files or (max_bytes is not None and total + size > max_bytes)
        if run and full:
            runs.append((run, total))
            run, total = [], 0
        run.append(entry)
        total += size
    if run:
        runs.append((run, total))
    return runs


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
    again ``DEFAULT_MISMATCH_RETRIES`` times before giving up.
    """
    limit = _runtime.max_retries if _runtime is not None else DEFAULT_MAX_RETRIES
    if isinstance(exc, ChecksumMismatch):
        return retries < min(DEFAULT_MISMATCH_RETRIES, limit)
    transient = getattr(exc, "transient", None)
    if transient is None:
        transient = isinstance(exc, (pw.OperationalError, pw.InterfaceError, *UNREACHABLE))
    return bool(transient) and retries < limit


# -- the actors' bodies ----------------------------------------------------------


# Actors return nothing (Dramatiq keeps no results); outcomes go to the log
# and, for what was done, to the action history.


def copy_file_job(item_id: int, target: str, path: str) -> None:
    copy_files_job(item_id, target, [path])


def copy_files_job(item_id: int, target: str, paths: list[str]) -> None:
    report = _copy(target, [(item_id, paths)], look=look_first(paths, retries=_current_retries()))
    logger.info(
        "copy of %d file(s) of item %s to %s: %d copied, %d there already%s",
        len(paths),
        item_id,
        target,
        report.copied,
        report.already_there,
        ", not wanted" if report.not_wanted else "",
    )


def copy_items_job(target: str, items: list[list[Any]]) -> None:
    wanted = [(item_id, paths) for item_id, paths in items]
    report = _copy(target, wanted, look=_current_retries() > 0)
    logger.info(
        "copy of %d item(s) to %s: %d file(s) copied, %d there already, %d not wanted",
        len(wanted),
        target,
        report.copied,
        report.already_there,
        report.not_wanted,
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


def finish_copy_job(item_id: int, target: str) -> None:
    with _catalog(current()):
        done = finish_location(item_id, target)
    logger.info("copy of item %s to %s finished: %s", item_id, target, done)


def delete_files_job(item_id: int, connector: str, paths: list[str] | None) -> None:
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
    logger.info("delete of item %s from %s: %s", item_id, connector, outcome)


def delete_location_job(item_id: int, connector: str) -> None:
    delete_files_job(item_id, connector, None)


def verify_files_job(item_id: int, connector: str, paths: list[str] | None) -> None:
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
    outcome = "no OK copy" if report is None else "ok" if report.ok else "failed"
    logger.info("verification of item %s on %s: %s", item_id, connector, outcome)


def verify_location_job(item_id: int, connector: str) -> None:
    verify_files_job(item_id, connector, None)


def repair_location_job(item_id: int, connector: str) -> None:
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
    logger.info(
        "repair of item %s on %s: %d file(s) repaired, now %s",
        item_id,
        connector,
        report.repaired,
        report.status,
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
        if getattr(exception, "recorded", False):
            return
        action = "repair" if message.actor_name == ACTOR_REPAIR else queue or message.actor_name
        how = f"gave up after {retries} tries" if retries else "failed"
        try:
            with _catalog(_runtime):
                for item_id, target, paths in _work_of(message.actor_name, args):
                    item = FileStorage.get_or_none(FileStorage.id == item_id)
                    Action.create(
                        actor=ACTOR_NAME,
                        action=action,
                        item_key=item.key if item is not None else None,
                        file_storage=item,
                        target=target,
                        path=_paths_of(paths) if paths is not None else None,
                        result="failed",
                        error=f"{how}: {exception}",
                    )
        except (pw.OperationalError, pw.InterfaceError) as exc:
            # The catalog is out of reach (most likely why the job failed):
            # the dead letter keeps the job, the log says so once.
            logger.warning("%s not recorded in the history: %s", message.actor_name, exc)


def _marker(actor: str, args: list[Any]) -> str | None:
    """The pending marker a job of ``actor`` frees when it ends, if any."""
    if len(args) < 2:
        return None
    if actor == ACTOR_REPAIR:
        return Pending.key(PENDING_REPAIR, args[0], args[1])
    queue, _ = ACTORS.get(actor, ("", None))
    if queue in (QUEUE_DELETE, QUEUE_VERIFY):
        return Pending.key(queue, args[0], args[1])
    return None


def _work_of(actor: str, args: list[Any]) -> list[tuple[Any, Any, Any]]:
    """(item id, connector, paths or None) of each item a job works on."""
    if actor == ACTOR_COPY_ITEMS and len(args) == 2:
        return [(item_id, args[0], paths) for item_id, paths in args[1]]
    if len(args) < 2:
        return []
    return [(args[0], args[1], args[2] if len(args) > 2 else None)]


def _paths_of(value: Any) -> str:
    """The file path(s) of a copy job, for the history."""
    if isinstance(value, list) and value:
        return files_label(value)
    return str(value)


def declare_actors(broker: dramatiq.Broker) -> dict[str, dramatiq.Actor]:
    """Declare every actor on ``broker`` (with the retry rules and the history middleware)."""
    if not any(isinstance(m, GiveUpHistory) for m in broker.middleware):
        # Its hook must run after the Retries middleware's, which decides
        # that a message fails for good; "after" hooks run last added first.
        broker.add_middleware(GiveUpHistory(), before=Retries)
    if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
        broker.add_middleware(CurrentMessage())
    declared = {}
    for name, (queue, body) in ACTORS.items():
        declared[name] = dramatiq.actor(
            body,
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


#: Errors a job may end with in normal operation (a line each, no traceback:
#: ``broker.QuietLogs``); anything else is a bug.
EXPECTED_FAILURES = (
    ConnectorError,
    CatalogError,
    pw.OperationalError,
    pw.InterfaceError,
    *UNREACHABLE,
)
