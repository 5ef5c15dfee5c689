"""Metrics and health over HTTP: ``/metrics``, ``/healthz``, ``/readyz``.

``worker``, ``scheduler`` and ``dashboard`` serve them (``--metrics-bind``,
loopback by default). ``/healthz`` answers 200 while the process works
(a worker's threads or processes run); ``/readyz`` answers 200 when the
catalog and the broker answer, 503 otherwise, with a JSON body saying what
each check found (the scheduler's also says whether it holds the lease; a
standby replica is ready too).

What is exported (Prometheus text format; ``exported_metric_names`` lists
every sample name):

- the workers' job counters (``workers.telemetry.WorkerMetrics``);
- the scheduler's scans (``SchedulerMetrics``);
- catalog and queue gauges (``CatalogCollector``): the queues' read from
  Redis at scrape time, at most once per ``DEFAULT_CATALOG_CACHE_SECONDS``;
  the catalog's (a few grouped queries over whole tables: seconds on a
  catalog of millions of items) read again once they are older than that
  and than ``DEFAULT_CATALOG_COST_FACTOR`` times their last read took: in
  the scrape where that read was quick (``DEFAULT_INLINE_READ_SECONDS``),
  otherwise in the background, a scrape serving the last values meanwhile.
  The scheduler and the dashboard serve them (the dashboard's overview page
  shows the same read, with its age); several replicas serve the same
  values (query them with ``max``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import peewee as pw

if TYPE_CHECKING:
    from resolwe_storage.metrics_http import MetricsServer

logger = logging.getLogger(__name__)


def new_registry() -> Any:
    """A registry to serve, without ``_created`` series (they would double the output)."""
    from prometheus_client import CollectorRegistry, disable_created_metrics

    disable_created_metrics()
    return CollectorRegistry()


#: Where metrics and health are served unless told otherwise (loopback only).
DEFAULT_WORKER_METRICS = "127.0.0.1:9191"
DEFAULT_SCHEDULER_METRICS = "127.0.0.1:9192"
#: Seconds the queue and catalog gauges are reused between scrapes, at least.
DEFAULT_CATALOG_CACHE_SECONDS = 5.0
#: The catalog gauges are reused for this many times as long as their last read
#: took, at least: a read of 3 s (a million items on SQLite) is done again 30 s
#: later, so metrics hold a catalog connection a tenth of the time at most,
#: however large the catalog and however often it is scraped.
DEFAULT_CATALOG_COST_FACTOR = 10.0
#: A due read of the catalog gauges whose last read took less than this (s) is
#: made at once, in the scrape or page that found it due, which then shows
#: figures as of that request; a costlier one goes on behind.
DEFAULT_INLINE_READ_SECONDS = 0.5
#: What ``--metrics-bind`` takes to serve nothing.
OFF = ("off", "none", "")
#: The location states as metrics name them.
STATE_NAMES = {
    "OK": "ok",
    "DM": "damaged",
    "PR": "in_progress",
    "UP": "uploading",
    "DE": "deleting",
}


def parse_bind(value: str | None, *, option: str = "--metrics-bind") -> tuple[str, int] | None:
    """``HOST:PORT`` as a pair; None for ``off``. Raises ValueError naming ``option``."""
    if value is None or value.strip().lower() in OFF:
        return None
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{option}: expected HOST:PORT (or off), not {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


# -- readiness --------------------------------------------------------------


def catalog_answers(database: pw.Database) -> str:
    """``ok``, or why the catalog did not answer (one line, no credentials)."""
    try:
        with database.connection_context():
            database.execute_sql("SELECT 1")
    except (pw.OperationalError, pw.InterfaceError, pw.DatabaseError) as exc:
        return first_line(exc)
    return "ok"


def broker_answers(broker: Any) -> str:
    """``ok``, or why Redis did not answer; an in-process broker always answers."""
    client = getattr(broker, "client", None)
    if client is None:
        return "ok"
    import redis

    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        return first_line(exc)
    return "ok"


def first_line(exc: BaseException) -> str:
    """The first line of what ``exc`` says, with any URL's credentials taken out (for a log)."""
    from catalog.database import redact_url

    text = str(exc).strip().splitlines()
    return redact_url(text[0] if text else type(exc).__name__)


@dataclass
class Health:
    """What the probes ask: ``alive`` for /healthz, ``checks`` (name → ``ok`` or why) for /readyz.

    ``facts``: more to tell in /readyz's body that does not decide it (the lease).
    """

    alive: Callable[[], bool]
    checks: Mapping[str, Callable[[], str]]
    facts: Mapping[str, Callable[[], Any]] | None = None

    def ready(self) -> tuple[bool, dict[str, Any]]:
        found: dict[str, Any] = {name: check() for name, check in self.checks.items()}
        ok = all(value == "ok" for value in found.values())
        for name, fact in (self.facts or {}).items():
            found[name] = fact()
        return ok, found


def standard_health(
    database: pw.Database, broker: Any, *, alive: Callable[[], bool] = lambda: True
) -> Health:
    """Ready when the catalog and the broker answer."""
    return Health(
        alive=alive,
        checks={
            "catalog": lambda: catalog_answers(database),
            "broker": lambda: broker_answers(broker),
        },
    )


# -- the server -------------------------------------------------------------


def serve(bind: tuple[str, int] | None, registry: Any, health: Health) -> MetricsServer | None:
    """Serve metrics and health on ``bind`` (None: not at all).

    A port in use is logged, not raised: a worker's jobs matter more than
    its metrics (and its readiness probe tells the orchestrator). The HTTP
    server (``resolwe_storage.metrics_http``) is loaded only here:
    ``http.server`` is about 20 ms of start-up, which ``run --once`` and
    ``scan`` do not need.
    """
    if bind is None:
        return None
    from resolwe_storage.metrics_http import MetricsServer

    try:
        server = MetricsServer(bind, registry, health)
    except OSError as exc:
        logger.error(
            "metrics: cannot listen on %s:%d (%s); serving no metrics or health",
            bind[0],
            bind[1],
            exc.strerror or exc,
        )
        return None
    logger.info("metrics and health on %s (/metrics, /healthz, /readyz)", server.url)
    return server.start()


# -- the scheduler's metrics --------------------------------------------------


class SchedulerMetrics:
    """Scans: how long, how many, the jobs they queued, the deletes they held back."""

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.duration = Histogram(
            "resolwe_storage_scan_duration_seconds",
            "Run time of scans.",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=registry,
        )
        self.scans = Counter(
            "resolwe_storage_scans", "Scans, by result (ok, failed).", ["result"], registry=registry
        )
        self.queued = Counter(
            "resolwe_storage_scan_jobs_queued",
            "Jobs scans queued, by action.",
            ["action"],
            registry=registry,
        )
        self.held = Gauge(
            "resolwe_storage_scan_deletes_held",
            "Due deletes the last scan held back (deletes paused or a cap reached), by connector.",
            ["connector"],
            registry=registry,
        )
        self.lease = Gauge(
            "resolwe_storage_scheduler_lease_held",
            "1 while this scheduler holds the lease (it is the one scanning).",
            registry=registry,
        )
        self.last = Gauge(
            "resolwe_storage_last_scan_timestamp_seconds",
            "When the last scan of this scheduler ended (Unix time).",
            registry=registry,
        )
        for result in ("ok", "failed"):
            self.scans.labels(result)
        for action in ("copy", "delete", "verify", "repair", "remove", "audit"):
            self.queued.labels(action)

    def scanned(self, report: Any) -> None:
        """Count one scan (a ``scheduler.scan.ScanReport``)."""
        self.duration.observe(report.seconds)
        self.scans.labels("ok").inc()
        for action, count in (
            ("copy", report.copies),
            ("delete", report.deletes),
            ("verify", report.verifies),
            ("repair", report.repairs),
            ("remove", report.removals),
            ("audit", report.audits),
        ):
            self.queued.labels(action).inc(count)
        self.held.clear()
        for connector, count in report.held.items():
            self.held.labels(connector).set(count)
        self.last.set(time.time())

    def failed(self) -> None:
        self.scans.labels("failed").inc()


# -- catalog and queue gauges --------------------------------------------------


class CatalogRead(NamedTuple):
    """The catalog gauges as one read found them."""

    #: When the read ended (the collector's clock) and how long it took (s).
    at: float
    took: float
    #: ``catalog_facts`` as read; None: the catalog did not answer.
    facts: Mapping[str, Any] | None
    families: list[Any]


def reuse_seconds(took: float, *, cache_seconds: float, cost_factor: float) -> float:
    """How long the catalog gauges of a read that took ``took`` seconds are served as they are."""
    return max(cache_seconds, cost_factor * took)


class CatalogCollector:
    """Gauges read from the catalog and Redis: the queues' when scraped, the catalog's
    as often as they cost.

    The queue gauges are read at a scrape (reused for ``cache_seconds``).
    The catalog's are read by the first scrape (or begun by ``prime``), and
    again once they are ``reuse_seconds`` old: in the scrape that finds them
    due where the last read took less than ``inline_seconds`` (an ordinary
    catalog: figures as of the scrape), otherwise in a thread of their own
    while scrapes serve the last ones. So a scrape waits on a catalog of
    millions of items only the first time, and such a catalog is not read
    over and over (a read that took seconds is not begun again for
    ``cost_factor`` times as long). Their age and how long their read took
    are gauges too. A read that failed serves no catalog gauges until one
    succeeds. ``broker``: Redis (None or in-process: no queue gauges).
    ``catalog_read`` gives the dashboard's pages the same read.
    """

    def __init__(
        self,
        database: pw.Database,
        broker: Any,
        *,
        cache_seconds: float = DEFAULT_CATALOG_CACHE_SECONDS,
        cost_factor: float = DEFAULT_CATALOG_COST_FACTOR,
        inline_seconds: float = DEFAULT_INLINE_READ_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.broker = broker
        self.cache_seconds = cache_seconds
        self.cost_factor = cost_factor
        self.inline_seconds = inline_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._catalog: CatalogRead | None = None
        self._queues: tuple[float, list[Any]] | None = None
        self._reading: threading.Thread | None = None

    def collect(self) -> Iterable[Any]:
        catalog = self.catalog_read()
        with self._lock:
            now = self.clock()
            if self._queues is None or now - self._queues[0] >= self.cache_seconds:
                self._queues = (now, self._queue_families())
            return [
                *catalog.families,
                *read_families(now - catalog.at, catalog.took),
                *self._queues[1],
            ]

    def describe(self) -> Iterable[Any]:
        return []  # not known before a scrape: no checks at registration

    def catalog_read(self) -> CatalogRead:
        """The last read of the catalog gauges, after reading again if due and quick.

        The first call waits for the first read (the one ``prime`` began, if
        any); a due read that was costly last time is begun behind, and the
        last one served meanwhile.
        """
        while True:
            with self._lock:
                read, reading = self._catalog, self._reading
                if read is None and reading is None:
                    read = self._catalog = self._read_catalog()
                    return read
                if read is not None:
                    due = read.at + reuse_seconds(
                        read.took, cache_seconds=self.cache_seconds, cost_factor=self.cost_factor
                    )
                    if self.clock() >= due and reading is None:
                        if read.took < self.inline_seconds:
                            read = self._catalog = self._read_catalog()
                        else:
                            self._read_behind_start()
                    return read
            reading.join()  # the first read, begun by ``prime``: waited for outside the lock

    def prime(self) -> None:
        """Begin the first read in the background, if none was made: the first scrape
        or page of a process serving a large catalog then waits less, or not at all."""
        with self._lock:
            if self._catalog is None and self._reading is None:
                self._read_behind_start()

    def settle(self, timeout: float | None = None) -> None:
        """Wait for a read of the catalog under way, if any (tests; a stopping process)."""
        reading = self._reading
        if reading is not None:
            reading.join(timeout)

    def _read_behind_start(self) -> None:
        """Begin a read in a thread of its own (the caller holds the lock)."""
        self._reading = threading.Thread(
            target=self._read_behind, name="catalog-gauges", daemon=True
        )
        self._reading.start()

    def _read_behind(self) -> None:
        read = None
        try:
            read = self._read_catalog()
        finally:
            with self._lock:
                if read is not None:
                    self._catalog = read
                self._reading = None

    def _read_catalog(self) -> CatalogRead:
        began = self.clock()
        facts: dict[str, Any] | None = None
        families: list[Any] = []
        try:
            with self.database.connection_context():
                facts = catalog_facts(self.database)
            families = catalog_families(facts)
        except (pw.OperationalError, pw.InterfaceError, pw.DatabaseError) as exc:
            facts = None
            logger.warning("metrics: the catalog did not answer: %s", first_line(exc))
        except Exception:  # a thread of its own: said, and tried again later
            facts = None
            logger.exception("metrics: reading the catalog gauges failed")
        ended = self.clock()
        return CatalogRead(ended, ended - began, facts, families)

    def _queue_families(self) -> list[Any]:
        client = getattr(self.broker, "client", None)
        if client is None:
            return []
        import redis

        from workers.messages import QUEUES
        from workers.monitor import live_workers, oldest_queued, queue_stats

        try:
            stats = queue_stats(self.broker, QUEUES)
            oldest = {queue: oldest_queued(self.broker, queue) for queue in QUEUES}
            alive = live_workers(self.broker)
        except (redis.RedisError, OSError) as exc:
            logger.warning("metrics: the broker did not answer: %s", first_line(exc))
            return []
        return queue_families(stats, oldest, alive)


def read_families(age: float, took: float) -> list[Any]:
    """How old the catalog gauges served are, and how long reading them took."""
    from prometheus_client.core import GaugeMetricFamily as Family

    return [
        Family(
            "resolwe_storage_catalog_gauges_age_seconds",
            "Seconds since the catalog gauges served were read (they are read behind scrapes).",
            value=max(0.0, age),
        ),
        Family(
            "resolwe_storage_catalog_gauges_read_seconds",
            "Seconds the last read of the catalog gauges took.",
            value=took,
        ),
    ]


def catalog_families(facts: Mapping[str, Any]) -> list[Any]:
    """The catalog gauges of ``facts`` (``catalog_facts``)."""
    from prometheus_client.core import GaugeMetricFamily as Family

    items = Family("resolwe_storage_items", "Items in the catalog, by status.", labels=["status"])
    for status, count in facts.get("items", {}).items():
        items.add_metric([status], count)
    copies = Family(
        "resolwe_storage_copies",
        "Copies (locations), by connector and state.",
        labels=["connector", "state"],
    )
    copy_bytes = Family(
        "resolwe_storage_copy_bytes", "Bytes of the OK copies, by connector.", labels=["connector"]
    )
    for connector, states in facts.get("copies", {}).items():
        for state, count in states.items():
            copies.add_metric([connector, state], count)
        copy_bytes.add_metric([connector], facts["bytes"].get(connector, 0))
    return [
        items,
        copies,
        copy_bytes,
        Family(
            "resolwe_storage_under_replicated_items",
            "Items with a copy not whole yet: being made or damaged.",
            value=facts.get("under_replicated", 0),
        ),
        Family(
            "resolwe_storage_damaged_items",
            "Items with a damaged copy.",
            value=facts.get("damaged", 0),
        ),
        Family(
            "resolwe_storage_lost_items",
            "Items with a file that is good nowhere.",
            value=facts.get("lost", 0),
        ),
        Family(
            "resolwe_storage_deletes_paused",
            "1 while deletes are paused (resolwe-storage deletes pause).",
            value=1 if facts.get("deletes_paused") else 0,
        ),
    ]


def queue_families(stats: Iterable[Any], oldest: Mapping[str, Any], alive: int) -> list[Any]:
    """The queue gauges: jobs per queue and state, the oldest one's age, live workers."""
    from prometheus_client.core import GaugeMetricFamily as Family

    jobs = Family(
        "resolwe_storage_queue_jobs",
        "Jobs on the queues, by queue and state (queued, delayed, running, dead).",
        labels=["queue", "state"],
    )
    age = Family(
        "resolwe_storage_queue_oldest_job_age_seconds",
        "How long the oldest job waiting on the queue has waited (0: none waits).",
        labels=["queue"],
    )
    now = time.time()
    for row in stats:
        for state in ("queued", "delayed", "running", "dead"):
            jobs.add_metric([row.queue, state], getattr(row, state))
        since = oldest.get(row.queue)
        age.add_metric([row.queue], max(0.0, now - since.timestamp()) if since else 0.0)
    workers = Family(
        "resolwe_storage_workers_alive", "Worker processes with a recent heartbeat.", value=alive
    )
    return [jobs, age, workers]


def catalog_facts(database: pw.Database) -> dict[str, Any]:
    """Items by status; copies and OK bytes per connector; under-replicated, damaged, lost items.

    A few grouped queries, none of them a plan of the catalog: on a million
    items with two million files, about 3.5 s on SQLite, most of it the bytes.
    Under-replicated items are those with a copy not whole yet: being made
    (``PR``, ``UP``) or damaged (``DM``); a copy the rules ask for is reserved
    (``PR``) by the next scan, so it counts from then. Damaged and lost items
    include removed ones in their grace; under-replicated ones do not.
    """
    from catalog.integrity import lost_files
    from catalog.models import FileStorage, StorageLocation
    from catalog.queries import location_counts
    from catalog.settings import deletes_paused

    items: dict[str, int] = dict(
        FileStorage.select(FileStorage.status, pw.fn.COUNT(FileStorage.id))
        .where(FileStorage.removed.is_null())
        .group_by(FileStorage.status)
        .tuples()
    )
    removed = FileStorage.select().where(FileStorage.removed.is_null(False)).count()
    if removed:
        items["removed"] = removed
    copies = {
        connector: {STATE_NAMES.get(status, status.lower()): n for status, n in states.items()}
        for connector, states in location_counts().items()
    }
    # An OK copy holds every file of its item: its bytes are the item's, summed once per item.
    sizes = dict(
        database.execute_sql(
            "SELECT l.connector_name, SUM(s.total) FROM storage_location l"
            " JOIN (SELECT file_storage_id, SUM(size) AS total FROM referenced_path"
            " WHERE size > 0 GROUP BY file_storage_id) s"
            " ON s.file_storage_id = l.file_storage_id"
            " WHERE l.status = 'OK' GROUP BY l.connector_name"
        ).fetchall()
    )

    def items_with(*statuses: str, removed: bool) -> int:
        query = StorageLocation.select(pw.fn.COUNT(StorageLocation.file_storage.distinct())).where(
            StorageLocation.status.in_(statuses)
        )
        if not removed:
            query = query.join(FileStorage).where(FileStorage.removed.is_null())
        return int(query.scalar() or 0)

    return {
        "items": dict(sorted(items.items())),
        "copies": {name: dict(sorted(states.items())) for name, states in sorted(copies.items())},
        "bytes": {name: int(size or 0) for name, size in sizes.items()},
        # A removed item is copied nowhere again, but its damage and loss are
        # still there in its grace (a restore brings them back): counted as
        # ``status`` counts them and as the dashboard lists them.
        "under_replicated": items_with("PR", "UP", "DM", removed=False),
        "damaged": items_with("DM", removed=True),
        "lost": len(lost_files()),
        "deletes_paused": deletes_paused() is not None,
    }


def exported_metric_names() -> set[str]:
    """Every sample name the code exports: the workers', the scheduler's, the catalog's.

    Read off the real metric objects and gauge builders, so a renamed
    metric changes this set.
    """
    from prometheus_client import CollectorRegistry

    from workers.telemetry import WorkerMetrics

    registry = CollectorRegistry()
    WorkerMetrics(registry)
    SchedulerMetrics(registry)
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "gauge": ("",),
    }
    families = [
        *registry.collect(),
        *catalog_families({}),
        *read_families(0.0, 0.0),
        *queue_families([], {}, 0),
    ]
    return {family.name + suffix for family in families for suffix in suffixes[family.type]}
