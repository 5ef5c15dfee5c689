"""The processes: ``scan`` once, the ``scheduler``, the ``worker`` pool, ``run`` (both in one).

Declared here with their options; what they do is in ``running``, imported
when one of them runs (``--help`` does not load the workers' stack).
"""

from __future__ import annotations

from typing import Any

import click

from resolwe_storage.cli.base import Context, cli, now_option, pass_context

#: Defaults of the processes, here so that ``--help`` does not import the
#: workers' stack to show them; a test keeps them equal to
#: ``scheduler.loop.DEFAULT_SCAN_INTERVAL``, ``workers.process.DEFAULT_THREADS``,
#: ``workers.process.DEFAULT_STOP_SECONDS`` and ``resolwe_storage.telemetry``'s binds.
DEFAULT_SCAN_INTERVAL = 60
DEFAULT_THREADS = 8
DEFAULT_STOP_SECONDS = 30
DEFAULT_WORKER_METRICS = "127.0.0.1:9191"
DEFAULT_SCHEDULER_METRICS = "127.0.0.1:9192"

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


def _metrics_option(default: str) -> Any:
    return click.option(
        "--metrics-bind",
        metavar="HOST:PORT",
        default=default,
        show_default=True,
        envvar="RESOLWE_STORAGE_METRICS_BIND",
        help="Serve /metrics, /healthz and /readyz here (off: not at all); "
        "0.0.0.0:PORT in a container; also $RESOLWE_STORAGE_METRICS_BIND.",
    )


@cli.command("scan")
@now_option
@click.option("--json", "as_json", is_flag=True, help="Print what was queued as JSON.")
@pass_context
def scan_command(context: Context, now: str | None, as_json: bool) -> None:
    """One scheduler pass: queue every due copy, delete and verification, per file."""
    from resolwe_storage.cli.running import scan_once

    scan_once(context, now, as_json)


@cli.command()
@_interval_option
@click.option("--once", is_flag=True, help="Scan once (if holding the lease), then exit.")
@_metrics_option(DEFAULT_SCHEDULER_METRICS)
@pass_context
def scheduler(context: Context, interval: float, once: bool, metrics_bind: str) -> None:
    """Scan the catalog every --interval seconds and queue the due jobs.

    Any number of replicas may run: a lease in Redis lets one scan at a time,
    and another takes over within seconds when its holder dies.
    """
    from resolwe_storage.cli.running import scheduler as run_scheduler

    run_scheduler(context, interval, once, metrics_bind)


@cli.command()
@click.option(
    "--processes", type=click.IntRange(min=1), default=1, show_default=True, help="Processes."
)
@_threads_option
@click.option("--queues", metavar="Q[,Q...]", help="Only these queues (copy, delete, verify).")
@_metrics_option(DEFAULT_WORKER_METRICS)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=0),
    default=DEFAULT_STOP_SECONDS,
    show_default=True,
    metavar="SECONDS",
    help="On SIGTERM, how long running jobs may take to finish before the worker exits "
    "(a job cut off is redelivered and starts again); keep it under the orchestrator's "
    "grace period.",
)
@pass_context
def worker(
    context: Context,
    processes: int,
    threads: int,
    queues: str | None,
    metrics_bind: str,
    stop_timeout: float,
) -> None:
    """Run jobs from the broker until stopped (SIGTERM lets running jobs finish)."""
    from resolwe_storage.cli.running import worker as run_worker

    run_worker(context, processes, threads, queues, metrics_bind, stop_timeout=stop_timeout)


@cli.command()
@now_option
@click.option("--once", is_flag=True, help="Scan once, run every job, print the outcome, exit.")
@_interval_option
@_threads_option
@click.option(
    "--processes",
    type=click.IntRange(min=1),
    default=None,
    help="With --once on the in-process broker: processes the jobs are shared among, "
    "and the --threads with them.  [default: one per usable CPU, at most 4]",
)
@click.option("--json", "as_json", is_flag=True, help="With --once: print the outcome as JSON.")
@pass_context
def run(
    context: Context,
    now: str | None,
    once: bool,
    interval: float,
    threads: int,
    processes: int | None,
    as_json: bool,
) -> None:
    """Scheduler and workers in one process (the embedded default needs no servers)."""
    from resolwe_storage.cli.running import run as run_all

    run_all(context, now, once, interval, threads, as_json, processes=processes)
