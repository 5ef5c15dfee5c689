"""The same job twice at once, on real Redis, against moto_server through a faulty proxy.

Delivery is at least once: a job is redelivered when its worker is thought
dead, and an operator's ``request copy`` may queue one the scan queued
too. Two such jobs write the same object; one of them failing must not
leave the catalog counting bytes that are no longer there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dramatiq
import peewee as pw
import pytest

from catalog.models import Action, FileStorage, StorageLocation, utcnow
from connectors.errors import ObjectNotFound
from connectors.s3 import S3Connector
from resolwe_storage.cli import main
from resolwe_storage.config import Config, load_config
from resolwe_storage.wiring import open_catalog, worker_runtime
from scheduler.scan import scan
from tests.integration.workers.test_jobs_on_redis import s3_only_config, statuses, wait_for
from tests.servers.faulty import Fault, FaultyProxy, faulty_proxy
from workers import messages, process
from workers.broker import make_broker
from workers.operations import verify_item_files

pytest_plugins = ["tests.servers.redis"]

DATA = os.urandom(50_000)
OTHER = os.urandom(20_000)


@contextmanager
def copying_through_proxy(
    tmp_path: Path,
    redis_url: str,
    moto_server: str,
    s3_bucket: S3Connector,
    files: dict[str, bytes],
    *,
    hold: bool = True,
) -> Iterator[tuple[Config, pw.Database, dramatiq.Broker, FaultyProxy]]:
    """``files`` ingested as item ``k``, one scan queued; S3 through a proxy that, if
    ``hold``, holds the first upload of ``f.bin`` (``hold_first_upload``)."""
    with faulty_proxy(moto_server) as proxy:
        # Checksums not sent along: moto's ETag is what catches the damage
        # (S3 itself would refuse the damaged upload with them).
        config_path = s3_only_config(
            tmp_path, redis_url, s3_bucket, endpoint=proxy.url, upload_checksums=False
        )
        sample = tmp_path / "local" / "files"
        sample.mkdir(parents=True)
        for name, data in files.items():
            (sample / name).write_bytes(data)
        assert (
            main(["--config", str(config_path), "ingest", "local", str(sample), "--key", "k"]) == 0
        )
        config = load_config(config_path)
        database = open_catalog(config.database)
        broker = make_broker(config.broker)
        try:
            assert scan(config.policies, database, broker, now=utcnow()).copies == 1
            if hold:
                hold_first_upload(proxy)
            yield config, database, broker, proxy
        finally:
            database.close()


def hold_first_upload(proxy: FaultyProxy) -> Fault:
    """The next upload of ``f.bin`` is held on the way (3 s), then lands with a byte flipped."""
    return proxy.fail(Fault("PUT", r"/files/f\.bin", hang=3.0, flip=7))


def assert_intact(s3_bucket: S3Connector, files: dict[str, bytes]) -> None:
    """The catalog counts the copy on S3, and S3 holds every file whole."""
    assert StorageLocation.get(StorageLocation.connector_name == "S3").status == "OK"
    for name, data in files.items():
        try:
            with s3_bucket.open_read(f"files/{name}") as stream:
                found = stream.read()
        except ObjectNotFound:
            pytest.fail(f"the catalog records files/{name} good on S3, which holds none")
        assert found == data, name


def test_a_duplicate_copy_whose_upload_is_damaged_leaves_no_good_record_of_a_removed_object(
    tmp_path: Path, redis_url: str, moto_server: str, s3_bucket: S3Connector
) -> None:
    files = {"f.bin": DATA}
    with copying_through_proxy(tmp_path, redis_url, moto_server, s3_bucket, files) as (
        config,
        database,
        broker,
        proxy,
    ):
        [held] = proxy.faults
        # The same job again (an operator's request beside the scan's, or a
        # redelivery): both run at once. The first upload is held on the way
        # and lands damaged: by then the other job has copied the file,
        # recorded it and made the copy OK.
        item = FileStorage.get(FileStorage.key == "k")
        [again] = messages.copy_messages(item.id, "S3", [("f.bin", len(DATA))])
        broker.enqueue(again)
        running = process.start(worker_runtime(config, database, broker), threads=2)
        try:
            wait_for(lambda: held.hits == 1, what="the held upload")
            wait_for(
                lambda: Action.select().where(Action.result == "failed").count() == 1,
                what="the damaged upload caught",
            )
            time.sleep(3)  # the failed job's retries (its backoff is a second or two)
            # The scan queues what the catalog says is due (a repair, if any).
            scan(config.policies, database, broker, now=utcnow())
            wait_for(lambda: statuses().get("S3") == "OK", what="the copy on S3")
        finally:
            process.stop(running)
        [failed] = Action.select().where(Action.result == "failed")
        assert "removed it" in failed.error
        # The catalog said S3 holds the file good: it must be there, whole.
        assert_intact(s3_bucket, files)
        # The copy recorded good was found gone, damaged, and repaired.
        [repair] = Action.select().where(Action.action == "repair")
        assert repair.result == "ok" and repair.target == "S3"


def test_a_duplicate_copy_whose_upload_is_damaged_while_the_copy_is_under_way_copies_it_again(
    tmp_path: Path, redis_url: str, moto_server: str, s3_bucket: S3Connector
) -> None:
    files = {"f.bin": DATA, "g.bin": OTHER}
    with copying_through_proxy(tmp_path, redis_url, moto_server, s3_bucket, files) as (
        config,
        database,
        broker,
        proxy,
    ):
        [held] = proxy.faults
        running = process.start(worker_runtime(config, database, broker), threads=2)
        try:
            # The scan's job (both files, side by side) has its upload of f.bin
            # held; meanwhile the same file's job, queued again, copies and
            # records it, while g.bin is not recorded yet: the copy is under way.
            wait_for(lambda: held.hits == 1, what="the held upload")
            item = FileStorage.get(FileStorage.key == "k")
            [again] = messages.copy_messages(item.id, "S3", [("f.bin", len(DATA))])
            broker.enqueue(again)
            wait_for(lambda: statuses().get("S3") == "OK", what="the copy on S3")
        finally:
            process.stop(running)
        [failed] = Action.select().where(Action.result == "failed")
        assert failed.path == "f.bin" and "removed it" in failed.error
        assert_intact(s3_bucket, files)


def test_a_duplicate_repair_whose_upload_is_damaged_leaves_no_good_record_of_a_removed_object(
    tmp_path: Path, redis_url: str, moto_server: str, s3_bucket: S3Connector
) -> None:
    files = {"f.bin": DATA}
    with copying_through_proxy(tmp_path, redis_url, moto_server, s3_bucket, files, hold=False) as (
        config,
        database,
        broker,
        proxy,
    ):
        runtime = worker_runtime(config, database, broker)
        running = process.start(runtime, threads=2)
        try:
            wait_for(lambda: statuses().get("S3") == "OK", what="the copy on S3")
            # The object goes; a verification finds it missing: the copy is damaged.
            s3_bucket.delete("files/f.bin")
            item = FileStorage.get(FileStorage.key == "k")
            verify_item_files(item.id, "S3", None, connectors=runtime.connector, now=utcnow())
            assert statuses()["S3"] == "DM"
            # Its repair twice at once (the scan's, and an operator's): the
            # first upload is held and lands damaged, after the other repaired it.
            held = hold_first_upload(proxy)
            for _ in range(2):
                broker.enqueue(messages.repair_messages(item.id, "S3", [("f.bin", len(DATA))])[0])
            wait_for(lambda: held.hits == 1, what="the held upload")
            wait_for(
                lambda: proxy.requests("DELETE", r"/files/f\.bin") != [],
                what="the damaged upload caught and removed",
            )
            time.sleep(3)  # the failed job's retries (its backoff is a second or two)
            wait_for(lambda: statuses().get("S3") == "OK", what="the repair")
        finally:
            process.stop(running)
        assert_intact(s3_bucket, files)
