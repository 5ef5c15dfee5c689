"""Benchmark ``resolwe-storage plan --json`` over a synthetic catalog of 1,000,000 items.

    .venv/bin/python benchmarks/bench_plan.py [--items N] [--backends sqlite,postgresql]
        [--repeat 3] [--seed 1] [--shuffle-keys] [--postgres-admin URL]

For each backend (a SQLite file under ``benchmarks/out/``, reused on reruns
when its item count matches, and a fresh PostgreSQL database created through
``--postgres-admin`` and dropped at the end) it generates the catalog with
``generate_catalog.py``, then runs the real command

    resolwe-storage --config benchmarks/config.yaml plan --now 2026-11-01T00:00:00Z --json

``--repeat`` times, each in a fresh child with ``$RESOLWE_STORAGE_DATABASE``
pointing at the catalog, and measures, while consuming the child's stdout
incrementally (counting rows and bytes, never holding the output):

- wall time, and items planned per second;
- the child's peak RSS: ``ru_maxrss`` from ``os.wait4`` on that one process,
  forked from a small wrapper so that none of this process's memory is
  counted (see ``benchmarks/measure.py``); the PostgreSQL server's memory is not
  included;
- due actions by kind, and bytes of JSON (and that the output is a complete
  JSON list, and the same on every backend and run);
- time to the first output row vs the total: whether the output streams or
  only comes out once the database has produced (sorted) everything;

against the targets (at most 10 s and 500 MB for 1,000,000 items; the table
shows the median run), and against two references measured in the same run
on the same database: the peer, the database's own client (``sqlite3`` or
``psql``) exporting every fact the plan looks at as CSV in key order, the
least any external planner would have to do (ratio: the peer's time over
ours; above 1.0 we are faster); and a floor, a plain ``SELECT COUNT(*)`` over
``storage_location`` joined to ``file_storage``: one pass over the rows with
no policy logic and no output. Exits non-zero if a plan run failed or
printed a malformed list. Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from measure import read_report, wrapped  # noqa: E402

from catalog.database import migrate, open_database  # noqa: E402

OUT = HERE / "out"
CONFIG = HERE / "config.yaml"
GENERATOR = HERE / "generate_catalog.py"
#: The evaluation time: the end of the synthetic catalog's three years.
NOW = "2026-11-01T00:00:00Z"
DEFAULT_ITEMS = 1_000_000
DEFAULT_SEED = 1
DEFAULT_POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
#: The issue's targets for 1,000,000 items.
TARGET_SECONDS = 10.0
TARGET_RSS_MB = 500.0
#: Bytes read from the child's stdout per read.
READ_BYTES = 1 << 20
FLOOR_SQL = (
    "SELECT COUNT(*) FROM storage_location l JOIN file_storage f ON f.id = l.file_storage_id"
)
#: What the peer tool (the database's own command-line client) exports: every
#: fact the plan looks at, in key order, as CSV. Reading the catalog out is
#: the least any external planner would have to do.
PEER_SQL = (
    "SELECT f.key, f.status, f.created, f.data_slug, f.process_type, l.connector_name,"
    " l.status, l.last_update, l.last_verified"
    " FROM file_storage f JOIN storage_location l ON l.file_storage_id = f.id"
    " ORDER BY f.key, f.id"
)
ACTIONS = ("copy", "delete", "verify")


@dataclass
class PlanRun:
    """What one run of ``plan --json`` did, as seen from outside the child."""

    wall: float = 0.0
    first_row: float | None = None
    last_row: float | None = None
    rows: int = 0
    bytes: int = 0
    by_action: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    peak_rss_mb: float = 0.0
    exit_code: int = 0
    well_formed: bool = False
    stderr: str = ""
    #: 1-minute load average just before the run: other work on the machine skews it.
    load: float = 0.0


@dataclass
class Result:
    """Figures for one backend."""

    backend: str
    items: int
    generation: float | None
    floor: float
    #: The peer's export time (``sqlite3`` / ``psql``), None when its client is missing.
    peer: float | None
    runs: list[PlanRun]

    @property
    def best(self) -> PlanRun:
        return min(self.runs, key=lambda run: run.wall)

    @property
    def median(self) -> PlanRun:
        """The run of median wall time (the upper one of an even count)."""
        return sorted(self.runs, key=lambda run: run.wall)[len(self.runs) // 2]

    @property
    def peak_rss_mb(self) -> float:
        return max(run.peak_rss_mb for run in self.runs)


# -- the plan, measured ------------------------------------------------------


def plan_command() -> list[str]:
    """The real command line: the installed console script beside this Python."""
    script = Path(sys.executable).parent / "resolwe-storage"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "resolwe_storage.cli"]
    return [*base, "--config", str(CONFIG), "plan", "--now", NOW, "--json"]


def run_plan(database_url: str) -> PlanRun:
    """Run ``plan --json`` once in its own child and measure it while it streams."""
    env = {**os.environ, "RESOLWE_STORAGE_DATABASE": database_url}
    env.pop("RESOLWE_STORAGE_CONFIG", None)
    run = PlanRun(load=os.getloadavg()[0])
    patterns = {action: f'"action": "{action}"'.encode() for action in ACTIONS}
    arrivals: list[float] = []  # monotonic time of the first and the last read with rows
    with tempfile.TemporaryFile() as errors, tempfile.NamedTemporaryFile("r") as measured:
        command = wrapped(plan_command(), measured.name)
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors)
        assert child.stdout is not None
        fd = child.stdout.fileno()
        head = end = b""
        tail = b""  # an incomplete last line, carried to the next read
        while chunk := os.read(fd, READ_BYTES):
            arrived = time.monotonic()
            run.bytes += len(chunk)
            head = head or chunk[:1]
            end = (end + chunk)[-2:]
            lines, cut, tail = (tail + chunk).rpartition(b"\n")
            complete = lines + cut
            rows = complete.count(b'{"action": ')
            if rows:
                arrivals[1:] = [arrived]
                run.rows += rows
                for action, pattern in patterns.items():
                    run.by_action[action] += complete.count(pattern)
        child.stdout.close()
        child.wait()
        errors.seek(0)
        run.stderr = errors.read().decode(errors="replace").strip()
        report = read_report(measured.read())
    if report is None:
        raise SystemExit(f"error: the plan could not be measured: {run.stderr}")
    began = report.began
    run.wall = report.seconds
    run.peak_rss_mb = report.peak_rss_mb
    run.exit_code = report.exit_code
    if arrivals:
        run.first_row, run.last_row = arrivals[0] - began, arrivals[-1] - began
    run.well_formed = head == b"[" and end == b"]\n" and not tail
    return run


# -- the peer floor ----------------------------------------------------------


def scan_floor(database_url: str, *, repeat: int = 2) -> tuple[float, int]:
    """Best time of ``FLOOR_SQL`` on the same database (and the count, as a check)."""
    database = open_database(database_url)
    database.connect()
    try:
        best = float("inf")
        count = 0
        for _ in range(repeat):
            began = time.perf_counter()
            count = database.execute_sql(FLOOR_SQL).fetchone()[0]
            best = min(best, time.perf_counter() - began)
        return best, count
    finally:
        database.close()


def peer_command(database_url: str) -> list[str] | None:
    """``sqlite3`` or ``psql`` exporting ``PEER_SQL`` as CSV; None if the client is missing."""
    if database_url.startswith("sqlite:///"):
        client = shutil.which("sqlite3")
        path = database_url.removeprefix("sqlite:///")
        return [client, "-readonly", "-csv", path, PEER_SQL] if client else None
    client = shutil.which("psql")
    copy = f"\\copy ({PEER_SQL}) TO STDOUT WITH (FORMAT csv)"
    return [client, "-X", "-q", database_url, "-c", copy] if client else None


def peer_export(database_url: str, *, repeat: int = 2) -> float | None:
    """Best wall time of the peer export into ``/dev/null``; None if it cannot run."""
    command = peer_command(database_url)
    if command is None:
        return None
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - began)
    return best


# -- catalogs ----------------------------------------------------------------


def count_items(database_url: str) -> int | None:
    """Items in the catalog at ``database_url``; None if it has no catalog."""
    database = open_database(database_url)
    try:
        database.connect()
        if not database.table_exists("file_storage"):
            return None
        return int(database.execute_sql("SELECT COUNT(*) FROM file_storage").fetchone()[0])
    finally:
        database.close()


def generate(database_url: str, *, items: int, seed: int, shuffle_keys: bool) -> float:
    """Run the generator in a child (its output shown indented); returns its wall time."""
    began = time.perf_counter()
    command = [sys.executable, str(GENERATOR), "--database", database_url]
    command += ["--items", str(items), "--seed", str(seed)]
    command += ["--shuffle-keys"] if shuffle_keys else []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:
            print(f"    {line.rstrip()}", flush=True)
    if child.returncode:
        raise SystemExit(f"error: the generator failed with exit code {child.returncode}")
    return time.perf_counter() - began


def sqlite_catalog(*, items: int, seed: int, shuffle_keys: bool) -> tuple[str, float | None]:
    """The SQLite catalog for ``items``, generated unless a matching one exists."""
    variant = "-shuffled" if shuffle_keys else ""
    path = OUT / f"bench-plan-{items}-seed{seed}{variant}.sqlite3"
    url = f"sqlite:///{path}"
    if path.exists():
        found = count_items(url)
        if found == items:
            print(f"  reusing {path.relative_to(ROOT)} ({found:,} items)")
            database = open_database(url)
            database.connect()
            applied = migrate(database)
            database.close()
            if applied:
                # Untimed: the plan would otherwise migrate on its first run.
                print(f"  applied newer migrations first: {', '.join(applied)}")
            return url, None
        print(f"  {path.relative_to(ROOT)} holds {found} items, not {items:,}: regenerating")
    for suffix in ("", "-wal", "-shm", ".migrate-lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(f"  generating {path.relative_to(ROOT)}")
    return url, generate(url, items=items, seed=seed, shuffle_keys=shuffle_keys)


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped on the way out."""
    name = f"resolwe_storage_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
        finally:
            with admin.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,),
                )
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            print(f"  dropped database {name}")
    finally:
        admin.close()


# -- reporting ---------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report_run(number: int, run: PlanRun, items: int, floor: float, peer: float | None) -> None:
    first = f"{run.first_row:.2f} s" if run.first_row is not None else "never"
    last = f"{run.last_row:.2f} s" if run.last_row is not None else "never"
    kinds = ", ".join(f"{run.by_action[a]:,} {a}" for a in ACTIONS)
    shape = "well-formed" if run.well_formed else "MALFORMED"
    print(
        f"  plan run {number}: exit {run.exit_code}, {shape} JSON list"
        f" (load average before: {run.load:.2f} on {os.cpu_count()} CPUs)"
    )
    print(f"    due actions        {run.rows:,} ({kinds}); {run.bytes / 1e6:.1f} MB of JSON")
    print(f"    wall               {run.wall:.2f} s   ({items / run.wall:,.0f} items/s)")
    print(f"    peak RSS (child)   {run.peak_rss_mb:.0f} MB")
    print(
        f"    first row at       {first}; last row at {last}; streamed over "
        f"{(run.last_row or 0) - (run.first_row or 0):.2f} s "
        f"({100 * (run.first_row or 0) / run.wall:.0f} % of the wall time before the first row)"
    )
    print(f"    vs scan floor      {run.wall / floor:.1f}x")
    if peer is not None:
        print(f"    vs peer export     the peer's time / ours: {peer / run.wall:.2f}")
    if run.exit_code:
        print(f"    stderr: {run.stderr}")


def summary(results: list[Result]) -> None:
    """The table of figures; times are the median run's (best in parentheses)."""
    print()
    runs = max(len(result.runs) for result in results)
    print(
        f"plan --json at {NOW}, median of {runs} run(s); "
        f"targets: <= {TARGET_SECONDS:.0f} s and <= {TARGET_RSS_MB:.0f} MB"
    )
    header = (
        f"{'backend':<11} {'items':>10} {'gen s':>7} {'due':>10} {'plan s (best)':>14} "
        f"{'items/s':>9} {'peak MB':>8} {'1st row s':>9} {'floor s':>8} {'peer s':>7}"
        f" {'peer/us':>8}"
        "  time   memory"
    )
    print(header)
    for result in results:
        run = result.median
        gen = f"{result.generation:.1f}" if result.generation is not None else "reused"
        first = f"{run.first_row:.2f}" if run.first_row is not None else "-"
        wall = f"{run.wall:.2f} ({result.best.wall:.2f})"
        peer = f"{result.peer:.2f}" if result.peer is not None else "-"
        ratio = f"{result.peer / run.wall:.2f}" if result.peer is not None else "-"
        print(
            f"{result.backend:<11} {result.items:>10,} {gen:>7} {run.rows:>10,} {wall:>14} "
            f"{result.items / run.wall:>9,.0f} {result.peak_rss_mb:>8.0f} {first:>9} "
            f"{result.floor:>8.2f} {peer:>7} {ratio:>8}  "
            f"{verdict(run.wall <= TARGET_SECONDS and run.exit_code == 0):<6} "
            f"{verdict(result.peak_rss_mb <= TARGET_RSS_MB)}"
        )
    plans = {(run.rows, tuple(run.by_action.values())) for r in results for run in r.runs}
    if len(results) > 1:
        same = "yes" if len(plans) == 1 else "NO"
        print(f"same due actions on every backend and run: {same}")


def measure(backend: str, url: str, *, items: int, generation: float | None, repeat: int) -> Result:
    floor, locations = scan_floor(url)
    print(f"  scan floor: {FLOOR_SQL}\n    {locations:,} rows counted in {floor:.2f} s")
    peer = peer_export(url)
    if peer is None:
        print("  peer export: no sqlite3 / psql client on this machine; skipped")
    else:
        print(
            f"  peer export ({'sqlite3' if 'sqlite' in url else 'psql'}): {PEER_SQL}\n"
            f"    as CSV in {peer:.2f} s"
        )
    runs = []
    for number in range(1, repeat + 1):
        run = run_plan(url)
        report_run(number, run, items, floor, peer)
        runs.append(run)
    return Result(backend, items, generation, floor, peer, runs)


def main(argv: list[str] | None = None) -> int:
    """Command line: generate (or reuse), measure, print, and clean up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--items", type=int, default=DEFAULT_ITEMS, help="items (default 1,000,000)"
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="generator seed (default 1)")
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument(
        "--postgres-admin",
        default=os.environ.get("RESOLWE_STORAGE_TEST_POSTGRES", DEFAULT_POSTGRES_ADMIN),
        metavar="URL",
        help="a PostgreSQL database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="plan runs per backend (default 3; median shown)"
    )
    parser.add_argument(
        "--shuffle-keys",
        action="store_true",
        help="generate keys in random order, so key order is not id (insertion) order",
    )
    args = parser.parse_args(argv)
    if args.items < 1 or args.repeat < 1:
        parser.error("--items and --repeat must be at least 1")
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = set(backends) - {"sqlite", "postgresql"}
    if unknown or not backends:
        parser.error(f"--backends: expected sqlite and/or postgresql, got {args.backends!r}")

    OUT.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for backend in backends:
        print(f"{backend}:", flush=True)
        if backend == "sqlite":
            url, generation = sqlite_catalog(
                items=args.items, seed=args.seed, shuffle_keys=args.shuffle_keys
            )
            results.append(
                measure(backend, url, items=args.items, generation=generation, repeat=args.repeat)
            )
            continue
        with postgres_database(args.postgres_admin) as url:
            print(f"  generating {url.rsplit('/', 1)[1]}")
            generation = generate(
                url, items=args.items, seed=args.seed, shuffle_keys=args.shuffle_keys
            )
            results.append(
                measure(backend, url, items=args.items, generation=generation, repeat=args.repeat)
            )
    summary(results)
    failed = any(run.exit_code or not run.well_formed for r in results for run in r.runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
