"""One-shot runs: ``resolwe-storage run --once`` on the embedded default, as a whole process.

    .venv/bin/python benchmarks/bench_once.py [--rounds 5] [--only small,big]

The embedded default as a user first meets it: a SQLite catalog, the
in-process broker, two local folders, and a copy rule (delay 0) to the
second. Each round starts from the same catalog (the items registered on
the first folder by ``import``, untimed; a copy of that catalog file per
run), an empty destination, the source in the page cache and a quiet
machine (``measure.warm``, ``measure.settle``); ``run --once`` is timed from
its start to its exit (interpreter start-up, the scan, every copy validated
and recorded, each file flushed to disk), our packages byte-compiled as
installed ones are, and checked afterwards: every
location on the destination ``OK``, every file there.

- ``small``: 2,000 x 16 KiB (200 items of 10 files) against
  ``rclone copy --checksum --transfers 16 && sync``; target 1.0x.
- ``big``: one 1 GiB file against ``cp -r && sync``; target 0.9x.
- ``wide`` (not run unless asked): one item of 50,000 x 1 KiB files, with
  ``--processes 1``, so in jobs of 128 files as a worker pool takes them,
  against ``rclone copy --checksum --transfers 16 && sync``; target 1.0x.
  Each job's check that the copy is whole once looked at the item's
  files from the first, so the jobs cost more the further along they
  were: 12.8 and 15.1 s against 5.0 and 4.9 s after (SQLite), and on
  PostgreSQL more than 896 s against 7.6 s.

Ours and the peer take turns going first; the verdict is the median of each
round's ratio (peer / ours). Data under ``benchmarks/out/once/``. Not part of
the test run.
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
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_transfer import Run, find_tool, measure  # noqa: E402
from measure import compile_packages  # noqa: E402

from connectors.hashing import hash_stream  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "once"
MIB = 1024 * 1024


def make_source(folder: Path, items: int, files: int, size: int) -> list[dict]:
    """Files under ``folder/item-N/``, and the import document's items for them."""
    documents = []
    for number in range(items):
        key = f"item-{number:04d}"
        entries = []
        for index in range(files):
            path = folder / key / f"file-{index:03d}.dat"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                left = size
                while left:
                    block = os.urandom(min(left, 8 * MIB))
                    out.write(block)
                    left -= len(block)
            with path.open("rb") as stream:
                hashes = hash_stream(stream)
            entries.append(
                {
                    "path": path.name,
                    "size": size,
                    "md5": hashes.md5,
                    "crc32c": hashes.crc32c,
                    "awss3etag": hashes.awss3etag,
                    "chunk_size": hashes.chunk_size,
                }
            )
        documents.append(
            {
                "key": key,
                "created": "2026-01-01T00:00:00Z",
                "locations": [{"connector": "local", "url": key, "status": "OK"}],
                "files": entries,
            }
        )
    return documents


def prepare(case: str, items: int, files: int, size: int) -> tuple[Path, Path, Path, Path]:
    """Source, destination, config and the template catalog of ``case`` (made once)."""
    base = OUT / case
    source, destination = base / "source", base / "destination"
    config, template = base / "config.json", base / "template.sqlite3"
    marker = base / f"ready-{items}x{files}x{size}"
    if not marker.exists():
        shutil.rmtree(base, ignore_errors=True)
        source.mkdir(parents=True)
        documents = make_source(source, items, files, size)
        (base / "items.json").write_text(json.dumps({"items": documents}))
        marker.touch()
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{base / 'catalog.sqlite3'}",
                "connectors": {
                    "local": {"connector": "local", "config": {"priority": 0, "path": str(source)}},
                    "archive": {
                        "connector": "local",
                        "config": {"priority": 10, "path": str(destination), "copy": {"delay": 0}},
                    },
                },
            }
        )
    )
    if not template.exists():
        command = [sys.executable, "-m", "resolwe_storage", "--config", str(config)]
        (base / "catalog.sqlite3").unlink(missing_ok=True)
        import subprocess

        subprocess.run([*command, "import", str(base / "items.json")], check=True)
        shutil.copy(base / "catalog.sqlite3", template)
    return source, destination, config, template


def copied_locations(catalog: Path) -> int:
    # Closed here: the next round unlinks the log and copies over the file,
    # which a connection left open would read through stale state.
    with contextlib.closing(sqlite3.connect(catalog)) as db:
        (count,) = db.execute(
            "SELECT count(*) FROM storage_location WHERE connector_name = 'archive' "
            "AND status = 'OK'"
        ).fetchone()
    return int(count)


def files_under(folder: Path) -> int:
    return sum(len(names) for _, _, names in os.walk(folder))


def run_case(case: str, rounds: int, trash: Path, aside: Iterator[int]) -> tuple[str, float, float]:
    """Rounds of ours and the peer on ``case``: (title, median ratio, target)."""
    items, files, size, peer_name, target, extra = CASES[case]
    source, destination, config, template = prepare(case, items, files, size)
    catalog = config.parent / "catalog.sqlite3"
    rclone = find_tool("rclone") or "rclone"

    def empty() -> None:
        # Moved aside, deleted at the end: ext4 makes new files slowly for
        # minutes after many deletions (bench_jobs.py).
        if destination.exists():
            destination.rename(trash / str(next(aside)))

    def ours() -> Run:
        empty()
        for suffix in ("-wal", "-shm"):  # the last run's, which belong to another file
            Path(f"{catalog}{suffix}").unlink(missing_ok=True)
        shutil.copy(template, catalog)
        command = [sys.executable, "-m", "resolwe_storage", "--config", str(config)]
        run = measure([*command, "run", "--once", *extra], source=source)
        assert copied_locations(catalog) == items, "not every copy is OK"
        assert files_under(destination) == items * files
        return run

    def peer() -> Run:
        empty()
        if case != "big":
            command = f"'{rclone}' copy --checksum --transfers 16 '{source}' '{destination}'"
        else:
            command = f"cp -r '{source}' '{destination}'"
        run = measure(["sh", "-c", command + " && sync"], source=source)
        assert files_under(destination) == items * files
        return run

    contenders: dict[str, Callable[[], Run]] = {OURS: ours, peer_name: peer}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    title = f"{items * files:,} x {size // 1024:,} KiB local -> local"
    print(title, flush=True)
    for number in range(rounds):
        order = list(contenders) if number % 2 == 0 else list(reversed(contenders))
        for name in order:
            run = contenders[name]()
            times[name].append(run.seconds)
            print(
                f"  round {number + 1}: {name:<46} {run.seconds:6.2f} s  "
                f"peak {run.peak_rss_mb:5.0f} MB",
                flush=True,
            )
    ratio = statistics.median(
        peer / ours for peer, ours in zip(times[peer_name], times[OURS], strict=True)
    )
    for name, values in times.items():
        print(f"  {name:<56} median {statistics.median(values):6.2f} s")
    verdict = "met" if ratio >= target else "NOT met"
    print(f"  ratio ({peer_name} / ours, median of the rounds'): {ratio:.2f}, {verdict}")
    return title, ratio, target


OURS = "ours: run --once"
#: case: items, files per item, bytes per file, the peer, the target ratio, our extra options.
CASES = {
    "small": (200, 10, 16 * 1024, "rclone copy --checksum --transfers 16 && sync", 1.0, ()),
    "big": (1, 1, 1024 * MIB, "cp -r && sync", 0.9, ()),
    "wide": (
        1,
        50_000,
        1024,
        "rclone copy --checksum --transfers 16 && sync",
        1.0,
        ("--processes", "1"),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default="small,big")
    args = parser.parse_args()
    compile_packages(ROOT)
    trash = OUT / "trash"
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir(parents=True)
    aside = iter(range(1_000_000))
    verdicts = [run_case(case, args.rounds, trash, aside) for case in args.only.split(",")]
    shutil.rmtree(trash, ignore_errors=True)
    print("\nsummary")
    for title, ratio, target in verdicts:
        print(f"  {title:<40} ratio {ratio:.2f} (target {target})")


if __name__ == "__main__":
    main()
