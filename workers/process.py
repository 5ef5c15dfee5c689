"""A worker process: the actors declared on a broker, a pool of threads running their jobs.

``start`` installs a ``Runtime`` (built by the caller), declares the actors
and starts Dramatiq's worker; ``stop`` lets running jobs finish. The
command line's ``worker`` and ``run`` use it, and so do tests.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers.actors import declare_actors, expected_failures, install
from workers.broker import keep_share, queued_here, quiet_logs
from workers.messages import QUEUES
from workers.runtime import Runtime
from workers.telemetry import WorkerMetrics

#: Worker threads per process.
DEFAULT_THREADS = 8
#: Seconds a stopping worker lets running jobs finish.
DEFAULT_STOP_SECONDS = 30
#: Milliseconds, at most, an idle worker waits before it looks for work again
#: (on Redis, an enqueue of ours wakes it sooner).
DEFAULT_LOCAL_IDLE_MS = 50
DEFAULT_REDIS_IDLE_MS = 100
#: The same for a process that runs one batch of jobs and exits (``run
#: --once``): stopping waits for each idle thread's wait to end, twice
#: (the job threads, then the consumers), about 90 ms at 50; a short-lived
#: process does not mind the extra wake-ups. (A forked share that ran all
#: its jobs ends without stopping: ``_run_share_and_exit``.)
DEFAULT_ONCE_IDLE_MS = 10
#: Processes, at most, that a batch of jobs is shared among (``run_queued``).
DEFAULT_SHARED_PROCESSES = 4

logger = logging.getLogger(__name__)


class WorkerProcessFailed(Exception):
    """A process that ran a share of the jobs (``run_queued``) ended otherwise than well."""


class Stopped(BaseException):
    """A SIGTERM asked this process to stop (``stopping_on_sigterm``): raised in its main
    thread, so that the jobs under way end before it does."""


#: What a process stopped by a SIGTERM (the jobs under way ended first) says of itself.
STOPPED_MESSAGE = "stopped by SIGTERM: the jobs under way ended first; run again to go on"


@contextlib.contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """While it lasts, a SIGTERM raises ``Stopped`` in the main thread, once.

    The caller stops its workers (``stop``: running jobs finish) and ends,
    as ``worker`` and ``run`` do; a second SIGTERM meanwhile is not heeded
    (Kubernetes sends SIGKILL when its grace is over).
    """

    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def start(
    runtime: Runtime,
    *,
    threads: int = DEFAULT_THREADS,
    queues: Sequence[str] = QUEUES,
    metrics: WorkerMetrics | None = None,
    idle_ms: int | None = None,
) -> dramatiq.Worker:
    """Install ``runtime``, declare the actors on its broker, start ``threads`` threads.

    ``metrics``: where the jobs are counted (``workers.telemetry``);
    ``idle_ms``: how long an idle thread waits before it looks again
    (default: by broker, ``DEFAULT_LOCAL_IDLE_MS`` or ``DEFAULT_REDIS_IDLE_MS``).
    """
    broker = runtime.broker
    declare_actors(broker, metrics=metrics)
    quiet_logs(expected_failures())
    install(runtime)
    threading.Thread(target=runtime.warm, name="warm-connectors", daemon=True).start()
    for queue in QUEUES:
        broker.declare_queue(queue)
    broker.emit_after("process_boot")
    # An idle consumer waits this long at most before it looks for work
    # again: on Redis it is woken at once by our enqueues (``WakingRedisBroker``),
    # and looks by itself this often for jobs others queued, and to hand in
    # the acknowledgements of jobs that ended meanwhile.
    if idle_ms is None:
        idle_ms = DEFAULT_LOCAL_IDLE_MS if isinstance(broker, StubBroker) else DEFAULT_REDIS_IDLE_MS
    worker = dramatiq.Worker(
        broker, queues=set(queues), worker_threads=threads, worker_timeout=idle_ms
    )
    # A process takes no more jobs off a queue than it has threads to run
    # them (Dramatiq's default is twice as many): a job waiting behind a
    # busy process's others while another process idles is time lost, most
    # of all when a scan queues about as many jobs as the pool has threads,
    # and it is one job fewer to hand back when the process dies.
    worker.queue_prefetch = threads
    worker.start()
    return worker


def stop(worker: dramatiq.Worker, *, timeout_s: float = DEFAULT_STOP_SECONDS) -> None:
    """Stop ``worker``, letting running jobs finish for up to ``timeout_s``; close its broker."""
    worker.stop(timeout=int(timeout_s * 1000))
    worker.broker.close()


def usable_cpus(*, cgroup: str = "/sys/fs/cgroup") -> int:
    """The CPUs this process may use: those it may run on, within its container's CPU quota.

    The quota (a Kubernetes CPU limit) is cgroup v2's ``cpu.max`` or v1's
    ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under ``cgroup``, rounded
    up: a pod limited to 1.5 CPUs on a node of 64 may use 2, not 64.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def _cpu_quota(cgroup: str) -> float | None:
    """CPUs the cgroup at ``cgroup`` may use in all, or None where it sets no quota."""
    try:
        with open(f"{cgroup}/cpu.max") as v2:
            quota, period = v2.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct"):
        try:
            with open(f"{cgroup}/{folder}/cpu.cfs_quota_us") as v1:
                quota_us = int(v1.read())
            with open(f"{cgroup}/{folder}/cpu.cfs_period_us") as v1:
                period_us = int(v1.read())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def run_queued(
    runtime: Runtime,
    *,
    processes: int = 1,
    threads: int = DEFAULT_THREADS,
    idle_ms: int | None = None,
) -> None:
    """Run the jobs waiting on the in-process broker, and those they queue, then return.

    For a process that queued a batch of jobs and ends when they have run
    (``run --once``). With ``processes`` above one, the jobs are shared out
    (``workers.broker.keep_share``) among as many processes forked from this
    one, each with its threads, its catalog connections and its own Python
    lock, and this one waits for them: a batch of small files is mostly
    Python and system calls, which one process runs on one CPU at a time
    (measured here on 2,000 files of 16 KiB, 2 CPUs: see the README's
    one-shot row). ``threads`` are shared among them (each has at least
    one): the jobs under way at once, and the memory their transfers hold,
    stay what they were in one process; only CPUs are added. Each waits
    for its own share, so a share may end before another; no job is run
    twice or left. Forked only where that is safe:
    on Linux, from a process with no other thread, with more than one job;
    else the jobs run here. A SIGTERM to this process goes on to them: each
    lets its jobs under way end and takes no more, and this one waits for
    them. Raises ``WorkerProcessFailed`` when one of them did not end well
    (``STOPPED_MESSAGE`` when a SIGTERM stopped them).
    """
    broker = runtime.broker
    assert isinstance(broker, StubBroker), "jobs are shared out on the in-process broker only"
    count = min(processes, queued_here(broker))
    if count < 2 or sys.platform != "linux" or threading.active_count() > 1:
        _run_here(runtime, threads=threads, idle_ms=idle_ms)
        return
    runtime.database.close()  # each process opens its own connections
    children: list[int] = []
    each = max(1, threads // count)
    # A SIGTERM waits until every process is forked and known, to go on to all.
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        for index in range(count):
            pid = os.fork()
            if pid == 0:  # the new process: its share, then its end
                _run_share_and_exit(
                    runtime, index, count, threads=each, idle_ms=idle_ms, unblocked=unblocked
                )
            children.append(pid)
        passed: list[int] = []
        previous = signal.signal(signal.SIGTERM, _passing_on(children, passed))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
    try:
        failed = _wait_for(children)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if passed:
        raise WorkerProcessFailed(STOPPED_MESSAGE)
    if failed:
        raise WorkerProcessFailed(
            f"{len(failed)} of {count} worker processes did not end well "
            f"(exit {', '.join(map(str, failed))}); their jobs may not all have run"
        )


def _run_here(runtime: Runtime, *, threads: int, idle_ms: int | None) -> None:
    worker = start(runtime, threads=threads, idle_ms=idle_ms)
    try:
        _join(runtime)
    finally:
        stop(worker)


def _join(runtime: Runtime) -> None:
    """Wait until every job queued here, and every job they queued, has run and is acknowledged."""
    for queue in QUEUES:
        runtime.broker.join(queue, fail_fast=False)


def _run_share_and_exit(
    runtime: Runtime,
    index: int,
    count: int,
    *,
    threads: int,
    idle_ms: int | None,
    unblocked: set[signal.Signals],
) -> None:
    """In a forked process: run this process's share of the jobs, and end it (never returns).

    A SIGTERM (blocked until its handler is in place: ``unblocked`` is the
    mask to go back to) lets the jobs under way end, and ends the process.
    """
    code = 1
    try:
        signal.signal(signal.SIGTERM, _raise_stopped)
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
        keep_share(runtime.broker, index, count)
        worker = start(runtime, threads=threads, idle_ms=idle_ms)
        try:
            _join(runtime)
        except BaseException:
            stop(worker)  # the jobs under way finish, as in a process that goes on
            raise
        # Every job of the share has run and been acknowledged, and this
        # process ends now: stopping the worker would only wait for each
        # idle thread's wait to end, twice (the job threads, then the
        # consumers: 19-21 ms of a share of about 0.1 s, measured here).
        code = 0
    except KeyboardInterrupt:
        code = 128 + signal.SIGINT
    except Stopped:
        code = 128 + signal.SIGTERM
    except BaseException:
        logger.exception("worker process %d of %d failed", index + 1, count)
    finally:
        # The forking process ends as it would: no teardown of its copy here.
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
                stream.flush()
        os._exit(code)


def _raise_stopped(signum: int, frame: object) -> None:
    """A SIGTERM handler: ``Stopped`` in the main thread; the next SIGTERMs are not heeded."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped


def _passing_on(children: list[int], passed: list[int]) -> Callable[[int, object], None]:
    """A SIGTERM handler: the signal goes on to ``children`` (noted in ``passed``), once.

    This process goes on waiting for them: each lets its jobs under way end.
    """

    def terminated(signum: int, frame: object) -> None:
        if passed:
            return
        passed.append(signum)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    return terminated


def _wait_for(children: list[int]) -> list[int]:
    """Wait for ``children`` to end; the exit codes that were not 0."""
    try:
        codes = []
        for pid in children:
            _, status = os.waitpid(pid, 0)
            codes.append(os.waitstatus_to_exitcode(status))
    except KeyboardInterrupt:
        for pid in children:  # they had it too from a terminal; not from kill
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, signal.SIGINT)
                os.waitpid(pid, 0)
        raise
    return [code for code in codes if code != 0]
