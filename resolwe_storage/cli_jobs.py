"""The command line's job commands: scan, scheduler, worker, run, request, queues.

Registered on ``resolwe_storage.cli.cli``; the same one-line errors and
``--json`` conventions hold.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

import click
import dramatiq
import peewee as pw
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from catalog.models import Action, utcnow
from resolwe_storage import jobs
from resolwe_storage.api import StorageService
from resolwe_storage.broker import (
    UNREACHABLE,
    BrokerUnavailable,
    Outage,
    answering,
    dead_letters,
    live_workers,
    make_broker,
    queue_stats,
    quiet_logs,
    requeue_dead,
)
from resolwe_storage.cli import Context, _now_option, _parse_now, cli, pass_context
from resolwe_storage.config import Config
from resolwe_storage.errors import InputError, UserError
from resolwe_storage.lease import Lease
from resolwe_storage.scan import ScanReport, scan

#: Seconds between scans of the scheduler and of ``run``.
DEFAULT_SCAN_INTERVAL = 60
#: Worker threads per process.
DEFAULT_THREADS = 8
#: Seconds a stopping worker lets running jobs finish.
DEFAULT_STOP_SECONDS = 30
#: Milliseconds, at most, an idle worker waits before it looks for work again
#: (on Redis, an enqueue of ours wakes it sooner).
DEFAULT_LOCAL_IDLE_MS = 50
DEFAULT_REDIS_IDLE_MS = 100
#: Retries of a transient failure in ``run --once``.
DEFAULT_ONCE_RETRIES = 2
#: Name of the scheduler's lease in Redis.
SCHEDULER_LEASE = "resolwe-storage:scheduler-lease"

logger = logging.getLogger(__name__)


def _broker_url(context: Context, command: str) -> str:
    url = context.config.broker
    if url is None:
        raise InputError(
            f"{command} needs a broker that workers share: set broker: redis://... "
            "(or RESOLWE_STORAGE_BROKER); `run` works in one process without one"
        )
    return url


def start_worker(
    config: Config,
    database: pw.Database,
    broker: dramatiq.Broker,
    *,
    threads: int,
    queues: Sequence[str] = jobs.QUEUES,
    max_retries: int = jobs.DEFAULT_MAX_RETRIES,
    now: datetime | None = None,
) -> dramatiq.Worker:
    """Declare the actors on ``broker`` and start a worker of ``threads`` threads.

    ``now`` fixes the time the workers re-check the rules at (``run --now``).
    """
    jobs.declare_actors(broker)
    quiet_logs(jobs.EXPECTED_FAILURES)
    clock = utcnow if now is None else (lambda: now)
    runtime = jobs.Runtime(config, database, broker, max_retries=max_retries, clock=clock)
    jobs.install(runtime)
    threading.Thread(target=runtime.warm, name="warm-connectors", daemon=True).start()
    for queue in jobs.QUEUES:
        broker.declare_queue(queue)
    broker.emit_after("process_boot")
    # An idle consumer waits this long at most before it looks for work
    # again: on Redis it is woken at once by our enqueues (``WakingRedisBroker``),
    # and looks by itself this often for jobs others queued, and to hand in
    # the acknowledgements of jobs that ended meanwhile.
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


def stop_worker(broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
    worker.stop(timeout=DEFAULT_STOP_SECONDS * 1000)
    broker.close()


def _until_signalled() -> threading.Event:
    """An event set by SIGTERM or SIGINT (as Kubernetes and Ctrl-C stop us)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _summary(report: ScanReport) -> str:
    return (
        f"scan: {report.items} item(s) due; queued {report.jobs} job(s): "
        f"{report.copies} copies, {report.deletes} deletes, {report.verifies} verifications, "
        f"{report.repairs} repairs; "
        f"{report.pending} already queued; {report.resumed} stalled copies resumed; "
        f"{report.unlocked} expired locks closed; "
        f"{report.seconds:.2f} s"
    )


_interval_option = click.option(
    "--interval",
    type=click.FloatRange(min=1),
    default=DEFAULT_SCAN_INTERVAL,
    show_default=True,
    help="Seconds between scans.",
)
_threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=DEFAULT_THREADS,
    show_default=True,
    help="Worker threads per process.",
)


def _queues(value: str | None) -> tuple[str, ...]:
    if value is None:
        return jobs.QUEUES
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(set(names) - set(jobs.QUEUES))
    if unknown or not names:
        raise InputError(
            f"--queues: unknown queue(s) {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(jobs.QUEUES)}"
        )
    return names


@cli.command("scan")
@_now_option
@click.option("--json", "as_json", is_flag=True, help="Print what was queued as JSON.")
@pass_context
def scan_command(context: Context, now: str | None, as_json: bool) -> None:
    """One scheduler pass: queue every due copy, delete and verification, per file."""
    moment = _parse_now(now)
    broker = make_broker(_broker_url(context, "scan"))
    report = scan(context.config, context.database, broker, now=moment)
    if as_json:
        click.echo(json.dumps(report.as_json()))
    else:
        click.echo(_summary(report))


@cli.command()
@_interval_option
@click.option("--once", is_flag=True, help="Scan once (if holding the lease), then exit.")
@pass_context
def scheduler(context: Context, interval: float, once: bool) -> None:
    """Scan the catalog every --interval seconds and queue the due jobs.

    Any number of replicas may run: a lease in Redis lets one scan at a time,
    and another takes over within seconds when its holder dies.
    """
    broker = make_broker(_broker_url(context, "scheduler"))
    lease = Lease(broker.client, SCHEDULER_LEASE)  # type: ignore[attr-defined]
    database = context.database
    # A line when the broker or the catalog stops answering, one when it is back.
    broker_down = Outage("the broker (Redis)", logger)
    catalog_down = Outage("the catalog database", logger)
    # APScheduler tells of every run of every job at info.
    logging.getLogger("apscheduler").setLevel(
        max(logging.WARNING, logging.getLogger().getEffectiveLevel())
    )

    def keep_lease() -> bool:
        try:
            held = lease.hold()
        except UNREACHABLE as exc:
            broker_down.failed(exc)
            return False
        broker_down.ok()
        return held

    def tick() -> None:
        if not keep_lease():
            logger.info("not holding the lease; not scanning")
            return
        try:
            with database.connection_context():
                report = scan(context.config, database, broker, now=utcnow())
        except BrokerUnavailable as exc:
            broker_down.failed(exc)
            return
        except (pw.DatabaseError, pw.InterfaceError) as exc:
            catalog_down.failed(exc)
            return
        catalog_down.ok()
        click.echo(_summary(report))

    if once:
        # One pass, as a command: a broker or catalog out of reach is its error line.
        with answering(broker, what="nothing was queued"):
            if not lease.hold():
                click.echo("another scheduler holds the lease; not scanning")
                return
            try:
                with database.connection_context():
                    click.echo(_summary(scan(context.config, database, broker, now=utcnow())))
            finally:
                lease.release()
        return
    from apscheduler.schedulers.background import BackgroundScheduler

    stop = _until_signalled()
    runner = BackgroundScheduler(timezone="UTC")
    runner.add_job(tick, "interval", seconds=interval, max_instances=1, coalesce=True)
    # Keep the lease between scans (and during a long one).
    runner.add_job(keep_lease, "interval", seconds=max(lease.ttl_ms / 3000, 1))
    runner.start()
    tick()
    try:
        stop.wait()
    finally:
        runner.shutdown(wait=False)
        with contextlib.suppress(*UNREACHABLE):
            lease.release()


@cli.command()
@click.option(
    "--processes", type=click.IntRange(min=1), default=1, show_default=True, help="Processes."
)
@_threads_option
@click.option("--queues", metavar="Q[,Q...]", help="Only these queues (copy, delete, verify).")
@pass_context
def worker(context: Context, processes: int, threads: int, queues: str | None) -> None:
    """Run jobs from the broker until stopped (SIGTERM lets running jobs finish)."""
    chosen = _queues(queues)
    url = _broker_url(context, "worker")
    if processes > 1:
        _fork_workers(context, processes, threads, chosen)
        return
    broker = make_broker(url)
    running = start_worker(context.config, context.database, broker, threads=threads, queues=chosen)
    click.echo(f"worker: {threads} thread(s) on {', '.join(chosen)}", err=True)
    try:
        _until_signalled().wait()
    finally:
        stop_worker(broker, running)


def _fork_workers(context: Context, processes: int, threads: int, queues: Sequence[str]) -> None:
    """Run ``processes`` single-process workers; pass SIGTERM and SIGINT on to them."""
    command = [sys.executable, "-m", "resolwe_storage"]
    if context.config_path:
        command += ["--config", context.config_path]
    command += ["worker", "--threads", str(threads), "--queues", ",".join(queues)]
    # They log as this one does (``--log-level``).
    level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
    env = {**os.environ, "RESOLWE_STORAGE_LOG_LEVEL": level}
    children = [subprocess.Popen(command, env=env) for _ in range(processes)]
    stop = _until_signalled()
    while not stop.is_set() and all(child.poll() is None for child in children):
        stop.wait(1)
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    failed = [child.wait() for child in children]
    if stop.is_set():
        return
    raise InputError(f"a worker process exited ({', '.join(map(str, failed))}); stopped the rest")


@cli.command()
@_now_option
@click.option("--once", is_flag=True, help="Scan once, run every job, print the outcome, exit.")
@_interval_option
@_threads_option
@click.option("--json", "as_json", is_flag=True, help="With --once: print the outcome as JSON.")
@pass_context
def run(
    context: Context,
    now: str | None,
    once: bool,
    interval: float,
    threads: int,
    as_json: bool,
) -> None:
    """Scheduler and workers in one process (the embedded default needs no servers)."""
    moment = _parse_now(now) if now is not None else None
    broker = make_broker(context.config.broker)
    database = context.database
    if isinstance(broker, RedisBroker):
        # Out of reach, nothing is started: one line, not a worker's complaints.
        with answering(broker, what="nothing was done"):
            broker.client.ping()
    began = utcnow()
    # One pass should end: a failing job gets a couple of quick retries, not hours of them.
    retries = DEFAULT_ONCE_RETRIES if once else jobs.DEFAULT_MAX_RETRIES
    running = start_worker(
        context.config, database, broker, threads=threads, max_retries=retries, now=moment
    )
    try:
        if once:
            report = scan(context.config, database, broker, now=moment or utcnow())
            with answering(broker, what="the jobs queued may not all have run"):
                for queue in jobs.QUEUES:
                    _join(broker, queue)
            outcome = _outcome(began)
            failures = _failures(began)
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
                click.echo(_summary(report))
                click.echo(_describe(outcome))
            if failures or lost:
                raise UserError(_trouble(failures, lost))
            return
        stop = _until_signalled()
        broker_down = Outage("the broker (Redis)", logger)
        catalog_down = Outage("the catalog database", logger)
        while not stop.is_set():
            try:
                report = scan(context.config, database, broker, now=moment or utcnow())
            except BrokerUnavailable as exc:
                broker_down.failed(exc)
            except (pw.DatabaseError, pw.InterfaceError) as exc:
                catalog_down.failed(exc)
            else:
                broker_down.ok()
                catalog_down.ok()
                click.echo(_summary(report))
            stop.wait(interval)
    finally:
        with contextlib.suppress(*UNREACHABLE):
            stop_worker(broker, running)


def _failures(since: datetime) -> list[dict[str, Any]]:
    """The failures for good recorded since ``since``: what, of which item, where, why."""
    rows = (
        Action.select()
        .where((Action.started >= since) & (Action.result == "failed"))
        .order_by(Action.id)
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


def _outcome(since: Any) -> dict[str, dict[str, int]]:
    """Counts of the actions recorded since ``since``, by action and result."""
    counts: dict[str, dict[str, int]] = {}
    rows = (
        Action.select(Action.action, Action.result, pw.fn.COUNT(Action.id))
        .where(Action.started >= since)
        .group_by(Action.action, Action.result)
        .tuples()
    )
    for action, result, count in rows:
        counts.setdefault(action, {})[result] = count
    return counts


def _describe(outcome: dict[str, dict[str, int]]) -> str:
    if not outcome:
        return "done: nothing to do"
    parts = [
        f"{action} " + ", ".join(f"{count} {result}" for result, count in sorted(results.items()))
        for action, results in sorted(outcome.items())
    ]
    return "done: " + "; ".join(parts)


@cli.group()
def request() -> None:
    """Queue work now, whatever the policies say."""


@request.command("copy")
@click.argument("key")
@click.option("--to", "target", required=True, metavar="CONNECTOR", help="Copy to this connector.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def request_copy(context: Context, key: str, target: str, as_json: bool) -> None:
    """Queue a copy of item KEY to --to, per file (small files share a job)."""
    service = _service(context, "request copy")
    queued = service.request_copy(key, to=target)
    _report_request(as_json, {"key": key, "action": "copy", "target": target, "jobs": queued})


@request.command("verify")
@click.argument("key")
@click.option("--connector", metavar="CONNECTOR", help="Only the copy on this connector.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def request_verify(context: Context, key: str, connector: str | None, as_json: bool) -> None:
    """Queue a verification of item KEY's OK copies (or of one)."""
    service = _service(context, "request verify")
    queued = service.request_verify(key, connector=connector)
    _report_request(
        as_json, {"key": key, "action": "verify", "connector": connector, "jobs": queued}
    )


def _service(context: Context, command: str) -> StorageService:
    url = _broker_url(context, command)
    return StorageService(context.config, context.database, make_broker(url))


def _report_request(as_json: bool, outcome: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps(outcome))
    else:
        click.echo(f"queued {outcome['jobs']} job(s)")


@cli.command()
@click.option(
    "--dead",
    "dead_limit",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="List this many of the most recently dead-lettered jobs per queue.",
)
@click.option(
    "--retry-dead",
    is_flag=True,
    help="Put the dead-lettered jobs back on their queues (retries reset), then show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts and jobs as JSON.")
@pass_context
def queues(context: Context, dead_limit: int, retry_dead: bool, as_json: bool) -> None:
    """Jobs per queue on Redis: queued, delayed for a retry, running, dead-lettered."""
    broker = make_broker(_broker_url(context, "queues"))
    assert isinstance(broker, RedisBroker)
    requeued = 0
    try:
        if retry_dead:
            requeued = sum(requeue_dead(broker, queue) for queue in jobs.QUEUES)
        stats = queue_stats(broker, jobs.QUEUES)
        dead = [
            letter
            for queue in jobs.QUEUES
            for letter in (dead_letters(broker, queue, limit=dead_limit) if dead_limit else [])
        ]
        workers = live_workers(broker)
    except redis.RedisError as exc:
        raise InputError(f"queues: the broker did not answer: {exc}") from None
    finally:
        broker.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "workers": workers,
                    "requeued": requeued,
                    "queues": [asdict(row) for row in stats],
                    "dead": [
                        {**asdict(letter), "died": letter.died.isoformat()} for letter in dead
                    ],
                }
            )
        )
        return
    if retry_dead:
        click.echo(f"requeued {requeued} dead-lettered job(s)")
    click.echo(f"{workers} worker process(es) alive")
    click.echo(f"{'queue':<8} {'queued':>8} {'delayed':>8} {'running':>8} {'dead':>8}")
    for row in stats:
        click.echo(
            f"{row.queue:<8} {row.queued:>8} {row.delayed:>8} {row.running:>8} {row.dead:>8}"
        )
    for letter in dead:
        arguments = ", ".join(json.dumps(arg) for arg in letter.args)
        click.echo(
            f"dead {letter.died:%Y-%m-%dT%H:%M:%SZ} {letter.queue}: "
            f"{letter.actor}({arguments}) after {letter.retries} retries"
        )
