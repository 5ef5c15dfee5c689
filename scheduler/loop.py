"""The scheduler process: a scan every interval, by whichever replica holds the lease.

Any number of replicas may run: a lease in Redis (``scheduler.lease``)
lets one scan at a time, and another takes over within seconds when its
holder dies. APScheduler runs the scan every ``interval`` seconds (a run
that overlaps the last is skipped, not queued) and extends the lease three
times per its time to live, during a long scan too. An outage of the
broker or the catalog is logged once when it starts and once when it ends;
the loop carries on meanwhile. ``run`` (one process, no lease) uses the
same loop.

Stopped (SIGTERM) or out of the lease, a scan ends after the batch it is in
(``scan(stop=)``), and the loop returns only once it has: the process ends
right after, and a scan cut anywhere would leave copies reserved without
their jobs until they are resumed an hour later, and markers that hold
their deletes and verifications back for a day.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import dramatiq
import peewee as pw

from catalog.models import utcnow
from scheduler.lease import Lease
from scheduler.rules import DEFAULT_MAX_REMOVALS_PER_SCAN, ConnectorPolicy
from scheduler.scan import ScanReport, scan
from workers.broker import BrokerUnavailable, answering, unreachable
from workers.outage import Outage

#: Seconds between scans.
DEFAULT_SCAN_INTERVAL = 60
#: Name of the scheduler's lease in Redis.
SCHEDULER_LEASE = "resolwe-storage:scheduler-lease"

logger = logging.getLogger(__name__)


class ScanLoop:
    """Scans ``policies`` into ``broker``: once, or every interval until stopped.

    ``lease``: scan only while holding it (None: this process is the only
    scheduler). ``clock`` gives the time the policies are evaluated at;
    ``report`` receives each scan's report, ``failure`` the error of each
    scan an outage stopped.
    """

    def __init__(
        self,
        policies: Mapping[str, ConnectorPolicy],
        database: pw.Database,
        broker: dramatiq.Broker,
        *,
        lease: Lease | None = None,
        clock: Callable[[], datetime] = utcnow,
        report: Callable[[ScanReport], None] = lambda _: None,
        failure: Callable[[BaseException], None] = lambda _: None,
        removal_delay: int = 0,
        removal_cap: int | None = DEFAULT_MAX_REMOVALS_PER_SCAN,
    ) -> None:
        self.policies = policies
        self.database = database
        self.broker = broker
        self.lease = lease
        self.clock = clock
        self.report = report
        self.failure = failure
        self.removal_delay = removal_delay
        self.removal_cap = removal_cap
        #: Whether this replica held the lease when it last asked.
        self.holding = lease is None
        self.broker_down = Outage("the broker (Redis)", logger)
        self.catalog_down = Outage("the catalog database", logger)
        #: Set when the loop is told to stop: the scan under way ends at a batch.
        self.stopping = threading.Event()
        #: Held while a scan runs (``run`` waits on it before it returns).
        self._scanning = threading.Lock()

    def keep_lease(self) -> bool:
        """Take or extend the lease; True while this replica holds it (or needs none)."""
        if self.lease is None:
            return True
        try:
            held = self.lease.hold()
        except unreachable() as exc:
            self.broker_down.failed(exc)
            self.holding = False
            return False
        self.broker_down.ok()
        self.holding = held
        return held

    def tick(self) -> ScanReport | None:
        """One scan if this replica holds the lease; outages are logged, not raised."""
        with self._scanning:
            if self.stopping.is_set():
                return None
            return self._tick()

    def _tick(self) -> ScanReport | None:
        if not self.keep_lease():
            logger.info("not holding the lease; not scanning")
            return None
        try:
            # A replica that lost the lease meanwhile stops too: another scans now.
            done = self._scan(lambda: self.stopping.is_set() or not self.holding)
        except BrokerUnavailable as exc:
            self.broker_down.failed(exc)
            self.failure(exc)
            return None
        except (pw.DatabaseError, pw.InterfaceError) as exc:
            self.catalog_down.failed(exc)
            self.failure(exc)
            return None
        self.broker_down.ok()
        self.catalog_down.ok()
        self.report(done)
        return done

    def once(self) -> ScanReport | None:
        """One scan, as a command: an outage raises; None when another replica holds the lease.

        ``stopping`` set meanwhile (SIGTERM) ends the scan after a batch.
        """
        with answering(self.broker, what="nothing was queued"):
            if self.lease is not None:
                if not self.lease.hold():
                    return None
                self.holding = True
            # Kept while the scan runs (a large catalog's outlasts the lease's
            # time to live): else another replica takes it and scans at once.
            stop = threading.Event()
            keeper = None
            if self.lease is not None:
                keeper = threading.Thread(target=self._keep_until, args=(stop,), daemon=True)
                keeper.start()
            try:
                done = self._scan(lambda: self.stopping.is_set() or not self.holding)
            finally:
                stop.set()
                if keeper is not None:
                    keeper.join()
                if self.lease is not None:
                    # Redis gone meanwhile: the lease lapses by itself, and the
                    # scan's own error (what it had queued) is the one to tell.
                    with contextlib.suppress(*unreachable()):
                        self.lease.release()
        self.report(done)
        return done

    def _keep_until(self, stop: threading.Event) -> None:
        """Extend the lease three times per its time to live until ``stop`` is set."""
        assert self.lease is not None
        while not stop.wait(max(self.lease.ttl_ms / 3000, 0.01)):
            self.keep_lease()

    def _scan(self, stop: Callable[[], bool]) -> ScanReport:
        with self.database.connection_context():
            return scan(
                self.policies,
                self.database,
                self.broker,
                now=self.clock(),
                removal_delay=self.removal_delay,
                removal_cap=self.removal_cap,
                stop=stop,
            )

    def run(self, stop: threading.Event, *, interval: float = DEFAULT_SCAN_INTERVAL) -> None:
        """Scan now, then every ``interval`` seconds, until ``stop`` is set; then free the lease.

        Returns once a scan under way has ended (after its batch under way).
        """
        from apscheduler.schedulers.background import BackgroundScheduler

        # APScheduler tells of every run of every job at info.
        logging.getLogger("apscheduler").setLevel(
            max(logging.WARNING, logging.getLogger().getEffectiveLevel())
        )
        runner = BackgroundScheduler(timezone="UTC")
        # The first scan now; a scan still running when the next is due skips it.
        runner.add_job(
            self.tick,
            "interval",
            seconds=interval,
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        if self.lease is not None:
            # Keep the lease between scans (and during a long one).
            runner.add_job(self.keep_lease, "interval", seconds=max(self.lease.ttl_ms / 3000, 1))
        runner.start()
        try:
            stop.wait()
        finally:
            self.stopping.set()
            # The lease is still kept (by the runner) while the scan ends its batch.
            with self._scanning:
                pass
            # Waits for a renewal under way too: one after the release takes the lease again.
            runner.shutdown(wait=True)
            if self.lease is not None:
                with contextlib.suppress(*unreachable()):
                    self.lease.release()
