"""Scheduler, Redis and workers end to end, against moto_server and fake-gcs-server.

Real files under a local connector are ingested; one scan queues per-file
jobs on the real Redis; Dramatiq workers copy them to S3 and GCS, where the
hashes are proven; moving ``now`` forward, deletions keep to the rules.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import dramatiq
import peewee as pw
import pytest

from catalog.integrity import ASSERTED
from catalog.models import AccessLog, Action, LocationFile, StorageLocation, utcnow
from connectors.gcs import GCSConnector
from connectors.hashing import hash_stream
from connectors.s3 import S3Connector
from resolwe_storage.api import StorageService
from resolwe_storage.cli import main
from resolwe_storage.config import Config, load_config
from resolwe_storage.wiring import open_catalog, worker_runtime
from scheduler.scan import scan
from tests.servers.faulty import Fault, FaultyProxy, faulty_proxy
from tests.servers.moto import RestartableMoto
from workers import actors, messages, process
from workers.broker import make_broker

pytest_plugins = ["tests.servers.redis"]

FILES = {f"part-{n}.txt": os.urandom(1000 + 37 * n) for n in range(5)}


def copied_rows() -> pw.ModelSelect:
    """Rows of files the workers copied (not those an ingest asserted on its folder)."""
    return LocationFile.select().where(LocationFile.validated_by != ASSERTED)


def write_config(
    tmp_path: Path, redis_url: str, s3: S3Connector, gcs_endpoint: str, gcs_bucket: str
) -> Path:
    document = {
        "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        "broker": redis_url,
        "connectors": {
            "local": {
                "connector": "local",
                "config": {
                    "priority": 0,
                    "path": str(tmp_path / "local"),
                    "delete": {"delay": 5, "min_other_copies": 2},
                },
            },
            "S3": {
                "connector": "s3",
                "config": {
                    "priority": 10,
                    "bucket": s3.bucket,
                    "endpoint_url": s3.endpoint_url,
                    "credentials": s3.credentials,
                    "region_name": s3.region_name,
                    "copy": {"delay": 0},
                    "delete": {"delay": 5, "min_other_copies": 2},
                },
            },
            "GCS": {
                "connector": "gcs",
                "config": {
                    "priority": 20,
                    "bucket": gcs_bucket,
                    "endpoint_url": gcs_endpoint,
                    "copy": {"delay": 0},
                    "delete": {"delay": 5, "min_other_copies": 2},
                },
            },
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def ingest_sample(tmp_path: Path, config_path: Path) -> None:
    """FILES under the local connector, ingested as item ``k``."""
    sample = tmp_path / "local" / "files"
    sample.mkdir(parents=True)
    for name, data in FILES.items():
        (sample / name).write_bytes(data)
    assert main(["--config", str(config_path), "ingest", "local", str(sample), "--key", "k"]) == 0


def s3_only_config(
    tmp_path: Path, redis_url: str, s3_bucket: S3Connector, *, endpoint: str, **extra: Any
) -> Path:
    """The configuration of ``write_config`` without GCS, S3 reached at ``endpoint``."""
    path = write_config(tmp_path, redis_url, s3_bucket, "http://unused", "unused")
    document = json.loads(path.read_text())
    del document["connectors"]["GCS"]
    document["connectors"]["S3"]["config"].update(endpoint_url=endpoint, **extra)
    path.write_text(json.dumps(document))
    return path


@pytest.fixture
def world(
    tmp_path: Path,
    redis_url: str,
    s3_bucket: S3Connector,
    fake_gcs_server: str,
    gcs_bucket: str,
) -> Iterator[tuple[Config, pw.Database, dramatiq.Broker]]:
    config_path = write_config(tmp_path, redis_url, s3_bucket, fake_gcs_server, gcs_bucket)
    ingest_sample(tmp_path, config_path)
    config = load_config(config_path)
    database = open_catalog(config.database)
    yield config, database, make_broker(config.broker)
    database.close()


def wait_for(condition: Callable[[], bool], *, seconds: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def statuses() -> dict[str, str]:
    return {loc.connector_name: loc.status for loc in StorageLocation.select()}


def test_copies_to_s3_and_gcs_then_deletes_that_keep_to_the_rules(
    world: tuple[Config, pw.Database, dramatiq.Broker],
    s3_bucket: S3Connector,
    fake_gcs_server: str,
    gcs_bucket: str,
) -> None:
    config, database, broker = world
    report = scan(config.policies, database, broker, now=utcnow())
    assert report.copies == 2 and report.jobs == 2  # the small files of a copy share a job
    # A second scheduler pass finds nothing new to queue.
    assert scan(config.policies, database, broker, now=utcnow()).jobs == 0

    running = process.start(worker_runtime(config, database, broker), threads=4)
    try:
        wait_for(lambda: statuses() == {"local": "OK", "S3": "OK", "GCS": "OK"}, what="copies")
        gcs = GCSConnector("GCS", bucket=gcs_bucket, endpoint_url=fake_gcs_server)
        for backend in (s3_bucket, gcs):
            for name, data in FILES.items():
                with backend.open_read(f"files/{name}") as stream:
                    assert hash_stream(stream).md5 == hash_stream(io.BytesIO(data)).md5
        assert copied_rows().count() == 2 * len(FILES)

        # Ten days on, deletes from S3 and GCS are due; each must leave two
        # other copies, so only one of them may go, whichever runs first.
        later = utcnow() + timedelta(days=10)
        actors.current().clock = lambda: later
        report = scan(config.policies, database, broker, now=later)
        assert report.deletes == 2
        wait_for(
            lambda: Action.select().where(Action.action == "delete").count() == 2,
            what="both delete jobs",
        )
    finally:
        process.stop(running)
    outcomes = sorted(a.result for a in Action.select().where(Action.action == "delete"))
    assert outcomes == ["ok", "refused"]
    left = statuses()
    assert left["local"] == "OK" and sorted(left) in (["GCS", "local"], ["S3", "local"])


def test_a_copy_locked_after_the_scan_is_not_deleted_by_its_job(
    world: tuple[Config, pw.Database, dramatiq.Broker],
    fake_gcs_server: str,
    gcs_bucket: str,
) -> None:
    config, database, broker = world
    scan(config.policies, database, broker, now=utcnow())
    running = process.start(worker_runtime(config, database, broker), threads=4)
    try:
        wait_for(lambda: statuses() == {"local": "OK", "S3": "OK", "GCS": "OK"}, what="copies")
        later = utcnow() + timedelta(days=10)
        actors.current().clock = lambda: later
        running.pause()
        assert scan(config.policies, database, broker, now=later).deletes == 2
        # A service starts reading the GCS copy after the scan planned its deletion.
        service = StorageService(config, database, broker)
        with service.reading("k", connector="GCS", reason="a reader"):
            running.resume()
            wait_for(
                lambda: Action.select().where(Action.action == "delete").count() == 2,
                what="both delete jobs",
            )
    finally:
        process.stop(running)
    outcomes = {
        a.target: (a.result, a.error) for a in Action.select().where(Action.action == "delete")
    }
    assert outcomes["S3"] == ("ok", None)
    assert outcomes["GCS"][0] == "refused" and "locked" in outcomes["GCS"][1]
    # The preferred copy (local) was never a candidate; GCS is intact.
    assert statuses() == {"local": "OK", "GCS": "OK"}
    gcs = GCSConnector("GCS", bucket=gcs_bucket, endpoint_url=fake_gcs_server)
    for name, data in FILES.items():
        with gcs.open_read(f"files/{name}") as stream:
            assert stream.read() == data


def test_two_schedulers_at_once_queue_each_job_once(
    world: tuple[Config, pw.Database, dramatiq.Broker],
) -> None:
    config, database, broker = world
    reports: list[Any] = []

    def one() -> None:
        database.connect(reuse_if_open=True)
        try:
            reports.append(scan(config.policies, database, broker, now=utcnow()))
        finally:
            database.close()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 2  # both scans ran to the end
    assert sum(report.jobs for report in reports) == 2
    assert broker.client.llen("dramatiq:copy") == 2  # type: ignore[attr-defined]


def test_a_worker_killed_mid_copy_has_its_job_redelivered_and_completed(
    tmp_path: Path,
    redis_url: str,
    moto_server: str,
    s3_bucket: S3Connector,
    fake_gcs_server: str,
    gcs_bucket: str,
) -> None:
    with faulty_proxy(moto_server) as proxy:
        config_path = s3_only_config(tmp_path, redis_url, s3_bucket, endpoint=proxy.url)
        sample = tmp_path / "local" / "files"
        sample.mkdir(parents=True)
        (sample / "big.bin").write_bytes(os.urandom(300_000))
        command = [sys.executable, "-m", "resolwe_storage", "--config", str(config_path)]
        subprocess.run([*command, "ingest", "local", str(sample), "--key", "k"], check=True)
        subprocess.run([*command, "scan"], check=True)

        # The first upload hangs at the proxy; the worker is killed meanwhile.
        proxy.fail(Fault("PUT", r"/files/big\.bin", hang=60, times=1))
        victim = subprocess.Popen([*command, "worker", "--threads", "1", "--metrics-bind", "off"])
        wait_for(lambda: proxy.requests("PUT", r"/files/big\.bin") != [], what="the upload")
        victim.kill()
        victim.wait()
        proxy.heal()

        log = tmp_path / "survivor.log"
        with log.open("wb") as output:
            survivor = subprocess.Popen(
                [*command, "worker", "--threads", "2", "--metrics-bind", "off"],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            config = load_config(config_path)
            database = open_catalog(config.database)

            def done() -> bool:
                with database.connection_context():
                    return statuses().get("S3") == "OK"

            # Timed from when the survivor runs (it says so), not from the
            # kill: its start-up may take long on a loaded machine. The job
            # comes back within the heartbeat timeout (10 s) and a maintenance
            # pass, not after the minute of Dramatiq's default.
            wait_for(lambda: "worker:" in log.read_text(), what="the survivor to start")
            up_at = time.monotonic()
            wait_for(done, seconds=120, what="the redelivered copy")
            redelivered_after = time.monotonic() - up_at
        finally:
            survivor.terminate()
            survivor.wait(timeout=60)
    assert redelivered_after < 30, (
        f"copied {redelivered_after:.1f} s after the survivor started: {log.read_text()}"
    )
    with database.connection_context():
        assert copied_rows().count() == 1
        assert StorageLocation.select().count() == 2
        # The killed worker's lock on the source stays until its job's time
        # limit has passed; then the scan closes it (tests/unit/workers/test_actors).
        [left] = AccessLog.select().where(AccessLog.finished.is_null())
        longest = (
            timedelta(milliseconds=messages.copy_time_limit_ms(300_000, 1))
            + actors.DEFAULT_LOCK_MARGIN
        )
        assert left.expires is not None and left.expires <= utcnow() + longest
    with s3_bucket.open_read("files/big.bin") as stream:
        assert stream.read() == (sample / "big.bin").read_bytes()


def test_requests_from_the_command_line_are_queued_on_redis(
    world: tuple[Config, pw.Database, dramatiq.Broker],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, _, broker = world
    config = str(tmp_path / "config.json")
    capsys.readouterr()
    assert main(["--config", config, "request", "copy", "k", "--to", "S3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"] == 1
    assert main(["--config", config, "request", "verify", "k", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["jobs"] == 1
    assert main(["--config", config, "request", "verify", "k"]) == 0
    assert capsys.readouterr().out.strip() == "queued 0 job(s)"
    client = broker.client  # type: ignore[attr-defined]
    assert client.llen("dramatiq:copy") == 1 and client.llen("dramatiq:verify") == 1
    assert main(["--config", config, "request", "copy", "k", "--to", "S3"]) == 1
    assert "already has a location on 'S3' (PR)" in capsys.readouterr().err


def test_a_redis_restarted_mid_run_loses_nothing(
    tmp_path: Path,
    private_redis: Any,
    s3_bucket: S3Connector,
    fake_gcs_server: str,
    gcs_bucket: str,
) -> None:
    config_path = write_config(tmp_path, private_redis.url, s3_bucket, fake_gcs_server, gcs_bucket)
    ingest_sample(tmp_path, config_path)
    config = load_config(config_path)
    database = open_catalog(config.database)
    broker = make_broker(config.broker)
    running = process.start(worker_runtime(config, database, broker), threads=2)
    try:
        running.pause()
        assert scan(config.policies, database, broker, now=utcnow()).jobs == 2
        # Redis dies with the jobs queued, and comes back empty.
        private_redis.stop()
        private_redis.start()
        running.resume()
        # A later scan finds the stalled copies and queues their missing files
        # (it may take the broker a moment to reconnect).
        wait_for(
            lambda: _scan_quietly(config, database, broker, timedelta(hours=2)) == 2,
            what="a scan after the restart",
        )
        wait_for(
            lambda: statuses() == {"local": "OK", "S3": "OK", "GCS": "OK"},
            what="the copies after the restart",
        )
    finally:
        process.stop(running)
    assert copied_rows().count() == 2 * len(FILES)
    for name, data in FILES.items():
        with s3_bucket.open_read(f"files/{name}") as stream:
            assert stream.read() == data
    database.close()


def _scan_quietly(
    config: Config, database: pw.Database, broker: dramatiq.Broker, ahead: timedelta
) -> int:
    """How many stalled copies a scan ``ahead`` of now resumed; 0 while Redis is unreachable."""
    import redis

    try:
        return scan(config.policies, database, broker, now=utcnow() + ahead).resumed
    except redis.ConnectionError:
        return 0


@contextmanager
def copying_through(
    tmp_path: Path, redis_url: str, s3_bucket: S3Connector, proxy: FaultyProxy, **extra: Any
) -> Iterator[tuple[Config, pw.Database, dramatiq.Broker]]:
    """FILES ingested on local and one scan queued, S3 reached through ``proxy``."""
    config_path = s3_only_config(tmp_path, redis_url, s3_bucket, endpoint=proxy.url, **extra)
    ingest_sample(tmp_path, config_path)
    config = load_config(config_path)
    database = open_catalog(config.database)
    broker = make_broker(config.broker)
    assert scan(config.policies, database, broker, now=utcnow()).copies == 1
    try:
        yield config, database, broker
    finally:
        database.close()


def assert_copied_intact(s3_bucket: S3Connector) -> None:
    """S3 holds every file's bytes; the catalog one OK copy there, each file once, no locks."""
    for name, data in FILES.items():
        with s3_bucket.open_read(f"files/{name}") as stream:
            assert stream.read() == data
    assert statuses() == {"local": "OK", "S3": "OK"}
    assert copied_rows().count() == len(FILES)
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0


def test_an_s3_outage_mid_run_holds_the_copy_back_and_loses_nothing(
    tmp_path: Path, redis_url: str, moto_server: str, s3_bucket: S3Connector
) -> None:
    with (
        faulty_proxy(moto_server) as proxy,
        copying_through(tmp_path, redis_url, s3_bucket, proxy) as (config, database, broker),
    ):
        # The server goes away: every request's connection is cut.
        for method in ("GET", "HEAD", "PUT", "POST"):
            proxy.fail(Fault(method, r".", drop=True, times=None))
        running = process.start(worker_runtime(config, database, broker), threads=2)
        try:
            wait_for(lambda: len(proxy.requests("GET", r".")) >= 2, what="tries during the outage")
            time.sleep(1)
            assert statuses()["S3"] in ("PR", "UP")
            assert copied_rows().count() == 0
            proxy.heal()  # back up, with everything it held before
            wait_for(lambda: statuses().get("S3") == "OK", seconds=60, what="the copy")
        finally:
            process.stop(running)
        assert_copied_intact(s3_bucket)
        # Transient failures retried to success leave no failure in the history.
        assert Action.select().where(Action.result == "failed").count() == 0


def on_server(client: Any) -> set[str]:
    """Names of the files the bucket ``restarted`` holds, asked of the server itself."""
    listed = client.list_objects_v2(Bucket="restarted", Prefix="files/")
    return {entry["Key"].removeprefix("files/") for entry in listed.get("Contents", [])}


def test_an_s3_server_restarted_mid_copy_loses_nothing(
    tmp_path: Path, redis_url: str, restartable_moto: RestartableMoto, s3_credentials: Path
) -> None:
    from tests.servers.moto import REGION, raw_client

    raw_client(restartable_moto.endpoint).create_bucket(Bucket="restarted")  # type: ignore[attr-defined]
    s3 = S3Connector(
        "S3",
        bucket="restarted",
        endpoint_url=restartable_moto.endpoint,
        credentials=str(s3_credentials),
        region_name=REGION,
    )
    with (
        faulty_proxy(restartable_moto.endpoint) as proxy,
        copying_through(tmp_path, redis_url, s3, proxy) as (config, database, broker),
    ):
        # The fourth file's upload is held on the way while the server dies.
        held = proxy.fail(Fault("PUT", r"part-3\.txt", hang=3.0))
        running = process.start(worker_runtime(config, database, broker), threads=2)
        try:
            wait_for(lambda: held.hits == 1, what="the fourth upload")
            # Small files go side by side: the others land on the server
            # beside the held one (asked directly, not through the proxy).
            server = raw_client(restartable_moto.endpoint)
            wait_for(
                lambda: on_server(server) == set(FILES) - {"part-3.txt"},
                what="the uploads beside the held one",
            )
            time.sleep(0.5)  # their answers on the way back
            landed = on_server(server)
            before = len(proxy.requests("PUT", r"part-"))
            restartable_moto.kill()
            # Unreachable until it is back whole (moto rebuilds its state by
            # replaying what it was sent, which a real server need not do).
            for method in ("GET", "HEAD", "PUT", "POST", "DELETE"):
                proxy.fail(Fault(method, r".", drop=True, times=None))
            # The held upload fails; those proven beside or before it are recorded.
            wait_for(lambda: copied_rows().count() == len(landed), what="the landed files")
            time.sleep(1)  # the job's tries meanwhile fail too: the copy waits
            recorded = {row.referenced_path.path for row in copied_rows()}
            assert statuses()["S3"] == "UP" and recorded == landed
            assert "part-3.txt" not in recorded
            restartable_moto.start()  # the same server, with what it held ...
            proxy.heal()  # ... answers again
            wait_for(lambda: statuses().get("S3") == "OK", seconds=60, what="the copy")
        finally:
            process.stop(running)
        assert_copied_intact(s3)
        # The retries sent exactly what was not recorded; what was is still
        # there, intact (checked above against every file's bytes).
        again = set(proxy.requests("PUT", r"part-")[before:])
        assert again == {f"/restarted/files/{name}" for name in FILES if name not in recorded}
        assert Action.select().where(Action.result == "failed").count() == 0


def test_a_byte_damaged_on_the_way_is_caught_removed_and_copied_again(
    tmp_path: Path, redis_url: str, moto_server: str, s3_bucket: S3Connector
) -> None:
    with (
        faulty_proxy(moto_server) as proxy,
        # With checksums sent along, S3 itself refuses damaged bytes; moto
        # does not, so here the ETag it computes is what catches the damage.
        copying_through(tmp_path, redis_url, s3_bucket, proxy, upload_checksums=False) as (
            config,
            database,
            broker,
        ),
    ):
        proxy.fail(Fault("PUT", r"/files/part-2\.txt", flip=7, times=1))
        running = process.start(worker_runtime(config, database, broker), threads=2)
        try:
            wait_for(lambda: statuses().get("S3") == "OK", seconds=60, what="the copy")
        finally:
            process.stop(running)
        assert_copied_intact(s3_bucket)
        assert len(proxy.requests("PUT", r"/files/part-2\.txt")) >= 2
        [failed] = Action.select().where(Action.result == "failed")
        assert failed.path == "part-2.txt" and "removed it" in failed.error


def test_a_retry_due_while_redis_is_away_is_queued_once_it_is_back(
    tmp_path: Path, private_redis: Any, moto_server: str, s3_bucket: S3Connector
) -> None:
    """A job that fails for a moment while Redis is out of reach is still retried.

    Its retry is queued on Redis; a worker whose network drops both (or a
    Redis that restarts with what it held) must not lose it: else the job
    is acknowledged without a retry, and its pending marker holds that
    work back for a day (``DEFAULT_PENDING_TTL``).
    """
    import redis

    with (
        faulty_proxy(moto_server) as proxy,
        copying_through(tmp_path, private_redis.url, s3_bucket, proxy) as (
            config,
            database,
            broker,
        ),
    ):
        running = process.start(worker_runtime(config, database, broker), threads=2)
        try:
            wait_for(lambda: statuses().get("S3") == "OK", what="the copy")
            config_path = str(tmp_path / "config.json")
            # The verification's first read of S3 hangs, then its connection drops.
            held = proxy.fail(Fault("GET", r"/files/", hang=3.0, times=1))
            proxy.fail(Fault("GET", r"/files/", drop=True, times=None))
            proxy.fail(Fault("HEAD", r"/files/", drop=True, times=None))
            args = ["--config", config_path, "request", "verify", "k", "--connector", "S3"]
            assert main(args) == 0
            wait_for(lambda: held.hits == 1, what="the verification's read")
            # Redis goes away meanwhile, and comes back with what it held
            # (a network that dropped it for a while: its marker is kept).
            client = redis.Redis.from_url(private_redis.url)
            client.save()
            client.close()
            private_redis.stop()
            time.sleep(4)  # the read fails; the job's retry is due while Redis is away
            private_redis.start()
            proxy.heal()
            wait_for(
                lambda: (
                    Action.select()
                    .where((Action.action == "verify") & (Action.target == "S3"))
                    .exists()
                ),
                seconds=30,
                what="the verification retried once Redis was back",
            )
        finally:
            process.stop(running)
