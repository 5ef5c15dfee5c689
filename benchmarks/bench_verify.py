"""Verification of one item of many files: ``resolwe-storage run --once`` as a whole process.

    .venv/bin/python benchmarks/bench_verify.py [--rounds 3] [--files 50000] [--code DIR]

One item of ``--files`` x 1 KiB files on a local connector with a
``verify: {interval: 1}`` rule, in a SQLite catalog as ``import`` left it
(never verified). Each round times two verifications, as a scheduler would
make them a day apart:

- the first: no file has a row yet (the import asserted them);
- the next: every file has one, all moved two days back first, so that
  the location is due again and each job moves its least recently
  verified time on.

Each is ``run --once`` on the embedded default (its defaults: two worker
processes, jobs of up to 1,000 files), checked afterwards: the location
``OK``, every file verified. The peer is ``md5sum -c`` of the same files
against a list of their sums (coreutils: one process re-reading and
hashing each file), run in the same round; the ratio is peer / ours, the
median of the rounds'.

``--options`` adds options to ``run --once``: ``--processes 1`` makes
jobs of 128 files, as a worker pool takes them. ``--code DIR`` runs
another checkout's code (``PYTHONPATH``) on the same data, to compare
with the code before a change.

The files are ``bench_once.py``'s ``wide`` case (made once, kept under
``benchmarks/out/once/wide``). Not part of the test run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_once import prepare  # noqa: E402
from bench_transfer import Run, measure  # noqa: E402
from measure import compile_packages  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "verify"
#: Moves every verification time two days back: the location is due again.
AGE = (
    "UPDATE location_file SET verified = strftime('%Y-%m-%d %H:%M:%f', verified, '-2 days');"
    " UPDATE storage_location SET last_verified ="
    " strftime('%Y-%m-%d %H:%M:%f', last_verified, '-2 days')"
)


def state(catalog: Path) -> tuple[str, int, int]:
    """The location's status, its files' rows, and how many distinct times they hold."""
    with contextlib.closing(sqlite3.connect(catalog)) as db:
        (status,) = db.execute("SELECT status FROM storage_location").fetchone()
        rows, times = db.execute(
            "SELECT count(*), count(DISTINCT verified) FROM location_file"
        ).fetchone()
    return str(status), int(rows), int(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--code", type=Path, help="another checkout's code to run")
    parser.add_argument(
        "--options", default="", help="more options of run --once (e.g. '--processes 1')"
    )
    args = parser.parse_args()
    code = (args.code or ROOT).resolve()
    compile_packages(code)
    source, _, _, template = prepare("wide", 1, args.files, 1024)
    OUT.mkdir(parents=True, exist_ok=True)
    catalog, config, sums = OUT / "catalog.sqlite3", OUT / "config.json", OUT / "sums.md5"
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{catalog}",
                "connectors": {
                    "local": {
                        "connector": "local",
                        "config": {"path": str(source), "verify": {"interval": 1}},
                    }
                },
            }
        )
    )
    if not sums.exists():
        items = json.loads((template.parent / "items.json").read_text())["items"]
        sums.write_text(
            "".join(
                f"{entry['md5']}  {item['key']}/{entry['path']}\n"
                for item in items
                for entry in item["files"]
            )
        )
    # Not the current folder first on the path (``-m`` puts it there): the code of ``code``.
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONSAFEPATH": "1"}
    command = [sys.executable, "-m", "resolwe_storage", "--config", str(config), "run", "--once"]
    command += args.options.split()

    def ours() -> tuple[Run, Run]:
        for suffix in ("-wal", "-shm"):
            Path(f"{catalog}{suffix}").unlink(missing_ok=True)
        shutil.copy(template, catalog)
        first = measure(command, env=env, source=source)
        assert state(catalog) == ("OK", args.files, state(catalog)[2]), state(catalog)
        with contextlib.closing(sqlite3.connect(catalog)) as db:
            db.executescript(AGE)
        again = measure(command, env=env, source=source)
        status, rows, _ = state(catalog)
        assert (status, rows) == ("OK", args.files)
        with contextlib.closing(sqlite3.connect(catalog)) as db:
            (old,) = db.execute(
                "SELECT count(*) FROM location_file WHERE verified < datetime('now', '-1 day')"
            ).fetchone()
        assert old == 0, f"{old} files not verified again"
        return first, again

    def peer() -> Run:
        return measure(["sh", "-c", f"cd '{source}' && md5sum --quiet -c '{sums}'"], source=source)

    print(
        f"one item of {args.files:,} x 1 KiB, verified on a local connector"
        f" (run --once {args.options or 'at its defaults'}; {code})"
    )
    firsts: list[float] = []
    agains: list[float] = []
    peers: list[float] = []
    for number in range(args.rounds):
        if number % 2:
            peers.append(peer().seconds)
        first, again = ours()
        firsts.append(first.seconds)
        agains.append(again.seconds)
        if not number % 2:
            peers.append(peer().seconds)
        print(
            f"  round {number + 1}: first {first.seconds:6.2f} s ({first.peak_rss_mb:.0f} MB),"
            f" again {again.seconds:6.2f} s ({again.peak_rss_mb:.0f} MB),"
            f" md5sum -c {peers[-1]:6.2f} s",
            flush=True,
        )
    for name, values in (("first", firsts), ("again", agains)):
        ratio = statistics.median(p / o for p, o in zip(peers, values, strict=True))
        print(
            f"  {name:<6} median {statistics.median(values):6.2f} s;"
            f" md5sum -c {statistics.median(peers):6.2f} s; ratio {ratio:.2f}"
        )


if __name__ == "__main__":
    main()
