"""A scan plans the catalog a range of items at a time and queues each range before the next."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import dramatiq
import peewee as pw
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import BrokerConnectionError

import scheduler.scan as scan_module
from catalog.models import (
    AccessLog,
    Action,
    FileStorage,
    ReferencedPath,
    StorageLocation,
    utcnow,
)
from catalog.removal import remove_items
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from scheduler.planning import Planner
from scheduler.rules import ConnectorPolicy, Rule, VerifyRule
from scheduler.scan import DEFAULT_RESUME_AFTER, DeleteBudget, ScanReport, _resume_stale, scan
from tests.runtimes import folder_runtime
from workers import process
from workers.broker import BrokerUnavailable
from workers.messages import QUEUE_COPY

NOW = datetime(2026, 6, 1)
POLICIES = {
    "local": ConnectorPolicy("local", priority=0),
    "backup": ConnectorPolicy("backup", priority=10, copy=Rule(delay=0)),
}


def items_on_local(count: int) -> None:
    old = NOW - timedelta(days=10)
    for number in range(count):
        item = FileStorage.create(key=f"item-{number:03d}", status="OK", created=old)
        ReferencedPath.create(file_storage=item, path="a.txt", size=3)
        StorageLocation.create(
            file_storage=item, connector_name="local", url=str(item.id), status="OK"
        )
        if number % 4 == 0:  # ids with nothing due between those with something
            FileStorage.create(key=f"bare-{number:03d}", created=old)


def test_a_scan_in_small_ranges_reserves_and_queues_every_due_copy_once(
    catalog_db: pw.Database,
) -> None:
    items_on_local(40)
    due = list(Planner(POLICIES, catalog_db).due(now=NOW))
    broker = StubBroker()
    broker.declare_queue(QUEUE_COPY)
    report = scan(POLICIES, catalog_db, broker, now=NOW, plan_range=3, job_files=1)
    assert (report.items, report.copies) == (len(due), 40)
    reserved = StorageLocation.select().where(
        (StorageLocation.connector_name == "backup") & (StorageLocation.status == "PR")
    )
    assert sorted(location.file_storage_id for location in reserved) == sorted(
        item.item_id for item in due
    )
    named = [
        item_id for message in broker.queues[QUEUE_COPY].queue for item_id in _items_of(message)
    ]
    assert sorted(named) == sorted(item.item_id for item in due)
    again = scan(POLICIES, catalog_db, broker, now=NOW, plan_range=3)
    assert (again.items, again.copies, again.jobs) == (0, 0, 0)


def _items_of(raw: bytes) -> list[int]:
    """The item ids a queued copy job names."""
    import json

    message = json.loads(raw)
    if message["actor_name"] == "copy_items_job":
        return [entry[0] for entry in message["args"][1]]
    return [message["args"][0]]


def test_stalled_copies_are_resumed_a_batch_at_a_time_each_once(
    catalog_db: pw.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    items_on_local(7)
    broker = StubBroker()
    broker.declare_queue(QUEUE_COPY)
    assert scan(POLICIES, catalog_db, broker, now=NOW, job_files=1).copies == 7
    broker.flush_all()  # the broker lost the jobs: seven copies reserved, stalled later
    # Reserved at the real time: stalled an hour after it.
    later = utcnow() + DEFAULT_RESUME_AFTER + timedelta(minutes=1)
    budget = DeleteBudget(POLICIES, paused=False)
    batches = [
        len(stalled)
        for _, stalled in _resume_stale(
            catalog_db, later - DEFAULT_RESUME_AFTER, ScanReport(), budget, {}, batch=3
        )
    ]
    assert batches == [3, 3, 1], "read three at a time, each once"
    monkeypatch.setattr(scan_module, "DEFAULT_RESUME_BATCH", 3)
    report = scan(POLICIES, catalog_db, broker, now=later, job_files=1)
    assert report.resumed == 7
    named = [
        item_id for message in broker.queues[QUEUE_COPY].queue for item_id in _items_of(message)
    ]
    stalled = StorageLocation.select().where(StorageLocation.connector_name == "backup")
    assert sorted(named) == sorted(location.file_storage_id for location in stalled)
    # Stamped as queued: the next scan within the hour does not queue them again.
    assert scan(POLICIES, catalog_db, broker, now=utcnow()).resumed == 0


@pytest.mark.parametrize("catalog_db", ["sqlite"], indirect=True)
def test_sixty_thousand_removed_items_are_forgotten_in_one_scan(catalog_db: pw.Database) -> None:
    # More than SQLite lets one statement name (250,000 parameters; five a history row).
    removed = NOW - timedelta(days=30)
    rows = [
        {"key": f"gone-{n}", "status": "OK", "created": removed, "removed": removed}
        for n in range(60_000)
    ]
    with catalog_db.atomic():
        for start in range(0, len(rows), 5_000):
            FileStorage.insert_many(rows[start : start + 5_000]).execute()
    FileStorage.create(key="kept", created=removed, removed=NOW - timedelta(hours=1))
    broker = StubBroker()
    report = scan(POLICIES, catalog_db, broker, now=NOW, removal_delay=2)
    assert report.forgotten == 60_000
    assert [item.key for item in FileStorage.select()] == ["kept"], "within the grace: kept"
    assert Action.select().where(Action.action == "remove").count() == 60_000


@pytest.mark.parametrize("catalog_db", ["sqlite"], indirect=True)
def test_seventy_thousand_expired_locks_are_closed_and_told_in_one_scan(
    catalog_db: pw.Database,
) -> None:
    # A pool that died at once; four values a history row: more than SQLite
    # lets one statement name (250,000).
    count = 70_000
    old = datetime(2025, 1, 1)
    with catalog_db.atomic():
        for start in range(0, count, 5_000):
            numbers = range(start, min(start + 5_000, count))
            FileStorage.insert_many(
                [{"id": n + 1, "key": f"k{n}", "created": old} for n in numbers]
            ).execute()
            StorageLocation.insert_many(
                [
                    {"id": n + 1, "file_storage": n + 1, "connector_name": "local", "url": f"{n}"}
                    for n in numbers
                ]
            ).execute()
            AccessLog.insert_many(
                [
                    {"storage_location": n + 1, "started": old, "reason": "copy", "expires": old}
                    for n in numbers
                ]
            ).execute()
    report = scan(POLICIES, catalog_db, StubBroker(), now=NOW)
    assert report.unlocked == count
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0
    assert Action.select().where(Action.action == "unlock").count() == count


def test_a_copy_that_would_overlap_another_item_on_the_target_is_not_queued(
    catalog_db: pw.Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Item ``a`` is at url ``a`` on local; on backup another item lies at ``a/b``, so a
    copy of ``a`` there would write over its files: refused, told, nothing reserved."""
    old = NOW - timedelta(days=10)
    item = FileStorage.create(key="a", status="OK", created=old)
    ReferencedPath.create(file_storage=item, path="b/x.txt", size=3)
    StorageLocation.create(file_storage=item, connector_name="local", url="a", status="OK")
    other = FileStorage.create(key="other", status="OK", created=old)
    ReferencedPath.create(file_storage=other, path="x.txt", size=3)
    StorageLocation.create(file_storage=other, connector_name="backup", url="a/b", status="OK")
    StorageLocation.create(file_storage=other, connector_name="local", url="o", status="OK")
    broker = StubBroker()
    broker.declare_queue(QUEUE_COPY)
    with caplog.at_level("WARNING"):
        report = scan(POLICIES, catalog_db, broker, now=NOW)
    assert (report.copies, report.conflicts) == (0, 1)
    assert broker.queues[QUEUE_COPY].qsize() == 0
    assert not StorageLocation.select().where(StorageLocation.status == "PR").exists()
    assert "lies inside or around another item's location there" in caplog.text


def test_a_presigned_urls_hold_that_ended_is_closed_quietly(
    catalog_db: pw.Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker's lock past its expiry tells of a worker gone (a warning, the history);
    a URL's hold past its end is how it ends: closed, and nothing said."""
    from catalog.queries import URL_HOLD_REASON

    old = datetime(2025, 1, 1)
    item = FileStorage.create(key="k", created=old)
    url_held = StorageLocation.create(file_storage=item, connector_name="local", url="k")
    worker_held = StorageLocation.create(file_storage=item, connector_name="S3", url="k")
    AccessLog.create(storage_location=url_held, started=old, reason=URL_HOLD_REASON, expires=old)
    AccessLog.create(storage_location=worker_held, started=old, reason="copy", expires=old)
    with caplog.at_level("WARNING"):
        report = scan(POLICIES, catalog_db, StubBroker(), now=NOW)
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0
    assert report.unlocked == 1
    [unlock] = Action.select().where(Action.action == "unlock")
    assert unlock.target == "S3"
    assert [r.getMessage() for r in caplog.records if "expired" in r.getMessage()] == [
        "closed 1 expired access log(s) of workers gone"
    ]


def test_a_copy_whose_job_still_runs_is_not_resumed_as_stalled(catalog_db: pw.Database) -> None:
    # A large file's job outlives the hour (its time limit grows a second per
    # 2 MiB: 10 GiB is 95 minutes) and records nothing until it ends; its
    # source lock, open and not yet expired, says it is alive. Resuming it
    # would run a second copy of the same file beside the first.
    from catalog.copying import Start, start_copies

    items_on_local(1)
    broker = StubBroker()
    broker.declare_queue(QUEUE_COPY)
    assert scan(POLICIES, catalog_db, broker, now=NOW).copies == 1
    broker.flush_all()  # a worker took the job off the queue ...
    source = StorageLocation.get(StorageLocation.connector_name == "local")
    target = StorageLocation.get(StorageLocation.connector_name == "backup")
    began = utcnow() - DEFAULT_RESUME_AFTER - timedelta(minutes=5)
    # ... and started it 65 minutes ago, as ``copy_items`` does: its lock
    # ends by itself after the job's time limit (and a margin), hours away.
    start_copies(
        [Start(source.file_storage_id, source.id, target.id, "copy to backup: a.txt")],
        expires=utcnow() + timedelta(hours=1),
        now=began,
    )
    assert StorageLocation.get_by_id(target.id).status == "UP"
    report = scan(POLICIES, catalog_db, broker, now=utcnow())
    assert (report.resumed, report.jobs) == (0, 0)
    # Once its lock is gone (the job ended, or died and the lock expired), it is.
    AccessLog.update(finished=utcnow()).execute()
    assert scan(POLICIES, catalog_db, broker, now=utcnow()).resumed == 1


def test_a_stalled_copy_of_a_removed_item_is_not_resumed(catalog_db: pw.Database) -> None:
    # A removed item counts nowhere: nothing is copied (README, "Removed
    # items"), its reserved copy included; within its grace a restore may
    # want it again, and after it the removal deletes the location.
    items_on_local(2)
    broker = StubBroker()
    broker.declare_queue(QUEUE_COPY)
    assert scan(POLICIES, catalog_db, broker, now=NOW, job_files=1).copies == 2
    broker.flush_all()  # the broker lost the jobs: two copies reserved, stalled later
    remove_items(["item-000"], now=utcnow(), actor="test")
    later = utcnow() + DEFAULT_RESUME_AFTER + timedelta(minutes=1)
    report = scan(POLICIES, catalog_db, broker, now=later, removal_delay=30)
    assert report.resumed == 1
    kept = FileStorage.get(FileStorage.key == "item-001").id
    assert [
        item_id for message in broker.queues[QUEUE_COPY].queue for item_id in _items_of(message)
    ] == [kept]


class Unanswering(StubBroker):
    """The in-process broker, but out of reach (as Redis is in an outage) while ``down``.

    ``takes``: messages it takes first, before it goes down (an outage mid-enqueue).
    """

    down = False
    takes = 0

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        if self.takes:
            self.takes -= 1
        elif self.down:
            raise BrokerConnectionError("the broker does not answer")
        return super().enqueue(message, delay=delay)


def test_an_audit_the_broker_did_not_take_is_queued_by_the_next_scan(
    catalog_db: pw.Database,
) -> None:
    # Its marker (one audit at a time) is claimed before its job is queued:
    # a job that was not queued must not keep it (a day on Redis).
    policies = {"local": ConnectorPolicy("local", priority=0, audit=VerifyRule(interval=1))}
    broker = Unanswering()
    broker.down = True
    with pytest.raises(BrokerUnavailable):
        scan(policies, catalog_db, broker, now=NOW)
    broker.down = False
    assert scan(policies, catalog_db, broker, now=NOW).audits == 1


def test_copies_queued_before_an_outage_and_again_after_it_copy_each_file_once_intact(
    catalog_db: pw.Database, tmp_path: Path
) -> None:
    """An outage mid-enqueue: the copies whose jobs went out are queued again, and run twice.

    The scan drops every reservation of the batch (the jobs that went out
    find none, or run beside the copies queued again): two jobs may write
    one file at once. Each lands through a temporary file of its own and is
    proven against the catalog's hashes, so the copy ends whole, once.
    """
    old = NOW - timedelta(days=10)
    local = LocalConnector("local", path=tmp_path / "local")
    for number in range(3):
        item = FileStorage.create(key=f"item-{number}", status="OK", created=old)
        data = f"file {number}".encode() * 1000
        hashes = hash_stream(io.BytesIO(data))
        ReferencedPath.create(
            file_storage=item, path="a.txt", size=len(data), md5=hashes.md5, crc32c=hashes.crc32c
        )
        StorageLocation.create(file_storage=item, connector_name="local", url=item.key, status="OK")
        local.write(f"{item.key}/a.txt", io.BytesIO(data))
    broker = Unanswering()
    broker.declare_queue(QUEUE_COPY)
    broker.down, broker.takes = True, 1
    with pytest.raises(BrokerUnavailable):
        scan(POLICIES, catalog_db, broker, now=NOW, job_files=1)
    assert len(broker.queues[QUEUE_COPY].queue) == 1  # one job went out
    assert not StorageLocation.select().where(StorageLocation.connector_name == "backup").exists()
    broker.down = False
    assert scan(POLICIES, catalog_db, broker, now=NOW, job_files=1).copies == 3
    assert len(broker.queues[QUEUE_COPY].queue) == 4  # the first item's copy twice
    worker = process.start(folder_runtime(catalog_db, broker, tmp_path), threads=4)
    try:
        broker.join(QUEUE_COPY, fail_fast=True)
    finally:
        worker.stop()
    backup = StorageLocation.select().where(StorageLocation.connector_name == "backup")
    assert sorted(location.status for location in backup) == ["OK"] * 3
    for location in backup:
        assert (tmp_path / "backup" / location.url / "a.txt").read_bytes() == (
            tmp_path / "local" / location.url / "a.txt"
        ).read_bytes()
    assert sorted(path.name for path in (tmp_path / "backup").rglob("*")) == sorted(
        ["a.txt"] * 3 + [f"item-{number}" for number in range(3)]
    )
    assert not Action.select().where(Action.result != "ok").exists()
