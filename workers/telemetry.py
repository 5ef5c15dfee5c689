"""What each job did: one log line, and the worker's Prometheus metrics.

A job's body returns a ``Done`` (files, bytes, its outcome), which
``reporting`` hands over beside Dramatiq (which keeps no results); the
``JobLog`` middleware, which runs after every job, adds what the message says (the
action, the connector, the items) and how long it took, and writes one
line at ``info``:

    copy of 'sample-1' (+4 items) to archive: 12 files, 3.1 MiB in 0.52 s: copied

A job that failed gets the same line with ``retrying`` or ``failed`` as its
result (``GiveUpHistory`` records the failure). Under ``--log-format json``
the line's fields are also the record's ``job`` attribute.

Metrics (``WorkerMetrics``), when a worker serves them:

==========================================  ===================================
``resolwe_storage_jobs_total``              jobs ended, by queue, actor and
                                            result (``ok``, ``retried``,
                                            ``failed``)
``resolwe_storage_job_duration_seconds``    histogram of their run times
``resolwe_storage_job_files_total``         files a job handled, by action and
                                            connector
``resolwe_storage_job_bytes_total``         bytes a job moved or read, by
                                            action and connector
``resolwe_storage_jobs_running``            jobs running now, by queue
==========================================  ===================================

Under ``worker --processes N`` each process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` and the parent serves their sum
(prometheus-client's multiprocess mode); a single process serves its own.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import dramatiq
import peewee as pw
from dramatiq.middleware import Middleware

from catalog.models import FileStorage

logger = logging.getLogger("workers.jobs")

#: Job durations the histogram tells apart (seconds).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: Item keys a job's line names; the rest are counted.
KEYS_SHOWN = 1


class Done(NamedTuple):
    """What a job's body reports: files handled, bytes moved, its outcome in a word or two."""

    files: int = 0
    bytes: int = 0
    result: str = "ok"


class Work(NamedTuple):
    """What a message asks, read from its actor and arguments (``workers.actors.describe``)."""

    queue: str
    action: str
    connector: str
    items: Sequence[int] = ()
    #: Files the job names (None: every file of the item).
    files: int | None = None


#: What the job running on this thread reported (``reporting``).
_reported = threading.local()


def reporting(body: Callable[..., Done | None]) -> Callable[..., None]:
    """``body`` as an actor: its ``Done`` goes to the job's log line, not to Dramatiq."""

    @functools.wraps(body)
    def run(*args: Any, **kwargs: Any) -> None:
        _reported.done = body(*args, **kwargs)

    return run


def _take_reported() -> Done | None:
    done, _reported.done = getattr(_reported, "done", None), None
    return done if isinstance(done, Done) else None


class WorkerMetrics:
    """The worker's metrics, registered in ``registry`` (None: multiprocess files only)."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.jobs = Counter(
            "resolwe_storage_jobs",
            "Jobs ended, by queue, actor and result (ok, retried, failed).",
            ["queue", "actor", "result"],
            registry=registry,
        )
        self.duration = Histogram(
            "resolwe_storage_job_duration_seconds",
            "Run time of jobs, by queue and actor.",
            ["queue", "actor"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.files = Counter(
            "resolwe_storage_job_files",
            "Files jobs handled (copied, deleted, verified), by action and connector.",
            ["action", "connector"],
            registry=registry,
        )
        self.bytes = Counter(
            "resolwe_storage_job_bytes",
            "Bytes jobs moved or read, by action and connector.",
            ["action", "connector"],
            registry=registry,
        )
        self.running = Gauge(
            "resolwe_storage_jobs_running",
            "Jobs running now, by queue.",
            ["queue"],
            registry=registry,
            multiprocess_mode="livesum",
        )


class JobLog(Middleware):
    """One line per job at ``info``, and the metrics, from ``describe`` and the job's ``Done``.

    ``database``: where item keys are looked up for the line (only when it
    is written). ``describe``: a message's ``Work``, or None for one that is
    not ours.
    """

    def __init__(
        self,
        describe: Callable[[dramatiq.Message], Work | None],
        database: Callable[[], pw.Database | None],
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.describe = describe
        self.database = database
        self.metrics = metrics
        #: The job this thread runs: its work and when it started.
        self._job = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        work = self.describe(message)
        _reported.done = None
        self._job.running = (work, time.monotonic())
        if work is not None and self.metrics is not None:
            self.metrics.running.labels(work.queue).inc()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        work, started = self._ended()
        if work is None:
            return
        seconds = time.monotonic() - started
        done = _take_reported() or Done(files=work.files or 0)
        if exception is not None:
            done = Done(result="failed" if message.failed else "retried")
        if self.metrics is not None:
            self._count(message, work, done, seconds, exception)
        if logger.isEnabledFor(logging.INFO):
            self._log(work, done, seconds, exception)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        self._ended()

    def _ended(self) -> tuple[Work | None, float]:
        """The running job's work and start, forgotten; its ``running`` gauge lowered."""
        work, started = getattr(self._job, "running", (None, 0.0))
        self._job.running = (None, 0.0)
        if work is not None and self.metrics is not None:
            self.metrics.running.labels(work.queue).dec()
        return work, started

    def _count(
        self,
        message: dramatiq.Message,
        work: Work,
        done: Done,
        seconds: float,
        exception: BaseException | None,
    ) -> None:
        metrics = self.metrics
        assert metrics is not None
        result = "ok" if exception is None else done.result
        metrics.jobs.labels(work.queue, message.actor_name, result).inc()
        metrics.duration.labels(work.queue, message.actor_name).observe(seconds)
        if exception is None:
            metrics.files.labels(work.action, work.connector).inc(done.files)
            metrics.bytes.labels(work.action, work.connector).inc(done.bytes)

    def _log(self, work: Work, done: Done, seconds: float, exception: BaseException | None) -> None:
        keys = self._keys(work.items)
        fields = {
            "action": work.action,
            "connector": work.connector,
            "keys": keys,
            "items": len(work.items),
            "files": done.files,
            "bytes": done.bytes,
            "seconds": round(seconds, 3),
            "result": done.result,
        }
        if exception is not None:
            fields["error"] = str(exception)
        preposition = "to" if work.action in ("copy", "repair") else "on"
        logger.info(
            "%s%s %s %s: %d file(s), %s in %.2f s: %s%s",
            work.action,
            _whose(keys, len(work.items)),
            preposition,
            work.connector,
            done.files,
            human_bytes(done.bytes),
            seconds,
            done.result,
            f" ({exception})" if exception is not None else "",
            extra={"job": fields},
        )

    def _keys(self, items: Sequence[int]) -> list[str]:
        """Keys of the first ``KEYS_SHOWN`` items (their ids where the catalog says nothing)."""
        shown = list(items[:KEYS_SHOWN])
        if not shown:
            return []
        database = self.database()
        found: dict[int, str | None] = {}
        if database is not None:
            try:
                database.connect(reuse_if_open=True)
                found = dict(
                    FileStorage.select(FileStorage.id, FileStorage.key)
                    .where(FileStorage.id.in_(shown))
                    .tuples()
                )
            except (pw.OperationalError, pw.InterfaceError):
                database.close()  # out of reach: the line names ids
        return [found.get(item) or f"#{item}" for item in shown]


def _whose(keys: Sequence[str], items: int) -> str:
    if not keys:
        return ""
    more = f" (+{items - len(keys)} item{'s' if items - len(keys) > 1 else ''})"
    return f" of {keys[0]!r}" + (more if items > len(keys) else "")


def human_bytes(size: int) -> str:
    """``size`` in bytes as a short figure: ``512 B``, ``3.1 MiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
