"""What ``scan``, ``scheduler``, ``worker`` and ``run`` do (``resolwe_storage.cli.jobs``).

Imported when one of them runs, not before: it brings the workers' stack
(Dramatiq, Redis, the connectors), which ``--help`` and the commands that
only read the catalog go without. The processes are built from the
configuration (``resolwe_storage.wiring``) and handed to ``scheduler.loop``
and ``workers.process``, which do the work.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import dramatiq

from catalog.models import utcnow
from catalog.story import failures_since, outcome_since
from resolwe_storage import telemetry
from resolwe_storage.cli.base import Context, broker_url, parse_now
from resolwe_storage.errors import InputError, UserError
from resolwe_storage.wiring import worker_runtime
from scheduler.lease import Lease
from scheduler.loop import SCHEDULER_LEASE, ScanLoop
from scheduler.scan import ScanReport, scan
from workers import process
from workers.broker import LAST_SCAN_KEY, answering, make_broker, on_redis, unreachable
from workers.messages import DEFAULT_ONCE_JOB_FILES, QUEUES
from workers.runtime import DEFAULT_MAX_RETRIES, Runtime

logger = logging.getLogger("scheduler")

#: Retries of a transient failure in ``run --once``.
DEFAULT_ONCE_RETRIES = 2


def _until_signalled() -> threading.Event:
    """An event set by SIGTERM or SIGINT (as Kubernetes and Ctrl-C stop us)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


@contextlib.contextmanager
def _stopping_scan(stop: threading.Event) -> Iterator[None]:
    """While it lasts, SIGTERM and SIGINT set ``stop``: the scan ends after its batch under way.

    Ended by the signal's default instead, a scan cut between reserving
    copies and queueing their jobs leaves them reserved for the hour until
    stalled copies are resumed, and its claimed markers hold deletes back.
    """
    previous = {signum: signal.signal(signum, lambda *_: stop.set()) for signum in _STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: What a scan stopped by a signal says (after its summary).
SCAN_STOPPED_MESSAGE = (
    "stopped by a signal: the scan ended after a batch, all it reserved queued; run again to go on"
)


def _print(report: ScanReport) -> None:
    click.echo(report.summary())


def _queues(value: str | None) -> tuple[str, ...]:
    if value is None:
        return QUEUES
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(set(names) - set(QUEUES))
    if unknown or not names:
        raise InputError(
            f"--queues: unknown queue(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(QUEUES)}"
        )
    return names


def _bind(value: str) -> tuple[str, int] | None:
    try:
        return telemetry.parse_bind(value)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def scan_once(context: Context, now: str | None, as_json: bool) -> None:
    """One scheduler pass: queue every due copy, delete and verification, per file."""
    moment = parse_now(now)
    context.warn_ineffective_rules()
    broker = make_broker(broker_url(context, "scan"))
    config = context.config
    stop = threading.Event()
    try:
        with _stopping_scan(stop):
            report = scan(
                config.policies,
                context.database,
                broker,
                now=moment,
                removal_delay=config.removal_delay,
                removal_cap=config.removal_cap,
                stop=stop.is_set,
            )
    finally:
        broker.close()
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        _print(report)
    if report.stopped:
        raise UserError(SCAN_STOPPED_MESSAGE)


def scheduler(context: Context, interval: float, once: bool, metrics_bind: str) -> None:
    """Scan the catalog every --interval seconds and queue the due jobs.

    Any number of replicas may run: a lease in Redis lets one scan at a time,
    and another takes over within seconds when its holder dies.
    """
    bind = None if once else _bind(metrics_bind)
    broker = make_broker(broker_url(context, "scheduler"))
    context.warn_ineffective_rules()
    config = context.config
    metrics: telemetry.SchedulerMetrics | None = None
    server = None
    if bind is not None:
        registry = telemetry.new_registry()
        metrics = telemetry.SchedulerMetrics(registry)
        collector = telemetry.CatalogCollector(context.database, broker)
        registry.register(collector)
        collector.prime()  # the first scrape need not wait for the catalog's gauges

    def scanned(report: ScanReport) -> None:
        if context.log_format == "json":
            logger.info(report.summary(), extra={"scan": report.as_json()})
        else:
            _print(report)
        if metrics is not None:
            metrics.scanned(report)
        # For the dashboard: what the last scan queued, and held back.
        with contextlib.suppress(*unreachable()):
            broker.client.set(  # type: ignore[attr-defined]
                LAST_SCAN_KEY,
                json.dumps(
                    {**report.as_json(), "finished": utcnow().isoformat(timespec="seconds")}
                ),
                ex=max(int(interval) * 10, 3600),
            )

    loop = ScanLoop(
        config.policies,
        context.database,
        broker,
        lease=Lease(broker.client, SCHEDULER_LEASE),  # type: ignore[attr-defined]
        report=scanned,
        failure=lambda _: metrics.failed() if metrics is not None else None,
        removal_delay=config.removal_delay,
        removal_cap=config.removal_cap,
    )
    if bind is not None:
        assert metrics is not None
        health = telemetry.standard_health(context.database, broker)
        health.facts = {"lease": lambda: "held" if loop.holding else "standby"}
        lease_gauge = metrics.lease
        lease_gauge.set_function(lambda: 1.0 if loop.holding else 0.0)
        server = telemetry.serve(bind, registry, health)
    try:
        if once:
            # One pass, as a command: a broker or catalog out of reach is its error line.
            with _stopping_scan(loop.stopping):
                done = loop.once()
            if done is None:
                click.echo("another scheduler holds the lease; not scanning")
            elif done.stopped:
                raise UserError(SCAN_STOPPED_MESSAGE)
            return
        loop.run(_until_signalled(), interval=interval)
    finally:
        if server is not None:
            server.stop()
        broker.close()


def worker(
    context: Context,
    processes: int,
    threads: int,
    queues: str | None,
    metrics_bind: str,
    *,
    stop_timeout: float = process.DEFAULT_STOP_SECONDS,
) -> None:
    """Run jobs from the broker until stopped (SIGTERM lets running jobs finish, for up
    to ``stop_timeout`` seconds)."""
    chosen = _queues(queues)
    bind = _bind(metrics_bind)
    url = broker_url(context, "worker")
    if processes > 1:
        _fork_workers(context, processes, threads, chosen, bind, stop_timeout=stop_timeout)
        return
    context.warn_ineffective_rules()
    broker = make_broker(url)
    runtime = worker_runtime(context.config, context.database, broker)
    shared = os.environ.get(MULTIPROCESS_DIR)
    metrics = None
    if bind is not None or shared:
        from workers.telemetry import WorkerMetrics

        # A process of a pool writes its values to the pool's files
        # (prometheus-client's multiprocess mode); one alone keeps them.
        registry = None if shared else telemetry.new_registry()
        metrics = WorkerMetrics(registry)
    running = process.start(runtime, threads=threads, queues=chosen, metrics=metrics)
    server = None
    if bind is not None:
        health = telemetry.standard_health(
            context.database, broker, alive=lambda: _threads_alive(running)
        )
        server = telemetry.serve(bind, registry if not shared else _pooled(shared), health)
    click.echo(f"worker: {threads} thread(s) on {', '.join(chosen)}", err=True)
    try:
        _until_signalled().wait()
    finally:
        if server is not None:
            server.stop()
        process.stop(running, timeout_s=stop_timeout)


#: Where the processes of a pool keep their metrics (prometheus-client's variable).
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _pooled(path: str) -> Any:
    """A registry serving the sum of the metrics the pool's processes write under ``path``."""
    from prometheus_client import multiprocess

    registry = telemetry.new_registry()
    multiprocess.MultiProcessCollector(registry, path=path)
    return registry


def _threads_alive(running: dramatiq.Worker) -> bool:
    """Whether a worker's consumers and job threads all still run."""
    threads = [*running.consumers.values(), *running.workers]
    return bool(threads) and all(thread.is_alive() for thread in threads)


def _fork_workers(
    context: Context,
    processes: int,
    threads: int,
    queues: Sequence[str],
    bind: tuple[str, int] | None,
    *,
    stop_timeout: float = process.DEFAULT_STOP_SECONDS,
) -> None:
    """Run ``processes`` single-process workers; pass SIGTERM and SIGINT on to them.

    They write their metrics to files in a folder of the pool's, and this
    process serves their sum (and the pool's health) on ``bind``.
    """
    command = [sys.executable, "-m", "resolwe_storage"]
    if context.config_path:
        command += ["--config", context.config_path]
    command += ["worker", "--threads", str(threads), "--queues", ",".join(queues)]
    command += ["--metrics-bind", "off", "--stop-timeout", str(stop_timeout)]
    # They log as this one does (``--log-level``, ``--log-format``).
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    env = {
        **os.environ,
        "RESOLWE_STORAGE_LOG_LEVEL": level,
        "RESOLWE_STORAGE_LOG_FORMAT": context.log_format,
    }
    import subprocess  # here, not above: ``run --once`` starts no process of this kind

    with contextlib.ExitStack() as cleanup:
        server = None
        if bind is not None:
            import tempfile

            from prometheus_client import multiprocess

            folder = os.environ.get(MULTIPROCESS_DIR) or cleanup.enter_context(
                tempfile.TemporaryDirectory(prefix="resolwe-storage-metrics-")
            )
            # A folder of the user's may hold an earlier pool's files (one
            # killed, a container restarted): their counts are not this
            # pool's. prometheus-client asks for it to be emptied at start.
            for stale in Path(folder).glob("*.db"):
                stale.unlink(missing_ok=True)
            env[MULTIPROCESS_DIR] = folder
        children = [subprocess.Popen(command, env=env) for _ in range(processes)]
        if bind is not None:
            health = telemetry.standard_health(
                context.database,
                make_broker(broker_url(context, "worker")),
                alive=lambda: all(child.poll() is None for child in children),
            )
            server = telemetry.serve(bind, _pooled(folder), health)
            if server is not None:
                cleanup.callback(server.stop)
        stop = _until_signalled()
        while not stop.is_set() and all(child.poll() is None for child in children):
            stop.wait(1)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        failed = [child.wait() for child in children]
        if bind is not None:
            for child in children:
                multiprocess.mark_process_dead(child.pid, folder)
    if stop.is_set():
        return
    raise InputError(f"a worker process exited ({', '.join(map(str, failed))}); stopped the rest")


def run(
    context: Context,
    now: str | None,
    once: bool,
    interval: float,
    threads: int,
    as_json: bool,
    *,
    processes: int | None = None,
) -> None:
    """Scheduler and workers in one process (the embedded default needs no servers).

    ``run --once`` on the in-process broker scans first, then shares the
    jobs among ``processes`` processes forked from this one
    (``workers.process.run_queued``; default one per CPU, at most
    ``DEFAULT_SHARED_PROCESSES``). With one process, or on Redis, the
    workers start before the scan and take jobs as it queues them.
    """
    if processes is not None and processes > 1 and not once:
        raise InputError("--processes is for run --once; a running run is one process")
    moment = parse_now(now) if now is not None else None
    context.warn_ineffective_rules()
    broker = make_broker(context.config.broker)
    database = context.database
    if on_redis(broker):
        # Out of reach, nothing is started: one line, not a worker's complaints.
        with answering(broker, what="nothing was done"):
            broker.client.ping()
    began = utcnow()
    clock = utcnow if moment is None else (lambda: moment)
    # One pass should end: a failing job gets a couple of quick retries, not hours of them.
    retries = DEFAULT_ONCE_RETRIES if once else DEFAULT_MAX_RETRIES
    runtime = worker_runtime(context.config, database, broker, max_retries=retries, clock=clock)
    if once:
        if processes is None:
            processes = min(process.DEFAULT_SHARED_PROCESSES, process.usable_cpus())
        shared = processes > 1 and not on_redis(broker)
        try:
            # A SIGTERM lets the jobs under way end (and goes on to the
            # processes the jobs are shared among), as ``worker`` and ``run``.
            with process.stopping_on_sigterm():
                report = (_scan_then_share if shared else _scan_and_run)(
                    context, runtime, clock(), threads=threads, processes=processes
                )
        except process.Stopped:
            raise UserError(process.STOPPED_MESSAGE) from None
        outcome = outcome_since(began)
        failures = failures_since(began)
        lost = _lost()
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "scan": report.as_json(),
                        "actions": outcome,
                        "failed": failures,
                        "lost": lost,
                    }
                )
            )
        else:
            _print(report)
            click.echo(_describe(outcome))
        if failures or lost:
            raise UserError(_trouble(failures, lost))
        return
    running = process.start(runtime, threads=threads)
    try:
        ScanLoop(
            context.config.policies,
            database,
            broker,
            clock=clock,
            report=_print,
            removal_delay=context.config.removal_delay,
            removal_cap=context.config.removal_cap,
        ).run(_until_signalled(), interval=interval)
    finally:
        with contextlib.suppress(*unreachable()):
            process.stop(running)


def _scan_and_run(
    context: Context, runtime: Runtime, now: datetime, *, threads: int, processes: int
) -> ScanReport:
    """One scan, its jobs run by this process's workers, started first to take them as queued."""
    broker = runtime.broker
    running = process.start(runtime, threads=threads, idle_ms=process.DEFAULT_ONCE_IDLE_MS)
    try:
        report = _scan(context, runtime, now)
        with answering(broker, what="the jobs queued may not all have run"):
            for queue in QUEUES:
                _join(broker, queue)
        return report
    finally:
        with contextlib.suppress(*unreachable()):
            process.stop(running)


def _scan_then_share(
    context: Context, runtime: Runtime, now: datetime, *, threads: int, processes: int
) -> ScanReport:
    """One scan, then its jobs shared among ``processes`` processes (in-process broker).

    Fewer, larger jobs than a worker pool's, in a multiple of ``processes``
    (``DEFAULT_ONCE_JOB_FILES``): each lands its files with two flushes.
    """
    report = _scan(context, runtime, now, job_files=DEFAULT_ONCE_JOB_FILES, jobs_multiple=processes)
    try:
        process.run_queued(
            runtime, processes=processes, threads=threads, idle_ms=process.DEFAULT_ONCE_IDLE_MS
        )
    except process.WorkerProcessFailed as exc:
        raise UserError(str(exc)) from None
    return report


def _scan(context: Context, runtime: Runtime, now: datetime, **cut: int) -> ScanReport:
    return scan(
        context.config.policies,
        runtime.database,
        runtime.broker,
        now=now,
        removal_delay=context.config.removal_delay,
        removal_cap=context.config.removal_cap,
        **cut,
    )


def _lost() -> list[dict[str, Any]]:
    from catalog.integrity import keys_of, lost_files

    lost = lost_files(limit=100)
    keys = keys_of(lost)
    return [{"key": keys.get(item_id), "files": paths} for item_id, paths in lost.items()]


def _trouble(failures: list[dict[str, Any]], lost: list[dict[str, Any]]) -> str:
    """One line: the jobs that failed for good, and the items lost."""
    parts = []
    if failures:
        first = failures[0]
        where = (
            f" to {first['target']}"
            if first["action"] == "copy"
            else (f" on {first['target']}" if first["target"] else "")
        )
        parts.append(
            f"{len(failures)} job(s) failed for good, first: {first['action']} of "
            f"{first['key']!r}{where}: {first['error']}"
        )
    if lost:
        parts.append(
            f"{len(lost)} item(s) LOST (a file with no good copy anywhere): "
            + ", ".join(str(entry["key"]) for entry in lost[:5])
        )
    return "; ".join(parts)


def _join(broker: dramatiq.Broker, queue: str) -> None:
    if hasattr(broker, "dead_letters"):  # the in-process broker
        broker.join(queue, fail_fast=False)  # type: ignore[call-arg]
    else:
        broker.join(queue)
        time.sleep(0.1)


def _describe(outcome: dict[str, dict[str, int]]) -> str:
    if not outcome:
        return "done: nothing to do"
    parts = [
        f"{action} " + ", ".join(f"{count} {result}" for result, count in sorted(results.items()))
        for action, results in sorted(outcome.items())
    ]
    return "done: " + "; ".join(parts)
