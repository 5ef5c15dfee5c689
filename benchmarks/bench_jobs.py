"""Benchmark distributed execution: enqueue, scan, and copies end to end through workers.

    .venv/bin/python benchmarks/bench_jobs.py [--only enqueue,scan,e2e] [--repeat 3]

Sections (data under ``benchmarks/out/jobs/``; a private ``redis-server`` on
a free loopback port; PostgreSQL from ``$BENCH_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, in a database of our own):

- ``enqueue``: 100,000 ``copy_file`` messages built and queued with
  ``workers.broker.enqueue_many`` (pipelined batches); jobs/s
  (target: at least 20,000).
- ``scan``: a catalog of 20,000 items x 5 files, every item due for a copy
  (100,000 due files): one ``scan`` (plan, reserve the locations, queue a
  job per file) on SQLite and on PostgreSQL; seconds.
- ``e2e``: 2,000 x 16 KiB files (200 items of 10 files) on a local
  connector, copied by policy through the scan, Redis and a worker pool of
  2 processes x 8 threads (``resolwe-storage worker --processes 2
  --threads 8``, PostgreSQL catalog): to another local folder against
  ``rclone copy --checksum --transfers 16`` (our default flushes every file
  to disk before recording it, so it is compared with ``rclone ... &&
  sync``; with ``fsync: false``, with plain rclone), and to S3 (one
  ``moto_server``) against ``s5cmd cp``. The workers are started, and
  connected, before the clock starts (a worker pool is long-running), and
  one untimed round of both warms them up; the
  clock runs from the scan until the catalog says every copy is ``OK``.
  Peers are timed from their start to their exit. Target: at least 1.0x
  the peer in each.

Every run starts from the same catalog (only the source locations), an
empty destination (the last one is moved aside, and deleted at the end: ext4
makes new files slowly for minutes after many deletions), the source in the
page cache and a quiet machine (``measure.warm``, ``measure.settle``: rclone
drops what it read from the cache, which made the run after it read from
disk), and is checked afterwards: 2,000 objects landed, the catalog records
2,000 validated files. moto_server is started afresh (on the same port)
before every S3 run: it keeps objects in its heap, and one that has taken a
few runs answers more slowly. Ours and the peer take turns going first, and
the verdict is the median of each round's ratio (the two ran seconds apart,
so the machine's drift between rounds cancels out of it); every run is
printed. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import peewee as pw

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_transfer import (  # noqa: E402
    Moto,
    Run,
    find_tool,
    measure,
    median_of,
    moto_access,
    paired_ratio,
    seconds_of,
)
from measure import cpu_busy, settle, warm  # noqa: E402
from measure import postgres_database as fresh_database  # noqa: E402

from resolwe_storage.config import Config, build_config  # noqa: E402

OUT = HERE / "out" / "jobs"
DATABASE_NAME = "resolwe_storage_bench_jobs"
#: The issue's targets.
TARGET_ENQUEUE_PER_SECOND = 20_000
TARGET_RATIO = 1.0
#: The end-to-end data: items x files per item, of FILE_SIZE bytes each.
E2E_ITEMS = 200
E2E_FILES_PER_ITEM = 10
FILE_SIZE = 16 * 1024
#: The worker pool: processes x threads.
PROCESSES = 2
THREADS = 8
#: The scan benchmark's catalog: items x files per item.
SCAN_ITEMS = 20_000
SCAN_FILES_PER_ITEM = 5


# -- servers ---------------------------------------------------------------------


@contextmanager
def private_redis() -> Iterator[str]:
    """A ``redis-server`` of our own, without persistence; its URL."""
    import socket

    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("error: redis-server is not on PATH")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise SystemExit("error: redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def postgres_database() -> str:
    """A fresh database of our own on the PostgreSQL server; its URL."""
    return fresh_database(DATABASE_NAME)


# -- the catalog -----------------------------------------------------------------


def settings_for(
    database: str, broker: str, *, source: Path, target: dict[str, Any]
) -> dict[str, Any]:
    """Configuration: ``source`` as local connector ``src``, ``target`` as ``dst`` (copy now)."""
    target = {**target, "config": {**target["config"], "priority": 10, "copy": {"delay": 0}}}
    return {
        "database": database,
        "broker": broker,
        "connectors": {
            "src": {"connector": "local", "config": {"priority": 0, "path": str(source)}},
            "dst": target,
        },
    }


def load_config(settings: dict[str, Any]) -> Config:
    # The environment's database and broker would win over the file's: not here.
    return build_config(settings, source="benchmark", environ={})


def catalog_document(
    items: int, files: int, *, hashes: Callable[[int, int], dict[str, object]]
) -> dict[str, object]:
    """Import document: ``items`` items on ``src`` (url ``iNNNNN``), ``files`` files each."""
    created = "2026-01-01T00:00:00Z"
    return {
        "items": [
            {
                "key": f"item-{item}",
                "data_slug": "bench",
                "process_type": "data:bench:",
                "status": "OK",
                "created": created,
                "locations": [{"connector": "src", "url": f"i{item:05d}", "status": "OK"}],
                "files": [
                    {"path": f"f{number:03d}", **hashes(item, number)} for number in range(files)
                ],
            }
            for item in range(items)
        ]
    }


def open_catalog(url: str) -> pw.Database:
    from catalog.database import bind, migrate, open_database

    database = open_database(url)
    bind(database)
    migrate(database)
    return database


def load_catalog(database: pw.Database, document: dict[str, object]) -> None:
    from catalog.streaming import import_document

    import_document(document, connectors={"src", "dst"}, database=database, actor="bench")


def reset_copies(database: pw.Database) -> None:
    """Back to the source locations only: no copies, no history, no locks."""
    from catalog.models import AccessLog, Action, LocationFile, StorageLocation

    with database.atomic():
        LocationFile.delete().execute()
        AccessLog.delete().execute()
        Action.delete().execute()
        StorageLocation.delete().where(StorageLocation.connector_name != "src").execute()
    if isinstance(database, pw.PostgresqlDatabase):
        # The rows deleted stay as dead tuples until autovacuum comes, when it
        # likes. Vacuumed now, untimed, every run's scan meets the same
        # tables. (It did not end the occasional 0.07-0.09 s scan, against
        # 0.02 s usually; that cause is not known.)
        for model in (LocationFile, AccessLog, Action, StorageLocation):
            database.execute_sql(f"VACUUM ANALYZE {model._meta.table_name}")


# -- enqueue ---------------------------------------------------------------------


def enqueue_section(redis_url: str, repeat: int) -> list[tuple[str, float, float]]:
    import redis

    from workers.actors import declare_actors
    from workers.broker import enqueue_many, make_broker
    from workers.messages import ACTOR_COPY, QUEUE_COPY, message, time_limit_ms

    count = 100_000
    broker = make_broker(redis_url)
    declare_actors(broker)
    client = redis.Redis.from_url(redis_url)
    rates = []
    for _ in range(repeat):
        client.flushdb()
        began = time.perf_counter()
        messages = (
            message(
                QUEUE_COPY,
                ACTOR_COPY,
                number // 5,
                "dst",
                f"f{number % 5:03d}",
                time_limit=time_limit_ms(FILE_SIZE),
            )
            for number in range(count)
        )
        queued = enqueue_many(broker, messages)
        seconds = time.perf_counter() - began
        assert queued == count and client.llen(f"dramatiq:{QUEUE_COPY}") == count
        rates.append(count / seconds)
    client.flushdb()
    client.close()
    broker.close()
    rate = sorted(rates)[len(rates) // 2]
    print(
        f"\nenqueue: {count:,} copy jobs built and queued onto Redis: {rate:,.0f} jobs/s (median)"
    )
    return [("enqueue jobs/s", rate, TARGET_ENQUEUE_PER_SECOND)]


# -- scan ------------------------------------------------------------------------


def scan_section(redis_url: str, repeat: int) -> list[tuple[str, float, float]]:
    import redis

    from catalog.models import utcnow
    from scheduler.scan import scan
    from workers.broker import make_broker

    fake = {"size": FILE_SIZE, "crc32c": "00000000"}
    document = catalog_document(SCAN_ITEMS, SCAN_FILES_PER_ITEM, hashes=lambda item, n: fake)
    client = redis.Redis.from_url(redis_url)
    rows = []
    for name, url in (
        ("SQLite", f"sqlite:///{OUT / 'scan.sqlite3'}"),
        ("PostgreSQL", postgres_database()),
    ):
        if name == "SQLite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{OUT / 'scan.sqlite3'}{suffix}").unlink(missing_ok=True)
        database = open_catalog(url)
        print(
            f"  loading {SCAN_ITEMS:,} items x {SCAN_FILES_PER_ITEM} files into {name}", flush=True
        )
        load_catalog(database, document)
        target = {"connector": "local", "config": {"path": str(OUT / "unused")}}
        config = load_config(settings_for(url, redis_url, source=OUT, target=target))
        broker = make_broker(redis_url)
        runs = []
        for _ in range(repeat):
            reset_copies(database)
            client.flushdb()
            report = scan(config.policies, database, broker, now=utcnow() + timedelta(days=1))
            assert report.copies == SCAN_ITEMS, report
            runs.append(report)
        broker.close()
        database.close()
        report = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
        rows.append((name, report))
    client.flushdb()
    client.close()
    files = SCAN_ITEMS * SCAN_FILES_PER_ITEM
    print(
        f"\nscan: {SCAN_ITEMS:,} items x {SCAN_FILES_PER_ITEM} files due ({files:,} files), median"
    )
    print(f"  {'catalog':<12} {'plan s':>8} {'scan s':>8} {'files/s':>9} {'jobs':>7}")
    for name, report in rows:
        print(
            f"  {name:<12} {report.plan_seconds:>8.2f} {report.seconds:>8.2f} "
            f"{files / report.seconds:>9,.0f} {report.jobs:>7,}"
        )
    return []


# -- end to end ------------------------------------------------------------------


def source_tree() -> Path:
    """E2E_ITEMS folders of E2E_FILES_PER_ITEM random files, made once and reused."""
    folder = OUT / "src"
    done = OUT / ".src.complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        for item in range(E2E_ITEMS):
            (folder / f"i{item:05d}").mkdir(parents=True)
            for number in range(E2E_FILES_PER_ITEM):
                (folder / f"i{item:05d}" / f"f{number:03d}").write_bytes(os.urandom(FILE_SIZE))
        done.write_text("")
    return folder


def file_hashes(source: Path) -> Callable[[int, int], dict[str, object]]:
    from connectors.hashing import hash_stream

    def hashes(item: int, number: int) -> dict[str, object]:
        with open(source / f"i{item:05d}" / f"f{number:03d}", "rb") as stream:
            found = hash_stream(stream)
        return {
            "size": found.size,
            "md5": found.md5,
            "crc32c": found.crc32c,
            "awss3etag": found.awss3etag,
            "chunk_size": found.chunk_size,
        }

    return hashes


class Pool:
    """``resolwe-storage worker --processes 2 --threads 8`` with its own configuration."""

    def __init__(self, config: dict[str, object], env: dict[str, str]) -> None:
        path = OUT / "workers.json"
        path.write_text(json.dumps(config))
        log = OUT / "workers.log"
        self.started = log.read_text(errors="replace").count("worker: ") if log.exists() else 0
        self.log = open(OUT / "workers.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "resolwe_storage",
                "--config",
                str(path),
                "worker",
                "--processes",
                str(PROCESSES),
                "--threads",
                str(THREADS),
                "--queues",
                "copy",
            ],
            env=env,
            stdout=self.log,
            stderr=self.log,
            cwd=ROOT,
        )

    def wait_ready(self) -> None:
        """Until every process says it runs, and a moment for its consumer to connect."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.check()
            text = (OUT / "workers.log").read_text(errors="replace")
            if text.count("worker: ") - self.started >= PROCESSES:
                time.sleep(1)  # their consumers connect and wait for messages
                return
            time.sleep(0.1)
        raise SystemExit("error: the workers did not start (see benchmarks/out/jobs/workers.log)")

    def check(self) -> None:
        if self.process.poll() is not None:
            raise SystemExit("error: the workers stopped (see benchmarks/out/jobs/workers.log)")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def e2e_section(
    redis_url: str, repeat: int, *, targets: set[str]
) -> list[tuple[str, float, float]]:

    from catalog.models import STATUS_DONE, LocationFile, utcnow
    from scheduler.scan import scan
    from workers.broker import make_broker

    source = source_tree()
    destination = OUT / "dst"
    files = E2E_ITEMS * E2E_FILES_PER_ITEM
    url = postgres_database()
    database = open_catalog(url)
    print(f"  hashing {files:,} files into the catalog", flush=True)
    document = catalog_document(E2E_ITEMS, E2E_FILES_PER_ITEM, hashes=file_hashes(source))
    load_catalog(database, document)
    moto = Moto(OUT)
    endpoint = moto.endpoint
    s3, credentials, env = moto_access(endpoint, OUT)
    bucket = "bench-jobs"

    def empty_bucket() -> None:
        # A new server (on the same port) for every run, see ``Moto``.
        moto.restart()
        s3.create_bucket(Bucket=bucket)

    def s3_objects() -> int:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(page.get("KeyCount", 0) for page in pages)

    def local_files() -> int:
        return sum(len(names) for _, _, names in os.walk(destination))

    trash = OUT / "trash"
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()
    moved = iter(range(1_000_000))

    def empty_folder() -> None:
        # Moved aside, deleted at the end: for minutes after many files are
        # deleted, ext4 skips their inodes when it makes new ones, which
        # would slow down whichever copy runs next (recently_deleted()).
        if destination.exists():
            destination.rename(trash / str(next(moved)))

    rclone = [
        find_tool("rclone") or "rclone",
        "copy",
        "--checksum",
        "--transfers",
        "16",
        str(source),
        str(destination),
    ]
    cases = (
        (
            "local -> local (fsync, the default)",
            {"connector": "local", "config": {"path": str(destination)}},
            "rclone copy --checksum --transfers 16 && sync",
            ["sh", "-c", " ".join(rclone) + " && sync"],
            empty_folder,
            local_files,
        ),
        (
            "local -> local, fsync: false",
            {"connector": "local", "config": {"path": str(destination), "fsync": False}},
            "rclone copy --checksum --transfers 16",
            rclone,
            empty_folder,
            local_files,
        ),
        (
            "local -> S3",
            {
                "connector": "s3",
                "config": {
                    "bucket": bucket,
                    "endpoint_url": endpoint,
                    "region_name": "us-east-1",
                    "credentials": str(credentials),
                },
            },
            "s5cmd cp",
            [
                find_tool("s5cmd") or "s5cmd",
                "--endpoint-url",
                endpoint,
                "cp",
                f"{source}/*",
                f"s3://{bucket}/",
            ],
            empty_bucket,
            s3_objects,
        ),
    )
    verdicts = []
    try:
        for title, target, peer_name, peer, empty, landed in cases:
            if target["connector"] not in targets:
                continue
            settings = settings_for(url, redis_url, source=source, target=target)
            config = load_config(settings)
            empty()
            pool = Pool(settings, env)
            broker = make_broker(redis_url)
            ours: list[Run] = []
            theirs: list[Run] = []
            try:
                pool.wait_ready()
                # Who goes first alternates, so neither always meets the
                # machine as the other left it. Round 0 is a warm-up, untimed:
                # a worker's first jobs open its threads' database
                # connections and import what copies need, which a
                # long-running pool has done long before (measured here: the
                # first run took 0.5 s where the next ones took 0.3 s).
                for round_number in range(repeat + 1):
                    if round_number == 1:
                        del ours[:], theirs[:]
                    for who in ("peer", "ours") if round_number % 2 else ("ours", "peer"):
                        empty()
                        if who == "peer":
                            theirs.append(measure(peer, env=env, source=source))
                            if landed() != files:
                                raise SystemExit(
                                    f"error: {peer_name}: {landed()} of {files} files landed"
                                )
                            continue
                        reset_copies(database)
                        warm(source)
                        settle()
                        busy = cpu_busy()
                        began = time.perf_counter()
                        report = scan(config.policies, database, broker, now=utcnow())
                        scanned = time.perf_counter() - began
                        # Written out: peewee would build the query anew 100
                        # times a second, on the cores the workers need.
                        done = (
                            "SELECT COUNT(*) FROM storage_location"
                            f" WHERE connector_name = 'dst' AND status = '{STATUS_DONE}'"
                        )
                        while database.execute_sql(done).fetchone()[0] < E2E_ITEMS:
                            pool.check()
                            time.sleep(0.01)
                        seconds = time.perf_counter() - began
                        busy = cpu_busy() - busy
                        if report.copies != E2E_ITEMS or LocationFile.select().count() != files:
                            raise SystemExit(
                                f"error: {title}: {report} left the catalog incomplete"
                            )
                        if landed() != files:
                            raise SystemExit(f"error: {title}: {landed()} of {files} files landed")
                        ours.append(Run(seconds, 0.0, f"scan {scanned:.2f} s", busy))
            finally:
                broker.close()
                pool.stop()
            mine, best = median_of(ours), median_of(theirs)
            print(f"\n{title}, {files:,} x {FILE_SIZE // 1024} KiB ({E2E_ITEMS} items), median")
            print(f"  {'who':<44} {'seconds':>8} {'files/s':>9}  every run")
            name = f"ours: scan + Redis + {PROCESSES} x {THREADS} workers"
            for who, median, runs in ((name, mine, ours), (peer_name, best, theirs)):
                every = ", ".join(
                    f"{run.seconds:.2f}"
                    + (f" ({run.detail}, " if runs is ours else " (")
                    + f"cpu {run.cpu_seconds:.2f} s)"
                    for run in runs
                )
                print(
                    f"  {who:<44} {median.seconds:>8.2f} {files / median.seconds:>9,.0f}  {every}"
                )
            ratio, each = paired_ratio(seconds_of(theirs), seconds_of(ours))
            print(
                f"  ratio (peer's time / ours, the median of the rounds'): {ratio:.2f}; "
                f"rounds: {', '.join(f'{r:.2f}' for r in each)}"
            )
            verdicts.append((f"{title} 2,000 x 16 KiB vs {peer_name}", ratio, TARGET_RATIO))
    finally:
        moto.stop()
        database.close()
        shutil.rmtree(trash, ignore_errors=True)
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="enqueue,scan,e2e")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--targets", default="local,s3", help="e2e: copy to these (local, s3)")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    verdicts: list[tuple[str, float, float]] = []
    with private_redis() as redis_url:
        if "enqueue" in sections:
            verdicts += enqueue_section(redis_url, args.repeat)
        if "scan" in sections:
            verdicts += scan_section(redis_url, args.repeat)
        if "e2e" in sections:
            verdicts += e2e_section(redis_url, args.repeat, targets=set(args.targets.split(",")))
    print("\nsummary")
    failed = False
    for what, value, target in verdicts:
        ok = value >= target
        failed |= not ok
        print(f"  {what}: {value:,.2f} (target {target:,.2f}): {'PASS' if ok else 'FAIL'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
