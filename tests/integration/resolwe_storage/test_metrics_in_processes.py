"""Metrics and health of worker pools and schedulers, scraped over HTTP as Prometheus does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.processes import Cli, copying_pair, fetch, stop, wait_for
from tests.servers.process import free_port

if TYPE_CHECKING:
    from tests.servers.redis import PrivateRedis

pytest_plugins = ["tests.servers.redis"]

#: Files of the item a pool copies: each big enough to be a job of its own.
FILES = 6
FILE_BYTES = 40 * 1024 * 1024


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples ``url`` serves, by name and sorted labels."""
    status, body = fetch(url)
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str):
    return sum(
        value
        for (sample, have), value in found.items()
        if sample == name and set(labels.items()) <= set(have)
    )


def test_a_pool_of_two_processes_serves_the_sum_of_what_each_did(
    tmp_path: Path, redis_url: str
) -> None:
    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    item = tmp_path / "local" / "big"
    item.mkdir(parents=True)
    sizes = 0
    for n in range(FILES):
        size = FILE_BYTES + n  # no two alike
        (item / f"part-{n}.bin").write_bytes(bytes([n]) * size)
        sizes += size
    cli.ok("ingest", "local", item, "--key", "big")
    port = free_port()
    log = tmp_path / "pool.log"
    pool = cli.start(
        "--log-level",
        "info",
        "--log-format",
        "json",
        "worker",
        "--processes",
        "2",
        "--threads",
        "1",
        "--metrics-bind",
        f"127.0.0.1:{port}",
        log=log,
    )
    base = f"http://127.0.0.1:{port}"
    client = redis.Redis.from_url(redis_url)
    try:
        wait_for(lambda: fetch(f"{base}/readyz")[0] == 200, "the pool to be ready")
        # Both processes take jobs before any is queued, so both get some.
        wait_for(lambda: client.zcard("dramatiq:__heartbeats__") == 2, "two live processes")
        cli.ok("scan")
        wait_for(
            lambda: total(samples(f"{base}/metrics"), "resolwe_storage_jobs_total") >= FILES,
            "every job to be counted",
        )
        found = samples(f"{base}/metrics")
        assert fetch(f"{base}/healthz") == (200, "ok\n")
    finally:
        client.close()
        stop(pool)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    jobs = [record for record in records if "job" in record]
    by_process = Counter(record["process"] for record in jobs)
    assert len(by_process) == 2 and sum(by_process.values()) == FILES, by_process
    assert total(found, "resolwe_storage_jobs_total", queue="copy", result="ok") == FILES
    assert total(found, "resolwe_storage_jobs_total", result="failed") == 0
    assert total(found, "resolwe_storage_job_duration_seconds_count") == FILES
    assert total(found, "resolwe_storage_job_files_total", action="copy", connector="archive") == (
        FILES
    )
    assert total(found, "resolwe_storage_job_bytes_total", connector="archive") == sizes
    assert sum(record["job"]["bytes"] for record in jobs) == sizes
    assert total(found, "resolwe_storage_jobs_running") == 0
    assert (tmp_path / "archive" / "big" / "part-5.bin").stat().st_size == FILE_BYTES + 5


def test_a_pool_in_a_metrics_folder_of_the_users_does_not_count_an_earlier_pools_jobs(
    tmp_path: Path, redis_url: str
) -> None:
    """``$PROMETHEUS_MULTIPROC_DIR`` kept across runs (a container restarted, a pool killed)."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    earlier = (
        "from prometheus_client import Counter\n"
        "Counter('resolwe_storage_jobs', 'jobs', ['queue', 'result'])"
        ".labels(queue='copy', result='ok').inc(7)\n"
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    subprocess.run([sys.executable, "-c", earlier], env=env, check=True)
    assert list(folder.glob("*.db")), "the earlier pool's file was not written"
    cli = Cli(
        copying_pair(tmp_path, broker=redis_url), env={"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    )
    port = free_port()
    pool = cli.start(
        "worker", "--processes", "2", "--metrics-bind", f"127.0.0.1:{port}", log=tmp_path / "log"
    )
    try:
        wait_for(lambda: fetch(f"http://127.0.0.1:{port}/readyz")[0] == 200, "the pool")
        found = samples(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop(pool)
    assert total(found, "resolwe_storage_jobs_total") == 0


def test_readyz_says_not_ready_while_redis_is_down_and_ready_once_it_is_back(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    cli = Cli(copying_pair(tmp_path, broker=private_redis.url))
    cli.ok("migrate")
    ports = {"worker": free_port(), "scheduler": free_port()}
    processes = {
        name: cli.start(name, "--metrics-bind", f"127.0.0.1:{port}", log=tmp_path / f"{name}.log")
        for name, port in ports.items()
    }
    urls = {name: f"http://127.0.0.1:{port}/readyz" for name, port in ports.items()}
    try:
        for name, url in urls.items():
            wait_for(lambda url=url: fetch(url)[0] == 200, f"the {name} to be ready")
        _, body = fetch(urls["scheduler"])
        assert json.loads(body)["lease"] in ("held", "standby")
        private_redis.stop()
        for name, url in urls.items():
            wait_for(lambda url=url: fetch(url)[0] == 503, f"the {name} to be not ready")
            _, body = fetch(url)
            told = json.loads(body)
            assert told["ready"] is False and told["catalog"] == "ok" and told["broker"] != "ok"
            # Alive all the same: an orchestrator must not restart it for Redis's outage.
            assert fetch(url.replace("readyz", "healthz"))[0] == 200
        private_redis.start()
        for name, url in urls.items():
            wait_for(lambda url=url: fetch(url)[0] == 200, f"the {name} to be ready again")
    finally:
        for process in processes.values():
            stop(process)


def test_the_scheduler_serves_its_scans_and_the_catalog_as_it_is(
    tmp_path: Path, redis_url: str
) -> None:
    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    for key in ("one", "two", "three"):
        folder = tmp_path / "local" / key
        folder.mkdir(parents=True)
        (folder / "f.txt").write_text(key * 10)
        cli.ok("ingest", "local", folder, "--key", key)
    port = free_port()
    log = tmp_path / "scheduler.log"
    scheduler = cli.start(
        "--log-level",
        "info",
        "scheduler",
        "--interval",
        "1",
        "--metrics-bind",
        f"127.0.0.1:{port}",
        log=log,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_for(lambda: fetch(url)[0] == 200, "the metrics")
        wait_for(
            lambda: total(samples(url), "resolwe_storage_scans_total", result="ok") >= 2,
            "two scans",
        )
        # The catalog's gauges are read at most every few seconds (not at every scrape).
        wait_for(
            lambda: total(samples(url), "resolwe_storage_copies", state="in_progress") == 3,
            "the catalog gauges to show the reserved copies",
        )
        found = samples(url)
    finally:
        stop(scheduler)
    # Three copies queued by the first scan, none again by the next (they are pending).
    assert total(found, "resolwe_storage_scan_jobs_queued_total", action="copy") == 3
    assert total(found, "resolwe_storage_scheduler_lease_held") == 1
    assert total(found, "resolwe_storage_items", status="OK") == 3
    assert total(found, "resolwe_storage_copies", connector="local", state="ok") == 3
    assert total(found, "resolwe_storage_copies", connector="archive", state="in_progress") == 3
    assert total(found, "resolwe_storage_copy_bytes", connector="local") == 10 * len("onetwothree")
    assert total(found, "resolwe_storage_queue_jobs", queue="copy", state="queued") == 1
    assert total(found, "resolwe_storage_queue_oldest_job_age_seconds", queue="copy") > 0
    assert total(found, "resolwe_storage_lost_items") == 0
    assert total(found, "resolwe_storage_workers_alive") == 0
    # At info: a line per scan, none per renewal of the lease (every few seconds).
    lines = log.read_text().splitlines()
    assert sum(line.startswith("scan: ") for line in lines) >= 2
    assert [line for line in lines if not line.startswith("scan: ")] == [
        line for line in lines if "metrics and health on http://127.0.0.1:" in line
    ], lines
