"""Benchmark the transfer engine against peer tools on the same data, in one run.

    .venv/bin/python benchmarks/bench_transfer.py [--only local,memory,s3] [--repeat 3]

Sections (all data under ``benchmarks/out/transfer/``, made once and reused):

- ``local``: 1 GiB (4 x 256 MiB) from one folder to another, with our engine
  (``benchmarks/copy_tree.py``: one ``copy_file`` per file on 4 threads, as
  the worker pool runs them; the kernel copies with ``copy_file_range``, as
  ``cp`` does, and each copy is proven by re-reading what landed against the
  catalog's crc32c) against ``cp -r``. Our default flushes every file to
  disk before calling it copied (``fsync``), which ``cp`` does not, so it is
  compared with ``cp -r && sync``; with ``fsync: false`` it is compared with
  plain ``cp -r``.
- ``memory``: peak RSS of our engine copying one 2 GiB file (target: under
  200 MB).
- ``s3``: against one ``moto_server`` on 127.0.0.1, (a) 4 x 256 MiB and
  (b) 2,000 x 16 KiB from local to S3 with our engine and with
  ``aws s3 cp --recursive``, ``s5cmd`` and ``rclone`` (those found on PATH or
  in ``benchmarks/out/peers/bin``); MB/s, files/s and our ratio to the best.

Each measurement runs in its own child process (wall time and peak RSS from
``os.wait4``, see ``benchmarks/measure.py``), ``--repeat`` rounds of every
tool, the order reversed every other round; medians are printed, and the
verdict is the median of each round's ratio (tools of one round ran seconds
apart, so the machine's drift between rounds cancels out of it). For S3,
moto_server is started afresh before every run (``Moto``). Before every
run the destination is emptied, the source read into the page cache
(rclone drops what it read from it, which would leave the next tool
reading from disk), dirty pages flushed and the machine left to go quiet
(``measure.warm``, ``measure.settle``). Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import (  # noqa: E402
    cpu_busy,
    process_cpu_seconds,
    read_report,
    settle,
    warm,
    wrapped,
)

OUT = HERE / "out" / "transfer"
COPY_TREE = HERE / "copy_tree.py"
MIB = 1024 * 1024
#: Files copied at once by our engine: the product runs one job per file on a
#: pool of worker threads, so files of one copy go in parallel.
DEFAULT_THREADS = 4
#: The issue's targets.
TARGET_LOCAL_RATIO = 0.9
TARGET_RSS_MB = 200.0


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    detail: str = ""
    #: The whole machine's busy CPU seconds over the run (``measure.cpu_busy``).
    cpu_seconds: float = 0.0
    #: The server's own CPU seconds over the run (S3: ``Moto.cpu_seconds``), if known.
    server_cpu_seconds: float | None = None

    @property
    def engine_seconds(self) -> float | None:
        """Our engine's own time (``copy_tree.py`` reports it), without interpreter start-up."""
        try:
            return float(json.loads(self.detail.splitlines()[-1])["seconds"])
        except (ValueError, KeyError, IndexError, TypeError):
            return None


def measure(
    command: list[str], *, env: dict[str, str] | None = None, source: Path | None = None
) -> Run:
    """Run ``command`` in a grandchild; its wall time and peak RSS. Exits on failure.

    ``source``: the data it reads, read into the page cache first (``warm``),
    as for every contender.
    """
    if source is not None:
        warm(source)
    settle()
    with tempfile.NamedTemporaryFile("r") as report:
        busy = cpu_busy()
        done = subprocess.run(
            wrapped(command, report.name),
            capture_output=True,
            env=env or os.environ.copy(),
            check=False,
        )
        busy = cpu_busy() - busy
        measured = read_report(report.read())
    if measured is None or measured.exit_code != 0 or done.returncode:
        detail = done.stderr.decode(errors="replace").strip()
        code = measured.exit_code if measured else done.returncode
        raise SystemExit(f"error: {' '.join(command[:3])} ... failed ({code}): {detail}")
    return Run(measured.seconds, measured.peak_rss_mb, done.stdout.decode().strip(), busy)


def data_set(name: str, count: int, size: int) -> Path:
    """``count`` files of ``size`` random bytes in ``OUT/name``, made once and reused.

    Completion is remembered beside the folder, so the folder holds only the data.
    """
    folder = OUT / name
    done = OUT / f".{name}.complete"
    if done.exists():
        return folder
    print(f"  making {name}: {count} x {size // 1024} KiB", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for number in range(count):
        with open(folder / f"f{number:05d}", "wb") as out:
            left = size
            while left:
                piece = min(left, 64 * MIB)
                out.write(os.urandom(piece))
                left -= piece
    done.write_text("")
    return folder


def median_of(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda run: run.seconds)
    return ordered[len(ordered) // 2]


def compare(
    title: str,
    contenders: dict[str, Callable[[], Run]],
    *,
    repeat: int,
    data_bytes: int,
    files: int,
) -> tuple[dict[str, Run], dict[str, list[Run]]]:
    """Run every contender ``repeat`` times; print the medians; the medians and every run.

    The order is reversed every other round, so no contender always runs
    first (or last) on a machine whose speed drifts.
    """
    runs: dict[str, list[Run]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_number in range(repeat):
        for name in names if round_number % 2 == 0 else reversed(names):
            runs[name].append(contenders[name]())
    medians = {name: median_of(found) for name, found in runs.items()}
    # The server's share of each run: a server busy for (nearly) the whole of
    # every contender's run sets the pace, whoever the client is.
    served = any(run.server_cpu_seconds is not None for run in medians.values())
    print(f"\n{title}")
    print(
        f"  {'tool':<34} {'seconds':>8} {'MB/s':>8} {'files/s':>9} {'peak MB':>8} "
        f"{'in-process s':>13}{'  server CPU/wall' if served else ''}  every run"
    )
    for name, run in medians.items():
        engine = run.engine_seconds
        server = run.server_cpu_seconds
        load = "" if server is None else f"{server:.2f} s, {server / run.seconds:.2f}"
        print(
            f"  {name:<34} {run.seconds:>8.2f} {data_bytes / MIB / run.seconds:>8.0f} "
            f"{files / run.seconds:>9.0f} {run.peak_rss_mb:>8.0f} "
            f"{'' if engine is None else f'{engine:.2f}':>13}"
            f"{f'  {load:>16}' if served else ''}  "
            + ", ".join(f"{each.seconds:.2f}" for each in runs[name])
        )
    return medians, runs


def paired_ratio(theirs: list[float], ours: list[float]) -> tuple[float, list[float]]:
    """The median of each round's ratio (their time / ours), and the ratios.

    Both ran in the same round, seconds apart: the machine's drift from one
    round to the next (a noisy neighbour, a server's heap growing) cancels
    out of each round's ratio, where it would not out of two medians.
    """
    ratios = [peer / mine for peer, mine in zip(theirs, ours, strict=True)]
    return statistics.median(ratios), ratios


def seconds_of(runs: list[Run]) -> list[float]:
    return [run.seconds for run in runs]


def ours(source: Path, destination: str, *extra: str) -> list[str]:
    """Our engine over ``source``, proven against hashes computed once, untimed."""
    expected = source.parent / f".{source.name}.expected.json"
    if not expected.exists():
        subprocess.run(
            [sys.executable, str(COPY_TREE), str(source), "-", "--write-expected", str(expected)],
            check=True,
        )
    command = [sys.executable, str(COPY_TREE), str(source), destination]
    return [*command, "--expected", str(expected), "--threads", str(DEFAULT_THREADS), *extra]


def local_section(repeat: int) -> list[tuple[str, float, float]]:
    source = data_set("local-1gib", 4, 256 * MIB)
    target = OUT / "local-dest"

    def fresh(command: list[str]) -> Callable[[], Run]:
        def run() -> Run:
            shutil.rmtree(target, ignore_errors=True)
            return measure(command, source=source)

        return run

    medians, runs = compare(
        "local -> local, 1 GiB (4 x 256 MiB)",
        {
            "ours, fsync (default)": fresh(ours(source, str(target))),
            "cp -r && sync": fresh(["sh", "-c", f"cp -r '{source}' '{target}' && sync"]),
            "ours, fsync: false": fresh(ours(source, str(target), "--no-fsync")),
            "cp -r": fresh(["cp", "-r", str(source), str(target)]),
        },
        repeat=repeat,
        data_bytes=4 * 256 * MIB,
        files=4,
    )
    shutil.rmtree(target, ignore_errors=True)
    durable, _ = paired_ratio(
        seconds_of(runs["cp -r && sync"]), seconds_of(runs["ours, fsync (default)"])
    )
    fast, _ = paired_ratio(seconds_of(runs["cp -r"]), seconds_of(runs["ours, fsync: false"]))
    print(
        f"  ratio (peer time / ours, the median of the rounds'), durable: {durable:.2f}; "
        f"without fsync: {fast:.2f}"
    )
    # A worker is a long-running process: it pays Python's start-up (about
    # 0.1 s) once, not per copy, so the engine's own time is shown as well.
    engine = medians["ours, fsync: false"].engine_seconds
    if engine:
        print(
            f"  without fsync, ours in-process (no interpreter start-up): {engine:.2f} s, "
            f"ratio {medians['cp -r'].seconds / engine:.2f}"
        )
    return [
        ("local 1 GiB vs cp -r && sync (both durable)", durable, TARGET_LOCAL_RATIO),
        ("local 1 GiB, fsync off, vs cp -r", fast, TARGET_LOCAL_RATIO),
    ]


def memory_section() -> list[tuple[str, float, float]]:
    source = data_set("one-2gib", 1, 2048 * MIB)
    target = OUT / "memory-dest"
    shutil.rmtree(target, ignore_errors=True)
    run = measure(ours(source, str(target), "--no-fsync"))
    shutil.rmtree(target, ignore_errors=True)
    print(f"\nmemory: one 2 GiB file local -> local: peak RSS {run.peak_rss_mb:.0f} MB")
    return [("peak MB copying 2 GiB (at most)", run.peak_rss_mb, TARGET_RSS_MB)]


# -- S3 ---------------------------------------------------------------------

ACCESS_KEY = "bench"
SECRET_KEY = "bench-secret"
PEERS = HERE / "out" / "peers" / "bin"


def find_tool(name: str) -> str | None:
    """A peer tool on PATH or in ``benchmarks/out/peers/bin``."""
    local = PEERS / name
    return str(local) if local.exists() else shutil.which(name)


class Moto:
    """One ``moto_server`` on 127.0.0.1, started afresh on the same port for every run.

    moto keeps every object in its Python heap, and a reset empties the
    buckets but not the heap: a server that has taken a few runs answers more
    slowly than a new one, which would favour whoever runs first. Restarting
    it before each run (untimed) gives every contender the same server.
    """

    def __init__(self, folder: Path = OUT) -> None:
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = folder / "moto_server.log"
        self._server: subprocess.Popen[bytes] | None = None
        self.restart()

    def restart(self) -> None:
        import urllib.request

        self.stop()
        with open(self._log, "ab") as log:
            self._server = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "moto_server"),
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                ],
                stdout=log,
                stderr=log,
            )
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise SystemExit("error: moto_server did not start")

    def cpu_seconds(self) -> float:
        """The running server's user and system CPU seconds so far (Linux ``/proc``)."""
        assert self._server is not None
        return process_cpu_seconds(self._server.pid)

    def stop(self) -> None:
        if self._server is not None:
            self._server.terminate()
            self._server.wait(timeout=30)
            self._server = None


def moto_access(endpoint: str, folder: Path) -> tuple[Any, Path, dict[str, str]]:
    """A boto3 client of the server, a credentials file for us, and the peers' environment."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    credentials = folder / "bench-credentials.json"
    credentials.write_text(json.dumps({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY}))
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "BENCH_S3_ENDPOINT": endpoint,
        "BENCH_S3_CREDENTIALS": str(credentials),
    }
    # A CA bundle set for the machine's HTTPS proxy means nothing to a plain
    # HTTP endpoint, and rclone refuses to start with one.
    env.pop("AWS_CA_BUNDLE", None)
    return client, credentials, env


def s3_section(repeat: int) -> list[tuple[str, float, float]]:
    server = Moto()
    endpoint = server.endpoint
    client, _, env = moto_access(endpoint, OUT)
    counter = iter(range(1_000_000))
    #: The server's CPU seconds when the current run's bucket was ready.
    ready = [0.0]

    def bucket() -> str:
        server.restart()
        name = f"bench-{next(counter)}"
        client.create_bucket(Bucket=name)
        ready[0] = server.cpu_seconds()
        return name

    def served(run: Callable[[], Run]) -> Callable[[], Run]:
        """``run``, noting the server's CPU over it (each run makes its bucket first)."""

        def measured() -> Run:
            done = run()
            done.server_cpu_seconds = server.cpu_seconds() - ready[0]
            return done

        return measured

    def contenders(source: Path, threads: tuple[int, ...]) -> dict[str, Callable[[], Run]]:
        found: dict[str, Callable[[], Run]] = {}

        def ours_run(count: int) -> Callable[[], Run]:
            def run() -> Run:
                command = ours(source, f"s3://{bucket()}")
                command[command.index("--threads") + 1] = str(count)
                return measure(command, env=env, source=source)

            return run

        for count in threads:
            found[f"ours, {count} file(s) at a time"] = ours_run(count)
        aws = find_tool("aws")
        if aws:
            found["aws s3 cp --recursive"] = lambda: measure(
                [
                    aws,
                    "s3",
                    "cp",
                    "--recursive",
                    "--quiet",
                    "--endpoint-url",
                    endpoint,
                    str(source),
                    f"s3://{bucket()}/",
                ],
                env=env,
                source=source,
            )
        s5cmd = find_tool("s5cmd")
        if s5cmd:
            found["s5cmd cp"] = lambda: measure(
                [s5cmd, "--endpoint-url", endpoint, "cp", f"{source}/*", f"s3://{bucket()}/"],
                env=env,
                source=source,
            )
        rclone = find_tool("rclone")
        if rclone:
            remote = (
                f":s3,provider=Other,endpoint='{endpoint}',access_key_id={ACCESS_KEY},"
                f"secret_access_key={SECRET_KEY}"
            )
            found["rclone copy"] = lambda: measure(
                [
                    rclone,
                    "copy",
                    "--transfers",
                    str(max(threads)),
                    str(source),
                    f"{remote}:{bucket()}",
                ],
                env=env,
                source=source,
            )
        return found

    verdicts = []
    try:
        for title, source, files, size, threads in (
            # Each large file is already 4 parts in flight: moto_server (Python,
            # sharing the 2 cores) does best with one file at a time, so both
            # are shown; the verdict takes our best, the peers run as shipped.
            (
                "local -> S3, 4 x 256 MiB",
                data_set("local-1gib", 4, 256 * MIB),
                4,
                256 * MIB,
                (1, 4),
            ),
            (
                "local -> S3, 2,000 x 16 KiB",
                data_set("small-2000", 2000, 16 * 1024),
                2000,
                16384,
                (16,),
            ),
        ):
            tools = {name: served(run) for name, run in contenders(source, threads).items()}
            medians, runs = compare(
                f"{title} (moto_server at {endpoint})",
                tools,
                repeat=repeat,
                data_bytes=files * size,
                files=files,
            )
            mine = [name for name in runs if name.startswith("ours")]
            # Each round's best of ours against the peer whose median is best.
            rounds = zip(*(seconds_of(runs[name]) for name in mine), strict=True)
            ours_each = [min(times) for times in rounds]
            peers = {name: run for name, run in medians.items() if name not in mine}
            if peers:
                best_name = min(peers, key=lambda name: peers[name].seconds)
                ratio, each = paired_ratio(seconds_of(runs[best_name]), ours_each)
                print(
                    f"  ratio (best peer's time / ours, the median of the rounds'): {ratio:.2f} "
                    f"against {best_name}; rounds: {', '.join(f'{r:.2f}' for r in each)}"
                )
                verdicts.append((f"{title} vs best peer", ratio, 1.0))
    finally:
        server.stop()
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="local,memory,s3")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sections = set(args.only.split(","))
    OUT.mkdir(parents=True, exist_ok=True)
    verdicts: list[tuple[str, float, float]] = []
    if "local" in sections:
        verdicts += local_section(args.repeat)
    if "memory" in sections:
        verdicts += memory_section()
    if "s3" in sections:
        verdicts += s3_section(args.repeat)
    print("\nsummary")
    for what, value, target in verdicts:
        at_most = "at most" in what
        ok = value <= target if at_most else value >= target
        print(f"  {what:<48} {value:>8.2f}  target {target:>6.2f}  {'PASS' if ok else 'FAIL'}")
    print(json.dumps({what: round(value, 3) for what, value, _ in verdicts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
