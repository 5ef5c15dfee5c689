"""The scheduler's lease and loop on a real Redis: one replica scans, another takes over.

The runtime is built here, as the wiring would from a configuration: the
policies as ``scheduler.rules`` values, a SQLite catalog, the Redis broker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import peewee as pw
import pytest
import redis
from dramatiq.middleware import Middleware

from catalog.models import FileStorage, ReferencedPath, StorageLocation, utcnow
from scheduler import loop as loop_module
from scheduler.lease import Lease
from scheduler.loop import ScanLoop
from scheduler.rules import ConnectorPolicy, Rule
from scheduler.scan import ScanReport
from workers.broker import BrokerUnavailable, make_broker
from workers.messages import QUEUE_COPY

if TYPE_CHECKING:
    from tests.servers.redis import PrivateRedis

pytest_plugins = ["tests.servers.redis"]

#: Generous: a slow machine passes; the waits end as soon as the thing happens.
DEADLINE_S = 30.0
POLICIES = {
    "local": ConnectorPolicy("local", priority=0),
    "backup": ConnectorPolicy("backup", priority=10, copy=Rule(delay=0)),
}


def wait_for(condition: Callable[[], bool], what: str, *, within: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        time.sleep(0.02)


def add_item(key: str) -> None:
    item = FileStorage.create(key=key, created=utcnow() - timedelta(days=1))
    StorageLocation.create(
        file_storage=item, connector_name="local", url=key, status="OK", last_update=item.created
    )
    ReferencedPath.create(file_storage=item, path="a.txt", size=3)


def test_a_lease_has_one_holder_and_is_taken_over_once_it_lapses(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    first = Lease(client, "test-lease", ttl_ms=300)
    second = Lease(client, "test-lease", ttl_ms=300)
    assert first.hold() and not second.hold()
    assert first.hold()  # extended by its holder
    # The holder dies: nobody extends it, and the key lapses by itself.
    wait_for(lambda: client.exists("test-lease") == 0, "the lease lapsed")
    assert second.hold() and not first.hold()
    second.release()
    assert first.hold()
    client.close()


def test_only_the_replica_holding_the_lease_scans_and_another_takes_over(
    redis_url: str, sqlite_db: pw.Database
) -> None:
    add_item("one")
    broker = make_broker(redis_url)
    client = redis.Redis.from_url(redis_url)
    scans: dict[str, list[ScanReport]] = {"a": [], "b": []}
    loops = {
        name: ScanLoop(
            POLICIES,
            sqlite_db,
            broker,
            # Kept every second (a third of the TTL, at least a second): a busy
            # machine's late renewal must not hand the lease over mid-test, as
            # 1 s did once under CI. The takeover below is by release.
            lease=Lease(client, "test-scheduler", ttl_ms=3_000),
            report=scans[name].append,
        )
        for name in scans
    }
    stops = {name: threading.Event() for name in scans}
    threads = {
        name: threading.Thread(target=loops[name].run, args=(stops[name],), kwargs={"interval": 1})
        for name in scans
    }
    try:
        threads["a"].start()
        wait_for(lambda: bool(scans["a"]), "the first replica scanned")
        threads["b"].start()
        # A few intervals: the holder scans again, the other never.
        wait_for(lambda: len(scans["a"]) >= 3, "the holder scanned every interval")
        assert scans["b"] == []
        assert sum(report.copies for report in scans["a"]) == 1  # queued once
        assert broker.client.llen(f"dramatiq:{QUEUE_COPY}") == 1  # type: ignore[attr-defined]
        # The holder stops (its lease released): the other takes over.
        stops["a"].set()
        threads["a"].join(DEADLINE_S)
        wait_for(lambda: bool(scans["b"]), "the other replica took over")
        add_item("two")
        wait_for(lambda: sum(r.copies for r in scans["b"]) == 1, "the new item was queued")
        assert broker.client.llen(f"dramatiq:{QUEUE_COPY}") == 2  # type: ignore[attr-defined]
    finally:
        for stop in stops.values():
            stop.set()
        for thread in threads.values():
            if thread.is_alive():
                thread.join(DEADLINE_S)
        client.close()
        broker.close()


def test_one_scan_as_a_command_waits_for_no_one_and_frees_the_lease(
    redis_url: str, sqlite_db: pw.Database
) -> None:
    add_item("one")
    broker = make_broker(redis_url)
    client = redis.Redis.from_url(redis_url)
    other = Lease(client, "test-scheduler", ttl_ms=60_000)
    loop = ScanLoop(POLICIES, sqlite_db, broker, lease=Lease(client, "test-scheduler"))
    assert other.hold()
    assert loop.once() is None  # another replica holds it: nothing scanned
    assert broker.client.llen(f"dramatiq:{QUEUE_COPY}") == 0  # type: ignore[attr-defined]
    other.release()
    report = loop.once()
    assert report is not None and report.copies == 1
    assert client.exists("test-scheduler") == 0  # freed for the replicas that run on
    client.close()
    broker.close()


def test_one_scan_as_a_command_keeps_the_lease_while_it_scans(
    redis_url: str, sqlite_db: pw.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scheduler --once`` holds the lease for its whole scan, however long.

    A scan of a large catalog takes longer than the lease's time to live;
    unless the lease is extended meanwhile, a replica of ``scheduler`` takes
    it and scans the same catalog at the same time.
    """
    add_item("one")
    broker = make_broker(redis_url)
    client = redis.Redis.from_url(redis_url)
    rival = Lease(client, "test-scheduler", ttl_ms=300)
    taken: list[bool] = []
    real_scan = loop_module.scan

    def slow_scan(*args: object, **kwargs: object) -> ScanReport:
        time.sleep(1.0)  # more than three times the lease's time to live
        taken.append(rival.hold())  # another replica asks for the lease meanwhile
        return real_scan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop_module, "scan", slow_scan)
    loop = ScanLoop(POLICIES, sqlite_db, broker, lease=Lease(client, "test-scheduler", ttl_ms=300))
    try:
        assert loop.once() is not None
        assert taken == [False], "another replica took the lease while the scan ran"
    finally:
        client.close()
        broker.close()


class StopsRedis(Middleware):
    """Stops the Redis server while the ``at``-th job is being queued: an outage mid-scan."""

    def __init__(self, server: PrivateRedis, *, at: int) -> None:
        self.server = server
        self.at = at
        self.seen = 0

    def before_enqueue(self, broker: object, message: object, delay: object) -> None:
        self.seen += 1
        if self.seen == self.at:
            self.server.stop()


def test_one_scan_as_a_command_that_redis_stops_says_what_it_had_queued(
    private_redis: PrivateRedis, sqlite_db: pw.Database
) -> None:
    """``scheduler --once`` cut off by Redis mid-scan says how many jobs went out.

    The lease cannot be freed then either (Redis is gone; it lapses by
    itself): that must not replace the scan's own error with one saying
    that nothing was queued.
    """
    add_item("stalled")
    # A copy reserved two hours ago whose jobs were lost: resumed (queued) first.
    StorageLocation.create(
        file_storage=FileStorage.get(FileStorage.key == "stalled"),
        connector_name="backup",
        url="stalled",
        status="PR",
        last_update=utcnow() - timedelta(hours=2),
    )
    add_item("new")
    broker = make_broker(private_redis.url)
    broker.add_middleware(StopsRedis(private_redis, at=2))
    lease = Lease(broker.client, "test-scheduler")  # type: ignore[attr-defined]
    loop = ScanLoop(POLICIES, sqlite_db, broker, lease=lease)
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            loop.once()
        assert "1 job(s) were queued before it stopped" in str(caught.value)
        assert "nothing was queued" not in str(caught.value)
    finally:
        broker.close()


def test_a_scan_into_a_full_redis_is_an_outage_and_leaves_nothing_reserved(
    private_redis: PrivateRedis, sqlite_db: pw.Database
) -> None:
    """Redis refusing writes (full: ``maxmemory`` reached) is met as an outage.

    The scan stops with its one line, and the copy it reserved is not left
    reserved without a job for the hour until stalled copies are resumed:
    the scan once Redis takes writes again queues it.
    """
    add_item("one")
    broker = make_broker(private_redis.url)
    client = redis.Redis.from_url(private_redis.url)
    client.config_set("maxmemory", "1")  # bytes: every write is refused
    loop = ScanLoop(POLICIES, sqlite_db, broker)
    try:
        with pytest.raises(BrokerUnavailable) as caught:
            loop.once()
        assert "maxmemory" in str(caught.value)
        assert not StorageLocation.select().where(StorageLocation.connector_name == "backup")
        assert loop.tick() is None and loop.broker_down.down  # the loop carries on
        client.config_set("maxmemory", "0")
        report = loop.tick()
        assert report is not None and report.copies == 1
        assert client.llen(f"dramatiq:{QUEUE_COPY}") == 1
    finally:
        client.close()
        broker.close()


class StopsOnFirstJob(Middleware):
    """Sets ``stop`` (as a SIGTERM does) while the scan queues its first job."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop

    def before_enqueue(self, broker: object, message: object, delay: object) -> None:
        if not self.stop.is_set():
            self.stop.set()
            time.sleep(0.3)  # the scan is mid-batch: reserved, not yet queued


def test_a_scheduler_stopped_mid_scan_ends_the_scan_at_a_batch_before_it_returns(
    redis_url: str, catalog_db: pw.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM during a scan: the scan ends after the batch it is in, then the lease is freed.

    ``scheduler`` ends its process as soon as ``run`` returns (``os._exit``):
    a scan still running then is cut wherever it is, between reserving copies
    (``PR``) and queueing their jobs too, and another replica may scan
    already, the lease freed. Everything reserved is queued, and nothing
    happens once ``run`` has returned.
    """
    from scheduler import scan as scan_module

    monkeypatch.setattr(scan_module, "DEFAULT_SCAN_BATCH", 1)  # a batch per item
    for key in ("a", "b", "c"):
        add_item(key)
    broker = make_broker(redis_url)
    client = redis.Redis.from_url(redis_url)
    stop = threading.Event()
    broker.add_middleware(StopsOnFirstJob(stop))
    loop = ScanLoop(POLICIES, catalog_db, broker, lease=Lease(client, "test-scheduler"))

    def state() -> tuple[int, int]:
        reserved = StorageLocation.select().where(StorageLocation.connector_name == "backup")
        return reserved.count(), client.llen(f"dramatiq:{QUEUE_COPY}")

    try:
        loop.run(stop, interval=600)
        at_return = state()
        assert client.exists("test-scheduler") == 0
        time.sleep(1.0)
        assert state() == at_return, "the scan went on after the scheduler stopped"
        assert at_return == (1, 1), "not stopped after the batch under way, all of it queued"
    finally:
        client.close()
        broker.close()


def test_one_scan_as_a_command_stopped_mid_scan_queues_what_it_reserved(
    redis_url: str, catalog_db: pw.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``scheduler --once`` told to stop (its SIGTERM sets ``stopping``) ends after the batch."""
    from scheduler import scan as scan_module

    monkeypatch.setattr(scan_module, "DEFAULT_SCAN_BATCH", 1)
    for key in ("a", "b", "c"):
        add_item(key)
    broker = make_broker(redis_url)
    client = redis.Redis.from_url(redis_url)
    loop = ScanLoop(POLICIES, catalog_db, broker, lease=Lease(client, "test-scheduler"))
    broker.add_middleware(StopsOnFirstJob(loop.stopping))
    try:
        report = loop.once()
        assert report is not None and report.stopped and report.copies == 1
        assert "stopped" in report.summary()
        reserved = StorageLocation.select().where(StorageLocation.connector_name == "backup")
        assert (reserved.count(), client.llen(f"dramatiq:{QUEUE_COPY}")) == (1, 1)
        assert client.exists("test-scheduler") == 0
    finally:
        client.close()
        broker.close()
