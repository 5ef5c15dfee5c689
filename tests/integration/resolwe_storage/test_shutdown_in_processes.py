"""Workers and schedulers stopped, and kept running, as an orchestrator does it.

Each process is a ``resolwe-storage`` command of its own on real Redis,
copying to moto_server through a proxy that holds an upload (a slow copy);
signals are sent for real.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import redis

from connectors.s3 import S3Connector
from scheduler.loop import SCHEDULER_LEASE
from tests.integration.workers.test_redelivery_on_redis import copying_through_proxy
from tests.processes import Cli, wait_for
from tests.servers.faulty import Fault
from workers.broker import DEFAULT_HEARTBEAT_TIMEOUT_MS

pytest_plugins = ["tests.servers.redis"]

DATA = b"x" * 50_000
UPLOAD = r"/files/f\.bin"


def test_a_worker_busy_on_its_one_queue_is_not_taken_for_dead(
    tmp_path: Path, redis_url: str, moto_server: str, s3_bucket: S3Connector
) -> None:
    """A worker of ``--queues copy`` whose threads are all busy on one long copy still
    beats: another worker does not take its job as a dead worker's and run it again."""
    hold = DEFAULT_HEARTBEAT_TIMEOUT_MS / 1000 * 1.5
    with copying_through_proxy(
        tmp_path, redis_url, moto_server, s3_bucket, {"f.bin": DATA}, hold=False
    ) as (_, _, _, proxy):
        proxy.fail(Fault("PUT", UPLOAD, hang=hold))
        cli = Cli(tmp_path / "config.json")
        first = cli.start("worker", "--queues", "copy", "--threads", "1", log=tmp_path / "w1.log")
        try:
            wait_for(lambda: proxy.requests("PUT", UPLOAD), "the upload to begin")
            other = cli.start(
                "worker", "--queues", "copy", "--threads", "1", log=tmp_path / "w2.log"
            )
            try:
                time.sleep(hold + 2)
            finally:
                other.send_signal(signal.SIGTERM)
                assert other.wait(60) == 0
        finally:
            first.send_signal(signal.SIGTERM)
            assert first.wait(60) == 0
        assert len(proxy.requests("PUT", UPLOAD)) == 1, "the job ran twice at once"


def test_a_worker_stopped_mid_copy_ends_the_copy_before_it_exits(
    tmp_path: Path, redis_url: str, moto_server: str, s3_bucket: S3Connector
) -> None:
    """SIGTERM while a copy is under way: the copy ends, is acknowledged, and the process
    exits 0; nothing is left for another worker to do again."""
    with copying_through_proxy(
        tmp_path, redis_url, moto_server, s3_bucket, {"f.bin": DATA}, hold=False
    ) as (_, _, _, proxy):
        proxy.fail(Fault("PUT", UPLOAD, hang=5.0))
        cli = Cli(tmp_path / "config.json")
        worker = cli.start("worker", "--threads", "2", log=tmp_path / "worker.log")
        wait_for(lambda: proxy.requests("PUT", UPLOAD), "the upload to begin")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, (tmp_path / "worker.log").read_text()
        status = cli.ok("show", "k", "--json").out
        assert '"S3"' in status and '"OK"' in status, status
        client = redis.Redis.from_url(redis_url)
        assert not client.keys("dramatiq:__acks__.*"), "a job was left unacknowledged"
        assert client.llen("dramatiq:copy") == 0


def test_a_worker_whose_stop_timeout_runs_out_exits_and_its_job_waits_for_another(
    tmp_path: Path, redis_url: str, moto_server: str, s3_bucket: S3Connector
) -> None:
    """``--stop-timeout``: a copy longer than it is cut off when it runs out, the process
    exits (within an orchestrator's grace), and the job is left for another worker: not
    acknowledged, the copy not recorded."""
    hold = 8.0
    with copying_through_proxy(
        tmp_path, redis_url, moto_server, s3_bucket, {"f.bin": DATA}, hold=False
    ) as (_, _, _, proxy):
        proxy.fail(Fault("PUT", UPLOAD, hang=hold))
        cli = Cli(tmp_path / "config.json")
        worker = cli.start(
            "worker", "--threads", "1", "--stop-timeout", "1", log=tmp_path / "worker.log"
        )
        wait_for(lambda: proxy.requests("PUT", UPLOAD), "the upload to begin")
        began = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        assert time.monotonic() - began < hold - 2, (tmp_path / "worker.log").read_text()
        shown = json.loads(cli.ok("show", "k", "--json").out)
        [s3] = [loc for loc in shown["locations"] if loc["connector"] == "S3"]
        assert s3["status"] != "OK"
        client = redis.Redis.from_url(redis_url)
        assert client.keys("dramatiq:__acks__.*"), "the job was acknowledged, as if done"


def test_a_stopped_scheduler_frees_its_lease_at_once(tmp_path: Path, redis_url: str) -> None:
    """SIGTERM to the scheduler holding the lease: the lease is gone when it has exited,
    so a standby replica takes over at its next look, not when the lease lapses."""
    config = tmp_path / "config.json"
    document = {
        "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        "broker": redis_url,
        "connectors": {"local": {"connector": "local", "config": {"path": "local"}}},
    }
    config.write_text(json.dumps(document))
    client = redis.Redis.from_url(redis_url)
    scheduler = Cli(config).start("scheduler", "--interval", "3600", log=tmp_path / "s.log")
    try:
        wait_for(lambda: client.get(SCHEDULER_LEASE), "the lease to be taken")
    finally:
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(60) == 0, (tmp_path / "s.log").read_text()
    assert client.get(SCHEDULER_LEASE) is None
