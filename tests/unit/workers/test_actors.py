"""Scan, queue and run jobs in process: Dramatiq's StubBroker, a real SQLite catalog, folders.

The same code runs against Redis in ``tests/integration``; here the broker
is in memory, as in ``resolwe-storage run``.
"""

from __future__ import annotations

import functools
import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dramatiq
import peewee as pw
import pytest
from dramatiq.brokers.stub import StubBroker

from catalog.database import bind, migrate, open_database
from catalog.integrity import ASSERTED, lost_files
from catalog.models import (
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
    utcnow,
)
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from resolwe_storage.wiring import delete_rules
from scheduler.rules import ConnectorPolicy, Rule, VerifyRule
from scheduler.scan import scan
from workers import actors, messages, operations, process, runtime
from workers.telemetry import WorkerMetrics

NOW = datetime(2026, 6, 1)


def proven_rows() -> pw.ModelSelect:
    """Rows of files copied or verified, not those the set-up asserted (as an import does)."""
    return LocationFile.select().where(LocationFile.validated_by != ASSERTED)


def backup_policies(**backup_rules: dict[str, int]) -> dict[str, ConnectorPolicy]:
    """``local`` (preferred) and ``backup``, which copies after a day and has ``backup_rules``."""
    rules = {"copy": {"delay": 1}, **backup_rules}
    return {
        "local": ConnectorPolicy("local", priority=0),
        "backup": ConnectorPolicy(
            "backup",
            priority=10,
            copy=Rule(**rules["copy"]) if rules.get("copy") is not None else None,
            delete=Rule(**rules["delete"]) if "delete" in rules else None,
            verify=VerifyRule(**rules["verify"]) if "verify" in rules else None,
            audit=VerifyRule(**rules["audit"]) if "audit" in rules else None,
        ),
    }


def folders(tmp_path: Path) -> dict[str, Callable[[], LocalConnector]]:
    """The connectors by name, as a runtime makes them: a folder each."""
    return {
        name: functools.partial(LocalConnector, name, path=tmp_path / name)
        for name in ("local", "backup")
    }


@contextmanager
def running(
    tmp_path: Path,
    *,
    threads: int = 4,
    metrics: WorkerMetrics | None = None,
    **backup_rules: dict[str, int],
) -> Iterator[tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker]]:
    """A catalog, the in-process broker and a worker of ``threads``, with ``backup_rules``.

    The runtime is built here, as the wiring would from a configuration;
    ``metrics``: where the worker counts its jobs.
    """
    policies = backup_policies(**backup_rules)
    database = open_database(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    database.connect()
    migrate(database)
    bind(database)
    broker = StubBroker()
    worker = process.start(
        runtime.Runtime(
            database=database,
            broker=broker,
            connectors=folders(tmp_path),
            preference=("local", "backup"),
            delete_rules=delete_rules(policies),
        ),
        threads=threads,
        metrics=metrics,
    )
    try:
        yield policies, broker, worker
    finally:
        worker.stop()
        database.close()


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker]]:
    monkeypatch.setattr(actors, "DEFAULT_MIN_BACKOFF_MS", 10)  # retries at once, in tests
    with running(tmp_path) as started:
        yield started


def add_item(tmp_path: Path, key: str, files: dict[str, bytes]) -> FileStorage:
    """An item with ``files`` on ``local``, its copy there asserted as an import does."""
    item = FileStorage.create(key=key, created=NOW - timedelta(days=10))
    StorageLocation.create(
        file_storage=item, connector_name="local", url=key, status="OK", last_update=item.created
    )
    folder = LocalConnector("local", path=tmp_path / "local")
    for path, data in files.items():
        folder.write(f"{key}/{path}", io.BytesIO(data))
        hashes = hash_stream(io.BytesIO(data))
        item.files.model.create(
            file_storage=item, path=path, size=len(data), md5=hashes.md5, crc32c=hashes.crc32c
        )
    return item


def drain(broker: StubBroker) -> None:
    for queue in messages.QUEUES:
        broker.declare_queue(queue)
    for queue in messages.QUEUES:
        broker.join(queue, fail_fast=True)


def test_one_scan_copies_every_file_and_the_location_becomes_ok(
    world: tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    policies, broker, _ = world
    database = actors.current().database
    add_item(tmp_path, "a", {"one.txt": b"1" * 100, "dir/two.txt": b"2" * 200})
    add_item(tmp_path, "b", {})
    report = scan(policies, database, broker, now=NOW)
    assert (report.items, report.copies, report.jobs) == (2, 2, 2)  # 2 files in 1 job + 1 finish
    drain(broker)
    statuses = {
        loc.file_storage.key: loc.status
        for loc in StorageLocation.select().where(StorageLocation.connector_name == "backup")
    }
    assert statuses == {"a": "OK", "b": "OK"}
    backup = LocalConnector("backup", path=tmp_path / "backup")
    assert sorted(info.path for info in backup.list()) == ["a/dir/two.txt", "a/one.txt"]
    assert proven_rows().count() == 2


def test_a_second_scan_queues_nothing_already_queued(
    world: tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    policies, broker, worker = world
    database = actors.current().database
    worker.pause()
    add_item(tmp_path, "a", {"one.txt": b"1"})
    first = scan(policies, database, broker, now=NOW)
    second = scan(policies, database, broker, now=NOW)
    assert first.jobs == 1 and second.jobs == 0 and second.items == 0
    worker.resume()
    drain(broker)
    assert scan(policies, database, broker, now=NOW).jobs == 0


def test_a_permanent_failure_is_not_retried_and_is_recorded(
    world: tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    policies, broker, _ = world
    database = actors.current().database
    add_item(tmp_path, "a", {"one.txt": b"good"})
    (tmp_path / "local" / "a" / "one.txt").unlink()  # lost at the source
    scan(policies, database, broker, now=NOW)
    for queue in messages.QUEUES:
        broker.join(queue, fail_fast=False)
    failed = Action.get(Action.action == "copy")
    assert failed.result == "failed" and "does not exist" in failed.error
    assert broker.dead_letters and len(broker.dead_letters) == 1
    assert broker.dead_letters[0].options.get("retries") == 1
    location = StorageLocation.get(StorageLocation.connector_name == "backup")
    assert location.status == "UP"


def test_a_source_damaged_at_rest_is_found_so_and_the_copy_given_up(
    world: tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    """Read again on its own, the source is bad: it is damaged (the item lost), not retried."""
    policies, broker, _ = world
    database = actors.current().database
    item = add_item(tmp_path, "a", {"one.txt": b"good"})
    (tmp_path / "local" / "a" / "one.txt").write_bytes(b"evil")  # damaged at the source
    scan(policies, database, broker, now=NOW)
    for queue in messages.QUEUES:
        broker.join(queue, fail_fast=False)
    failures = list(Action.select().where(Action.action == "copy").order_by(Action.id))
    assert [a.result for a in failures] == ["failed", "failed"]
    assert "does not match" in failures[0].error and "no OK copy" in failures[1].error
    assert [m.options.get("retries") for m in broker.dead_letters] == [2]
    assert StorageLocation.get(StorageLocation.connector_name == "local").status == "DM"
    assert lost_files() == {item.id: ["one.txt"]}
    assert not (tmp_path / "backup" / "a" / "one.txt").exists()


def test_a_jobs_lock_expires_after_its_time_limit_and_the_scan_then_closes_it(
    world: tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    policies, broker, _ = world
    database = actors.current().database
    item = add_item(tmp_path, "a", {"one.txt": b"1"})
    began = utcnow()
    scan(policies, database, broker, now=NOW)
    drain(broker)
    [used] = AccessLog.select()
    limit = timedelta(milliseconds=messages.copy_time_limit_ms(1, 1)) + actors.DEFAULT_LOCK_MARGIN
    assert used.finished is not None and began + limit <= used.expires <= utcnow() + limit

    # A worker killed mid-job leaves its lock open; a service's lock has no expiry.
    local = StorageLocation.get(StorageLocation.connector_name == "local")
    dead = AccessLog.create(storage_location=local, reason="copy", expires=utcnow())
    held = AccessLog.create(storage_location=local, reason="a service reads")
    report = scan(policies, database, broker, now=NOW)
    assert report.unlocked == 1
    assert AccessLog.get_by_id(dead.id).finished is not None
    assert AccessLog.get_by_id(held.id).finished is None
    unlock = Action.get(Action.action == "unlock")
    assert unlock.file_storage_id == item.id and "expired" in unlock.error
    assert scan(policies, database, broker, now=NOW).unlocked == 0


def test_transient_errors_are_retried_and_permanent_ones_are_not() -> None:
    from connectors.errors import BackendUnavailable, ChecksumMismatch

    assert actors.is_transient(0, BackendUnavailable("x"))
    assert not actors.is_transient(runtime.DEFAULT_MAX_RETRIES, BackendUnavailable("x"))
    # Damage on the way: tried again a couple of times, then given up.
    assert actors.is_transient(0, ChecksumMismatch("x"))
    assert not actors.is_transient(actors.DEFAULT_MISMATCH_RETRIES, ChecksumMismatch("x"))
    assert not actors.is_transient(0, ValueError("x"))


def test_a_copy_whose_jobs_were_lost_is_resumed_by_a_later_scan(
    world: tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    policies, broker, worker = world
    database = actors.current().database
    worker.pause()
    add_item(tmp_path, "a", {"one.txt": b"1", "two.txt": b"2"})
    assert scan(policies, database, broker, now=NOW).jobs == 1
    broker.flush_all()  # the broker lost its queues
    worker.resume()
    # Within the hour the copy counts as under way; after it, as stalled.
    assert scan(policies, database, broker, now=utcnow()).resumed == 0
    later = scan(policies, database, broker, now=utcnow() + timedelta(hours=2))
    assert (later.resumed, later.jobs) == (1, 1)
    drain(broker)
    assert StorageLocation.get(StorageLocation.connector_name == "backup").status == "OK"
    assert proven_rows().count() == 2


def test_only_the_missing_files_of_stalled_copies_are_queued_again(
    world: tuple[dict[str, ConnectorPolicy], StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    policies, broker, worker = world
    database = actors.current().database
    worker.pause()
    first = add_item(tmp_path, "a", {"one.txt": b"1", "two.txt": b"2", "three.txt": b"3"})
    add_item(tmp_path, "b", {"four.txt": b"4"})
    scan(policies, database, broker, now=NOW)
    broker.flush_all()
    # One file of "a" was copied and recorded before the jobs were lost.
    target = StorageLocation.get(
        (StorageLocation.file_storage == first) & (StorageLocation.connector_name == "backup")
    )
    two = ReferencedPath.get(
        (ReferencedPath.file_storage == first) & (ReferencedPath.path == "two.txt")
    )
    LocationFile.create(storage_location=target, referenced_path=two, validated_by="crc32c")

    later = scan(policies, database, broker, now=utcnow() + timedelta(hours=2))

    # Both small: they share one job.
    assert (later.resumed, later.jobs) == (2, 1)
    queued = [json.loads(body)["args"] for body in broker.queues["copy"].queue]
    assert queued == [
        ["backup", [[first.id, ["one.txt", "three.txt"]], [first.id + 1, ["four.txt"]]]],
    ]
    worker.resume()
    drain(broker)
    assert proven_rows().count() == 4
    assert {loc.status for loc in StorageLocation.select()} == {"OK"}


def test_a_first_try_of_small_files_writes_without_looking_a_retry_looks() -> None:
    assert not actors.look_first(["a", "b"], retries=0)
    assert actors.look_first(["a", "b"], retries=1)
    assert actors.look_first(["big"], retries=0)


def test_the_scan_gives_verifications_and_deletes_time_for_the_items_size(
    tmp_path: Path,
) -> None:
    rules = {"verify": {"interval": 1}, "delete": {"delay": 1}}
    policies = backup_policies(**rules)
    database = open_database(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    migrate(database)
    bind(database)
    broker = StubBroker()
    item = FileStorage.create(key="big", created=NOW - timedelta(days=10))
    for name in ("local", "backup"):
        StorageLocation.create(
            file_storage=item,
            connector_name=name,
            url="big",
            status="OK",
            last_update=NOW - timedelta(days=5),
        )
    for n, size in enumerate([40 * 1024**3, 2 * 1024**3, None]):
        ReferencedPath.create(file_storage=item, path=f"f{n}", size=size)
    ReferencedPath.create(file_storage=item, path="folder/")
    report = scan(policies, database, broker, now=NOW)
    assert (report.verifies, report.deletes) == (1, 1)
    # Verified per file, each job given time to read its bytes back.
    verifies = [json.loads(body) for body in broker.queues["verify"].queue]
    assert {tuple(job["args"][2]): job["options"]["time_limit"] for job in verifies} == {
        ("f0",): messages.time_limit_ms(40 * 1024**3),
        ("f1",): messages.time_limit_ms(2 * 1024**3),
        ("f2",): messages.time_limit_ms(0),
    }
    # Deleted in one job (up to a thousand files share one), given time per file.
    [delete] = [json.loads(body) for body in broker.queues["delete"].queue]
    assert delete["args"] == [item.id, "backup", ["f0", "f1", "f2"]]
    expected = messages.DEFAULT_TIME_LIMIT_MS + 3 * messages.DEFAULT_DELETE_MS_PER_FILE
    assert delete["options"]["time_limit"] == expected
    database.close()


# -- verifications and deletes, queued per file ------------------------------------

FIVE = {f"f{n}.txt": bytes([65 + n]) * (n + 1) for n in range(5)}


def add_backup(tmp_path: Path, item: FileStorage, files: dict[str, bytes]) -> StorageLocation:
    """An imported copy of ``item`` on ``backup`` (asserted, never verified), used 5 days ago."""
    folder = LocalConnector("backup", path=tmp_path / "backup")
    for path, data in files.items():
        folder.write(f"{item.key}/{path}", io.BytesIO(data))
    location = StorageLocation.create(
        file_storage=item,
        connector_name="backup",
        url=item.key,
        status="OK",
        last_update=NOW - timedelta(days=5),
    )
    return location


@dataclass
class Backed:
    """An item of five files with an imported copy on ``backup``, and the jobs' world."""

    policies: dict[str, ConnectorPolicy]
    broker: StubBroker
    worker: dramatiq.Worker
    database: pw.Database
    item: FileStorage
    copy: StorageLocation

    def __iter__(self) -> Iterator[object]:
        return (getattr(self, f.name) for f in fields(self))


@contextmanager
def backed_up(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backup: dict[str, bytes] = FIVE,
    **rules: object,
) -> Iterator[Backed]:
    """``Backed`` with ``rules`` on ``backup``; two files share a job; the worker paused."""
    monkeypatch.setattr(messages, "DEFAULT_JOB_FILES", 2)
    monkeypatch.setattr(messages, "DEFAULT_DELETE_JOB_FILES", 2)
    with running(tmp_path, **rules) as (policies, broker, worker):
        item = add_item(tmp_path, "a", FIVE)
        copy = add_backup(tmp_path, item, backup)
        worker.pause()
        yield Backed(policies, broker, worker, actors.current().database, item, copy)


def queued_args(broker: StubBroker, queue: str) -> list[list[object]]:
    return [json.loads(body)["args"] for body in broker.queues[queue].queue]


def test_a_copy_is_verified_per_file_and_verified_when_every_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backed_up(tmp_path, monkeypatch, verify={"interval": 1}) as world:
        policies, broker, worker, database, item, copy = world
        report = scan(policies, database, broker, now=NOW)
        assert (report.verifies, report.jobs) == (1, 3)
        assert queued_args(broker, "verify") == [
            [item.id, "backup", ["f0.txt", "f1.txt"]],
            [item.id, "backup", ["f2.txt", "f3.txt"]],
            [item.id, "backup", ["f4.txt"]],
        ]
        # Queued, not yet run: a scan queues nothing more.
        assert scan(policies, database, broker, now=NOW).jobs == 0
        worker.resume()
        drain(broker)

        copy = StorageLocation.get_by_id(copy.id)
        rows = list(LocationFile.select().where(LocationFile.storage_location == copy))
        # An imported copy's rows were asserted, never verified: each is verified now.
        assert len(rows) == 5 and {row.validated_by for row in rows} == {"crc32c"}
        assert all(row.verified is not None and row.problem is None for row in rows)
        assert copy.last_verified == min(row.verified for row in rows)
        history = Action.select().where(Action.action == "verify")
        assert [(a.result, a.path) for a in history.order_by(Action.path)] == [
            ("ok", "f0.txt and 1 more"),
            ("ok", "f2.txt and 1 more"),
            ("ok", "f4.txt"),
        ]
        assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0
        # The last job freed the marker: due again, queued again.
        later = scan(policies, database, broker, now=utcnow() + timedelta(days=2))
        assert (later.verifies, later.jobs) == (1, 3)


def test_a_damaged_file_makes_its_copy_damaged_and_the_next_scan_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = {**FIVE, "f3.txt": b"DDDX"}
    with backed_up(tmp_path, monkeypatch, damaged, verify={"interval": 1}) as world:
        policies, broker, worker, database, _item, copy = world
        worker.resume()
        scan(policies, database, broker, now=NOW)
        drain(broker)

        copy = StorageLocation.get_by_id(copy.id)
        assert copy.status == "DM" and copy.last_verified is None
        rows = {
            row.referenced_path.path: row
            for row in LocationFile.select().where(LocationFile.storage_location == copy)
        }
        # The damaged file is bad, with why; the others are verified.
        assert rows["f3.txt"].problem.startswith("crc32c ") and rows["f3.txt"].verified is None
        assert all(rows[p].verified and rows[p].problem is None for p in FIVE if p != "f3.txt")
        [found] = Action.select().where((Action.action == "verify") & (Action.result != "ok"))
        assert found.result == "damaged" and found.error.startswith("f3.txt: crc32c ")
        # Not verified again: repaired, from the copy on local, and whole again.
        report = scan(policies, database, broker, now=NOW)
        assert (report.verifies, report.repairs) == (0, 1)
        drain(broker)
        copy = StorageLocation.get_by_id(copy.id)
        assert copy.status == "OK" and copy.last_verified is not None
        assert (tmp_path / "backup" / "a" / "f3.txt").read_bytes() == FIVE["f3.txt"]
        [repair] = Action.select().where(Action.action == "repair")
        assert (repair.result, repair.source, repair.path) == ("ok", "local", "f3.txt")
        assert scan(policies, database, broker, now=NOW).jobs == 0


def test_a_delete_is_queued_per_file_and_the_location_goes_with_its_last_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backed_up(tmp_path, monkeypatch, delete={"delay": 1}) as world:
        policies, broker, worker, database, _item, copy = world
        report = scan(policies, database, broker, now=NOW)
        assert (report.deletes, report.jobs) == (1, 3)
        assert [args[2] for args in queued_args(broker, "delete")] == [
            ["f0.txt", "f1.txt"],
            ["f2.txt", "f3.txt"],
            ["f4.txt"],
        ]
        assert scan(policies, database, broker, now=NOW).jobs == 0
        worker.resume()
        drain(broker)

        assert StorageLocation.get_or_none(StorageLocation.id == copy.id) is None
        assert proven_rows().count() == 0
        assert list(LocalConnector("backup", path=tmp_path / "backup").list()) == []
        local = LocalConnector("local", path=tmp_path / "local")
        assert len(list(local.list())) == 5  # the other copy untouched
        results = [a.result for a in Action.select().where(Action.action == "delete")]
        assert results == ["ok", "ok", "ok"]


def test_a_delete_cut_short_is_finished_by_a_later_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backed_up(tmp_path, monkeypatch, delete={"delay": 1}) as world:
        policies, broker, worker, database, _item, copy = world
        scan(policies, database, broker, now=NOW)
        first = queued_args(broker, "delete")[0]
        actors.delete_files_job(*first)  # one job ran ...
        broker.flush_all()  # ... then the broker lost the others

        copy = StorageLocation.get_by_id(copy.id)
        assert copy.status == "DE"
        left = LocationFile.select().where(LocationFile.storage_location == copy)
        assert sorted(row.referenced_path.path for row in left) == ["f2.txt", "f3.txt", "f4.txt"]
        backup = LocalConnector("backup", path=tmp_path / "backup")
        assert sorted(info.path for info in backup.list()) == ["a/f2.txt", "a/f3.txt", "a/f4.txt"]
        # A delete under way is not planned again; once stalled, what is left is queued.
        assert scan(policies, database, broker, now=utcnow()).jobs == 0
        later = scan(policies, database, broker, now=utcnow() + timedelta(hours=2))
        assert (later.resumed, later.jobs) == (1, 2)
        assert [args[2] for args in queued_args(broker, "delete")] == [
            ["f2.txt", "f3.txt"],
            ["f4.txt"],
        ]
        worker.resume()
        drain(broker)
        assert StorageLocation.get_or_none(StorageLocation.id == copy.id) is None
        assert list(backup.list()) == []


def test_a_later_delete_job_reads_and_removes_only_the_files_it_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations, "DEFAULT_NAMED_PATHS", 1)  # a statement a path
    with backed_up(tmp_path, monkeypatch, delete={"delay": 1}) as world:
        policies, broker, _worker, database, item, copy = world
        scan(policies, database, broker, now=NOW)
        first = queued_args(broker, "delete")[0]
        broker.flush_all()
        actors.delete_files_job(*first)  # decides for the whole copy: DE
        assert StorageLocation.get_by_id(copy.id).status == "DE"
        # Out of order, twice, and a path that is not the item's.
        actors.delete_files_job(item.id, "backup", ["f3.txt", "f2.txt", "f3.txt", "nope.txt"])
        backup = LocalConnector("backup", path=tmp_path / "backup")
        assert [info.path for info in backup.list()] == ["a/f4.txt"]
        left = LocationFile.select().where(LocationFile.storage_location == copy)
        assert [row.referenced_path.path for row in left] == ["f4.txt"]
        actors.delete_files_job(item.id, "backup", ["f4.txt"])
        assert StorageLocation.get_or_none(StorageLocation.id == copy.id) is None
        assert list(backup.list()) == []


def test_every_job_of_a_delete_refused_at_run_time_leaves_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backed_up(tmp_path, monkeypatch, delete={"delay": 1}) as world:
        policies, broker, worker, database, _item, copy = world
        assert scan(policies, database, broker, now=NOW).jobs == 3
        AccessLog.create(storage_location=copy, reason="a reader came after the scan")
        worker.resume()
        drain(broker)

        assert StorageLocation.get_by_id(copy.id).status == "OK"
        assert len(list(LocalConnector("backup", path=tmp_path / "backup").list())) == 5
        refusals = Action.select().where((Action.action == "delete") & (Action.result == "refused"))
        assert [a.error for a in refusals] == ["locked by 1 open access log(s)"] * 3


def test_a_job_given_up_is_recorded_for_each_item_it_held() -> None:
    work = actors._work_of
    assert work(messages.ACTOR_COPY_ITEMS, ["S3", [[1, ["a", "b"]], [2, ["c"]]]]) == [
        (1, "S3", ["a", "b"]),
        (2, "S3", ["c"]),
    ]
    assert work(messages.ACTOR_COPY_MANY, [7, "S3", ["a"]]) == [(7, "S3", ["a"])]
    assert work(messages.ACTOR_DELETE, [7, "S3"]) == [(7, "S3", None)]
    assert work(messages.ACTOR_COPY_MANY, []) == []


def test_a_delete_left_half_done_without_file_rows_removes_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Marked DE by an import or an earlier version: no row says what is left.
    with backed_up(tmp_path, monkeypatch, delete={"delay": 1}) as world:
        policies, broker, worker, database, _, copy = world
        StorageLocation.update(status="DE").where(StorageLocation.id == copy.id).execute()
        later = scan(policies, database, broker, now=utcnow() + timedelta(hours=2))
        assert (later.resumed, later.jobs) == (1, 3)  # every file, two to a job
        worker.resume()
        drain(broker)
        assert StorageLocation.get_or_none(StorageLocation.id == copy.id) is None
        assert list(LocalConnector("backup", path=tmp_path / "backup").list()) == []


def test_a_validated_copy_is_not_read_back_at_the_next_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actors, "DEFAULT_MIN_BACKOFF_MS", 10)
    with running(tmp_path, verify={"interval": 30}) as (policies, broker, _):
        database = actors.current().database
        add_item(tmp_path, "a", {"one.txt": b"1" * 100, "two.txt": b"2" * 10})
        assert scan(policies, database, broker, now=NOW).copies == 1
        drain(broker)
        copy = StorageLocation.get(StorageLocation.connector_name == "backup")
        assert copy.status == "OK" and copy.last_verified is not None
        rows = LocationFile.select().where(LocationFile.storage_location == copy)
        assert all(row.verified == copy.last_verified for row in rows)
        later = scan(policies, database, broker, now=utcnow() + timedelta(days=1))
        assert (later.verifies, later.jobs) == (0, 0)
        assert scan(policies, database, broker, now=utcnow() + timedelta(days=31)).verifies == 1


def test_a_connector_is_audited_every_interval_one_audit_at_a_time(tmp_path: Path) -> None:
    with running(tmp_path, copy=None, audit={"interval": 1}) as (policies, broker, worker):
        database = actors.current().database
        item = add_item(tmp_path, "a", FIVE)
        copy = add_backup(tmp_path, item, FIVE)
        (tmp_path / "backup" / "a" / "f0.txt").unlink()  # behind the catalog's back
        worker.pause()
        first = scan(policies, database, broker, now=NOW)
        assert first.audits == 1 and queued_args(broker, "verify") == [["backup"]]
        assert scan(policies, database, broker, now=NOW).audits == 0  # one at a time
        worker.resume()
        drain(broker)
        copy = StorageLocation.get_by_id(copy.id)
        assert copy.status == "DM"  # found by the audit, repaired by a later scan
        [run] = Action.select().where((Action.action == "audit") & (Action.actor == "worker"))
        assert run.result == "damaged" and "1 lost" in run.error
        assert scan(policies, database, broker, now=utcnow()).audits == 0  # audited just now
        assert scan(policies, database, broker, now=utcnow() + timedelta(days=2)).audits == 1


def test_an_audit_given_up_is_in_the_history_so_a_one_shot_run_fails(tmp_path: Path) -> None:
    # ``run --once`` says a job failed for good only from the history
    # (``catalog.story.failures_since``): a dead-lettered audit must be there.
    from catalog.story import failures_since

    with running(tmp_path, copy=None) as (_, broker, _worker):
        began = utcnow()
        broker.enqueue(messages.audit_messages("nowhere")[0])  # no such connector: permanent
        for queue in messages.QUEUES:
            broker.join(queue, fail_fast=False)
        assert len(broker.dead_letters) == 1
        failures = failures_since(began)
        assert [(f["action"], f["target"]) for f in failures] == [("audit", "nowhere")]


# -- a job stopped at its time limit ------------------------------------------------


class _Dripping(io.RawIOBase):
    """A source's bytes, four at a time, a pause before each (a backend slowed down)."""

    def __init__(self, inner: io.RawIOBase, pause: float) -> None:
        super().__init__()
        self.inner, self.pause = inner, pause

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        time.sleep(self.pause)
        data = self.inner.read(min(len(buffer), 4))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.inner.close()
        super().close()


class SlowLocal(LocalConnector):
    """A folder whose first ``slow_reads`` opened streams drip (Dramatiq's time limit stops
    the job in its reads, as it would on a slow backend)."""

    slow_reads = 0

    def open_read(self, path: str) -> Any:
        stream = super().open_read(path)
        if SlowLocal.slow_reads <= 0:
            return stream
        SlowLocal.slow_reads -= 1
        return _Dripping(stream, 0.25)

    def can_copy_from(self, source: Any) -> bool:
        return False  # the bytes go through the job's thread, not the kernel


@contextmanager
def slow_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, slow_reads: int, max_retries: int
) -> Iterator[tuple[dict[str, ConnectorPolicy], StubBroker]]:
    """Jobs of a time limit far too short for ``local``'s first ``slow_reads`` reads."""
    monkeypatch.setattr(actors, "DEFAULT_MIN_BACKOFF_MS", 10)
    monkeypatch.setattr(messages, "DEFAULT_TIME_LIMIT_MS", 300)
    monkeypatch.setattr(messages, "DEFAULT_COPY_MS_PER_FILE", 0)
    monkeypatch.setattr(SlowLocal, "slow_reads", slow_reads)
    policies = backup_policies()
    database = open_database(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    database.connect()
    migrate(database)
    bind(database)
    broker = StubBroker()
    connectors = {
        name: functools.partial(SlowLocal, name, path=tmp_path / name)
        for name in ("local", "backup")
    }
    worker = process.start(
        runtime.Runtime(
            database=database,
            broker=broker,
            connectors=connectors,
            preference=("local", "backup"),
            delete_rules=delete_rules(policies),
            max_retries=max_retries,
        ),
        threads=2,
    )
    try:
        yield policies, broker
    finally:
        worker.stop()
        database.close()


def test_a_copy_stopped_at_its_time_limit_is_retried_and_the_retry_finishes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A time limit is a timeout: transient (SPEC §3), no evidence, tried again."""
    with slow_source(tmp_path, monkeypatch, slow_reads=1, max_retries=3) as (policies, broker):
        database = actors.current().database
        add_item(tmp_path, "a", {"one.txt": b"x" * 64})
        scan(policies, database, broker, now=NOW)
        for queue in messages.QUEUES:
            broker.join(queue, fail_fast=False)
        assert SlowLocal.slow_reads == 0  # the first try was stopped in its reads
        assert not broker.dead_letters
        backup = StorageLocation.get(StorageLocation.connector_name == "backup")
        assert backup.status == "OK"
        assert (tmp_path / "backup" / "a" / "one.txt").read_bytes() == b"x" * 64
        assert proven_rows().count() == 1
        assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0
        assert not Action.select().where(Action.result == "failed").exists()
        assert sorted(p.name for p in (tmp_path / "backup" / "a").iterdir()) == ["one.txt"]


def test_a_copy_always_over_its_time_limit_is_given_up_with_that_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with slow_source(tmp_path, monkeypatch, slow_reads=10, max_retries=1) as (policies, broker):
        database = actors.current().database
        add_item(tmp_path, "a", {"one.txt": b"x" * 64})
        scan(policies, database, broker, now=NOW)
        for queue in messages.QUEUES:
            broker.join(queue, fail_fast=False)
        [dead] = broker.dead_letters
        assert dead.options.get("retries") == 2  # the first try and one retry
        [failed] = Action.select().where(Action.result == "failed")
        assert failed.item_key == "a" and failed.error.startswith("gave up after 2 tries")
        assert "time limit" in failed.error
        # Nothing half-done: the source unlocked, no file there, the copy not counted.
        assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0
        assert list((tmp_path / "backup").rglob("*")) in ([], [tmp_path / "backup" / "a"])
        backup = StorageLocation.get(StorageLocation.connector_name == "backup")
        assert backup.status in ("PR", "UP") and proven_rows().count() == 0
