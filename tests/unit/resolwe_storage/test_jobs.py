"""Scan, queue and run jobs in process: Dramatiq's StubBroker, a real SQLite catalog, folders.

The same code runs against Redis in ``tests/integration``; here the broker
is in memory, as in ``resolwe-storage run``.
"""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path

import dramatiq
import peewee as pw
import pytest
from dramatiq.brokers.stub import StubBroker

from catalog.integrity import ASSERTED
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
from resolwe_storage import jobs
from resolwe_storage.broker import make_broker
from resolwe_storage.config import Config, load_config
from resolwe_storage.runtime import open_catalog
from resolwe_storage.scan import scan

NOW = datetime(2026, 6, 1)


def proven_rows() -> pw.ModelSelect:
    """Rows of files copied or verified, not those the set-up asserted (as an import does)."""
    return LocationFile.select().where(LocationFile.validated_by != ASSERTED)


def write_config(tmp_path: Path, **backup_rules: object) -> Path:
    rules = {"copy": {"delay": 1}, **backup_rules}
    document = {
        "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        "connectors": {
            "local": {
                "connector": "local",
                "config": {"priority": 0, "path": str(tmp_path / "local")},
            },
            "backup": {
                "connector": "local",
                "config": {"priority": 10, "path": str(tmp_path / "backup"), **rules},
            },
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


@contextmanager
def running(
    tmp_path: Path, **backup_rules: object
) -> Iterator[tuple[Config, StubBroker, dramatiq.Worker]]:
    """A catalog, the in-process broker and a worker of 4 threads, with ``backup_rules``."""
    config = load_config(write_config(tmp_path, **backup_rules))
    database = open_catalog(config.database)
    broker = make_broker(None)
    assert isinstance(broker, StubBroker)
    jobs.declare_actors(broker)
    jobs.install(jobs.Runtime(config, database, broker))
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    try:
        yield config, broker, worker
    finally:
        worker.stop()
        database.close()


@pytest.fixture
def world(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Config, StubBroker, dramatiq.Worker]]:
    monkeypatch.setattr(jobs, "DEFAULT_MIN_BACKOFF_MS", 10)  # retries at once, in tests
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
    for queue in jobs.QUEUES:
        broker.declare_queue(queue)
    for queue in jobs.QUEUES:
        broker.join(queue, fail_fast=True)


def test_one_scan_copies_every_file_and_the_location_becomes_ok(
    world: tuple[Config, StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    config, broker, _ = world
    database = jobs.current().database
    add_item(tmp_path, "a", {"one.txt": b"1" * 100, "dir/two.txt": b"2" * 200})
    add_item(tmp_path, "b", {})
    report = scan(config, database, broker, now=NOW)
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
    world: tuple[Config, StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    config, broker, worker = world
    database = jobs.current().database
    worker.pause()
    add_item(tmp_path, "a", {"one.txt": b"1"})
    first = scan(config, database, broker, now=NOW)
    second = scan(config, database, broker, now=NOW)
    assert first.jobs == 1 and second.jobs == 0 and second.items == 0
    worker.resume()
    drain(broker)
    assert scan(config, database, broker, now=NOW).jobs == 0


def test_a_permanent_failure_is_not_retried_and_is_recorded(
    world: tuple[Config, StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    config, broker, _ = world
    database = jobs.current().database
    add_item(tmp_path, "a", {"one.txt": b"good"})
    (tmp_path / "local" / "a" / "one.txt").unlink()  # lost at the source
    scan(config, database, broker, now=NOW)
    for queue in jobs.QUEUES:
        broker.join(queue, fail_fast=False)
    failed = Action.get(Action.action == "copy")
    assert failed.result == "failed" and "does not exist" in failed.error
    assert broker.dead_letters and len(broker.dead_letters) == 1
    assert broker.dead_letters[0].options.get("retries") == 1
    location = StorageLocation.get(StorageLocation.connector_name == "backup")
    assert location.status == "UP"


def test_a_mismatch_is_tried_again_twice_then_given_up(
    world: tuple[Config, StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    config, broker, _ = world
    database = jobs.current().database
    add_item(tmp_path, "a", {"one.txt": b"good"})
    (tmp_path / "local" / "a" / "one.txt").write_bytes(b"evil")  # damaged at the source
    scan(config, database, broker, now=NOW)
    for queue in jobs.QUEUES:
        broker.join(queue, fail_fast=False)
    failures = Action.select().where(Action.action == "copy")
    assert [a.result for a in failures] == ["failed"] * (1 + jobs.DEFAULT_MISMATCH_RETRIES)
    assert all("does not match" in a.error for a in failures)
    assert [m.options.get("retries") for m in broker.dead_letters] == [
        1 + jobs.DEFAULT_MISMATCH_RETRIES
    ]
    assert not (tmp_path / "backup" / "a" / "one.txt").exists()


def test_a_jobs_lock_expires_after_its_time_limit_and_the_scan_then_closes_it(
    world: tuple[Config, StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    config, broker, _ = world
    database = jobs.current().database
    item = add_item(tmp_path, "a", {"one.txt": b"1"})
    began = utcnow()
    scan(config, database, broker, now=NOW)
    drain(broker)
    [used] = AccessLog.select()
    limit = timedelta(milliseconds=jobs.time_limit_ms(1)) + jobs.DEFAULT_LOCK_MARGIN
    assert used.finished is not None and began + limit <= used.expires <= utcnow() + limit

    # A worker killed mid-job leaves its lock open; a service's lock has no expiry.
    local = StorageLocation.get(StorageLocation.connector_name == "local")
    dead = AccessLog.create(storage_location=local, reason="copy", expires=utcnow())
    held = AccessLog.create(storage_location=local, reason="a service reads")
    report = scan(config, database, broker, now=NOW)
    assert report.unlocked == 1
    assert AccessLog.get_by_id(dead.id).finished is not None
    assert AccessLog.get_by_id(held.id).finished is None
    unlock = Action.get(Action.action == "unlock")
    assert unlock.file_storage_id == item.id and "expired" in unlock.error
    assert scan(config, database, broker, now=NOW).unlocked == 0


def test_transient_errors_are_retried_and_permanent_ones_are_not() -> None:
    from connectors.errors import BackendUnavailable, ChecksumMismatch

    assert jobs.is_transient(0, BackendUnavailable("x"))
    assert not jobs.is_transient(jobs.DEFAULT_MAX_RETRIES, BackendUnavailable("x"))
    # Damage on the way: tried again a couple of times, then given up.
    assert jobs.is_transient(0, ChecksumMismatch("x"))
    assert not jobs.is_transient(jobs.DEFAULT_MISMATCH_RETRIES, ChecksumMismatch("x"))
    assert not jobs.is_transient(0, ValueError("x"))


def test_time_limits_grow_with_the_file() -> None:
    small = jobs.time_limit_ms(1)
    large = jobs.time_limit_ms(10 * 1024**3)
    assert small == jobs.DEFAULT_TIME_LIMIT_MS and large > small + 3_600_000


def test_a_copy_whose_jobs_were_lost_is_resumed_by_a_later_scan(
    world: tuple[Config, StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    config, broker, worker = world
    database = jobs.current().database
    worker.pause()
    add_item(tmp_path, "a", {"one.txt": b"1", "two.txt": b"2"})
    assert scan(config, database, broker, now=NOW).jobs == 1
    broker.flush_all()  # the broker lost its queues
    worker.resume()
    # Within the hour the copy counts as under way; after it, as stalled.
    assert scan(config, database, broker, now=utcnow()).resumed == 0
    later = scan(config, database, broker, now=utcnow() + timedelta(hours=2))
    assert (later.resumed, later.jobs) == (1, 1)
    drain(broker)
    assert StorageLocation.get(StorageLocation.connector_name == "backup").status == "OK"
    assert proven_rows().count() == 2


def test_only_the_missing_files_of_stalled_copies_are_queued_again(
    world: tuple[Config, StubBroker, dramatiq.Worker], tmp_path: Path
) -> None:
    config, broker, worker = world
    database = jobs.current().database
    worker.pause()
    first = add_item(tmp_path, "a", {"one.txt": b"1", "two.txt": b"2", "three.txt": b"3"})
    add_item(tmp_path, "b", {"four.txt": b"4"})
    scan(config, database, broker, now=NOW)
    broker.flush_all()
    # One file of "a" was copied and recorded before the jobs were lost.
    target = StorageLocation.get(
        (StorageLocation.file_storage == first) & (StorageLocation.connector_name == "backup")
    )
    two = ReferencedPath.get(
        (ReferencedPath.file_storage == first) & (ReferencedPath.path == "two.txt")
    )
    LocationFile.create(storage_location=target, referenced_path=two, validated_by="crc32c")

    later = scan(config, database, broker, now=utcnow() + timedelta(hours=2))

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


def job_files(messages: list[dramatiq.Message]) -> list[list[tuple[int, str]]]:
    """Each copy job's files, as (item id, path), in order."""
    found = []
    for m in messages:
        if m.actor_name == jobs.ACTOR_COPY_MANY:
            item_id, _, paths = m.args
            found.append([(item_id, path) for path in paths])
        else:
            assert m.actor_name == jobs.ACTOR_COPY_ITEMS
            found.append([(item_id, path) for item_id, paths in m.args[1] for path in paths])
    return found


def test_small_files_share_jobs_up_to_a_count_and_a_size() -> None:
    mib = 1024 * 1024
    limit = jobs.DEFAULT_JOB_FILES
    files = [(f"s{n:03d}", 10) for n in range(limit + 1)]
    files += [("big", jobs.DEFAULT_JOB_BYTES + 1), ("after-1", 40 * mib), ("after-2", 40 * mib)]
    messages = jobs.copy_messages(7, "S3", files)

    assert {m.actor_name for m in messages} == {jobs.ACTOR_COPY_MANY}
    assert all(m.args[:2] == (7, "S3") for m in messages)
    groups = [m.args[2] for m in messages]
    # A file above DEFAULT_JOB_BYTES alone; the rest in as few jobs as the
    # limits allow (two), even; the second cut again where its bytes fill.
    assert groups[0] == ["big"]
    small = [path for path, size in files if size < jobs.DEFAULT_JOB_BYTES]
    assert [path for group in groups[1:] for path in group] == small
    assert [len(group) for group in groups[1:]] == [65, 65, 1]
    assert groups[-1] == ["after-2"]
    # The time limit grows with the job's bytes.
    assert messages[0].options["time_limit"] > messages[1].options["time_limit"]
    assert [m.actor_name for m in jobs.copy_messages(7, "S3", [])] == [jobs.ACTOR_FINISH]


def test_small_items_share_jobs_as_few_and_as_even_as_the_limits_allow() -> None:
    limit = jobs.DEFAULT_JOB_FILES
    items = [(item, [(f"f{n:02d}", 16_384) for n in range(10)]) for item in range(200)]
    messages = jobs.copy_jobs("S3", items)
    groups = job_files(messages)

    # 2,000 files: the fewest jobs the limit allows, their sizes a file apart
    # at most (no straggler the pool would wait on at the end).
    assert len(groups) == -(-2000 // limit)
    sizes = [len(group) for group in groups]
    assert max(sizes) <= limit
    assert max(sizes) - min(sizes) <= 1
    # Every file once, in order; an item is cut only where a job ends.
    flat = [entry for group in groups for entry in group]
    assert flat == [(item, path) for item, files in items for path, _ in files]
    for first, second in itertools.pairwise(groups):
        shared = {item for item, _ in first} & {item for item, _ in second}
        assert shared <= {first[-1][0]}
    assert all(
        m.options["time_limit"] == jobs.time_limit_ms(16_384 * len(g))
        for m, g in zip(messages, groups, strict=True)
    )


def test_items_without_files_finish_and_large_files_go_alone() -> None:
    small = [("a.txt", 10), ("b.txt", 10)]
    items = [
        (1, small),
        (2, []),
        (3, small),
        (5, [("huge", jobs.DEFAULT_JOB_BYTES + 1)]),
        (6, small),
    ]
    summary = [(m.actor_name, m.args) for m in jobs.copy_jobs("S3", items)]
    pair = ["a.txt", "b.txt"]
    assert summary == [
        (jobs.ACTOR_FINISH, (2, "S3")),
        (jobs.ACTOR_COPY_MANY, (5, "S3", ["huge"])),
        (jobs.ACTOR_COPY_ITEMS, ("S3", [[1, pair], [3, pair], [6, pair]])),
    ]
    [one] = jobs.copy_jobs("S3", [(4, small)])
    assert (one.actor_name, one.args) == (jobs.ACTOR_COPY_MANY, (4, "S3", pair))
    assert one.options["time_limit"] == jobs.time_limit_ms(20)


def test_a_first_try_of_small_files_writes_without_looking_a_retry_looks() -> None:
    assert not jobs.look_first(["a", "b"], retries=0)
    assert jobs.look_first(["a", "b"], retries=1)
    assert jobs.look_first(["big"], retries=0)


def test_the_scan_gives_verifications_and_deletes_time_for_the_items_size(
    tmp_path: Path,
) -> None:
    rules = {"verify": {"interval": 1}, "delete": {"delay": 1}}
    config = load_config(write_config(tmp_path, **rules))
    database = open_catalog(config.database)
    broker = make_broker(None)
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
    report = scan(config, database, broker, now=NOW)
    assert (report.verifies, report.deletes) == (1, 1)
    # Verified per file, each job given time to read its bytes back.
    verifies = [json.loads(body) for body in broker.queues["verify"].queue]
    assert {tuple(job["args"][2]): job["options"]["time_limit"] for job in verifies} == {
        ("f0",): jobs.time_limit_ms(40 * 1024**3),
        ("f1",): jobs.time_limit_ms(2 * 1024**3),
        ("f2",): jobs.time_limit_ms(0),
    }
    # Deleted in one job (up to a thousand files share one), given time per file.
    [delete] = [json.loads(body) for body in broker.queues["delete"].queue]
    assert delete["args"] == [item.id, "backup", ["f0", "f1", "f2"]]
    expected = jobs.DEFAULT_TIME_LIMIT_MS + 3 * jobs.DEFAULT_DELETE_MS_PER_FILE
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

    config: Config
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
    monkeypatch.setattr(jobs, "DEFAULT_JOB_FILES", 2)
    monkeypatch.setattr(jobs, "DEFAULT_DELETE_JOB_FILES", 2)
    with running(tmp_path, **rules) as (config, broker, worker):
        item = add_item(tmp_path, "a", FIVE)
        copy = add_backup(tmp_path, item, backup)
        worker.pause()
        yield Backed(config, broker, worker, jobs.current().database, item, copy)


def queued_args(broker: StubBroker, queue: str) -> list[list[object]]:
    return [json.loads(body)["args"] for body in broker.queues[queue].queue]


def test_a_copy_is_verified_per_file_and_verified_when_every_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backed_up(tmp_path, monkeypatch, verify={"interval": 1}) as world:
        config, broker, worker, database, item, copy = world
        report = scan(config, database, broker, now=NOW)
        assert (report.verifies, report.jobs) == (1, 3)
        assert queued_args(broker, "verify") == [
            [item.id, "backup", ["f0.txt", "f1.txt"]],
            [item.id, "backup", ["f2.txt", "f3.txt"]],
            [item.id, "backup", ["f4.txt"]],
        ]
        # Queued, not yet run: a scan queues nothing more.
        assert scan(config, database, broker, now=NOW).jobs == 0
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
        later = scan(config, database, broker, now=utcnow() + timedelta(days=2))
        assert (later.verifies, later.jobs) == (1, 3)


def test_a_damaged_file_makes_its_copy_damaged_and_the_next_scan_repairs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = {**FIVE, "f3.txt": b"DDDX"}
    with backed_up(tmp_path, monkeypatch, damaged, verify={"interval": 1}) as world:
        config, broker, worker, database, _item, copy = world
        worker.resume()
        scan(config, database, broker, now=NOW)
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
        report = scan(config, database, broker, now=NOW)
        assert (report.verifies, report.repairs) == (0, 1)
        drain(broker)
        copy = StorageLocation.get_by_id(copy.id)
        assert copy.status == "OK" and copy.last_verified is not None
        assert (tmp_path / "backup" / "a" / "f3.txt").read_bytes() == FIVE["f3.txt"]
        [repair] = Action.select().where(Action.action == "repair")
        assert (repair.result, repair.source, repair.path) == ("ok", "local", "f3.txt")
        assert scan(config, database, broker, now=NOW).jobs == 0


def test_a_delete_is_queued_per_file_and_the_location_goes_with_its_last_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backed_up(tmp_path, monkeypatch, delete={"delay": 1}) as world:
        config, broker, worker, database, _item, copy = world
        report = scan(config, database, broker, now=NOW)
        assert (report.deletes, report.jobs) == (1, 3)
        assert [args[2] for args in queued_args(broker, "delete")] == [
            ["f0.txt", "f1.txt"],
            ["f2.txt", "f3.txt"],
            ["f4.txt"],
        ]
        assert scan(config, database, broker, now=NOW).jobs == 0
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
        config, broker, worker, database, _item, copy = world
        scan(config, database, broker, now=NOW)
        first = queued_args(broker, "delete")[0]
        jobs.delete_files_job(*first)  # one job ran ...
        broker.flush_all()  # ... then the broker lost the others

        copy = StorageLocation.get_by_id(copy.id)
        assert copy.status == "DE"
        left = LocationFile.select().where(LocationFile.storage_location == copy)
        assert sorted(row.referenced_path.path for row in left) == ["f2.txt", "f3.txt", "f4.txt"]
        backup = LocalConnector("backup", path=tmp_path / "backup")
        assert sorted(info.path for info in backup.list()) == ["a/f2.txt", "a/f3.txt", "a/f4.txt"]
        # A delete under way is not planned again; once stalled, what is left is queued.
        assert scan(config, database, broker, now=utcnow()).jobs == 0
        later = scan(config, database, broker, now=utcnow() + timedelta(hours=2))
        assert (later.resumed, later.jobs) == (1, 2)
        assert [args[2] for args in queued_args(broker, "delete")] == [
            ["f2.txt", "f3.txt"],
            ["f4.txt"],
        ]
        worker.resume()
        drain(broker)
        assert StorageLocation.get_or_none(StorageLocation.id == copy.id) is None
        assert list(backup.list()) == []


def test_every_job_of_a_delete_refused_at_run_time_leaves_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backed_up(tmp_path, monkeypatch, delete={"delay": 1}) as world:
        config, broker, worker, database, _item, copy = world
        assert scan(config, database, broker, now=NOW).jobs == 3
        AccessLog.create(storage_location=copy, reason="a reader came after the scan")
        worker.resume()
        drain(broker)

        assert StorageLocation.get_by_id(copy.id).status == "OK"
        assert len(list(LocalConnector("backup", path=tmp_path / "backup").list())) == 5
        refusals = Action.select().where((Action.action == "delete") & (Action.result == "refused"))
        assert [a.error for a in refusals] == ["locked by 1 open access log(s)"] * 3


def test_a_job_given_up_is_recorded_for_each_item_it_held() -> None:
    work = jobs._work_of
    assert work(jobs.ACTOR_COPY_ITEMS, ["S3", [[1, ["a", "b"]], [2, ["c"]]]]) == [
        (1, "S3", ["a", "b"]),
        (2, "S3", ["c"]),
    ]
    assert work(jobs.ACTOR_COPY_MANY, [7, "S3", ["a"]]) == [(7, "S3", ["a"])]
    assert work(jobs.ACTOR_DELETE, [7, "S3"]) == [(7, "S3", None)]
    assert work(jobs.ACTOR_COPY_MANY, []) == []


def test_a_delete_left_half_done_without_file_rows_removes_every_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Marked DE by an import or an earlier version: no row says what is left.
    with backed_up(tmp_path, monkeypatch, delete={"delay": 1}) as world:
        config, broker, worker, database, _, copy = world
        StorageLocation.update(status="DE").where(StorageLocation.id == copy.id).execute()
        later = scan(config, database, broker, now=utcnow() + timedelta(hours=2))
        assert (later.resumed, later.jobs) == (1, 3)  # every file, two to a job
        worker.resume()
        drain(broker)
        assert StorageLocation.get_or_none(StorageLocation.id == copy.id) is None
        assert list(LocalConnector("backup", path=tmp_path / "backup").list()) == []


def test_a_validated_copy_is_not_read_back_at_the_next_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs, "DEFAULT_MIN_BACKOFF_MS", 10)
    with running(tmp_path, verify={"interval": 30}) as (config, broker, _):
        database = jobs.current().database
        add_item(tmp_path, "a", {"one.txt": b"1" * 100, "two.txt": b"2" * 10})
        assert scan(config, database, broker, now=NOW).copies == 1
        drain(broker)
        copy = StorageLocation.get(StorageLocation.connector_name == "backup")
        assert copy.status == "OK" and copy.last_verified is not None
        rows = LocationFile.select().where(LocationFile.storage_location == copy)
        assert all(row.verified == copy.last_verified for row in rows)
        later = scan(config, database, broker, now=utcnow() + timedelta(days=1))
        assert (later.verifies, later.jobs) == (0, 0)
        assert scan(config, database, broker, now=utcnow() + timedelta(days=31)).verifies == 1
