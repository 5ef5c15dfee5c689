"""A worker process: the actors declared on a broker, a pool of threads running their jobs.

``start`` installs a ``Runtime`` (built by the caller), declares the actors
and starts Dramatiq's worker; ``stop`` lets running jobs finish. The
command line's ``worker`` and ``run`` use it, and so do tests.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.stub import StubBroker

from workers.actors import declare_actors, expected_failures, install
from workers.broker import quiet_logs
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
#: process does not mind the extra wake-ups.
DEFAULT_ONCE_IDLE_MS = 10


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
