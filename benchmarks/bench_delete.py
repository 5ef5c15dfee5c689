"""Deleting one item of many files by policy: ``resolwe-storage run --once`` as a whole process.

    .venv/bin/python benchmarks/bench_delete.py [--rounds 3] [--files 50000] [--folders 50]
        [--options "--processes 1"] [--code DIR] [--database postgres]

One item of ``--files`` x 1 KiB files in ``--folders`` folders, with two
copies in a SQLite catalog as ``import`` left them: one on ``local``
(priority 0, the preferred copy) and one on ``archive`` (priority 10) with a
``delete: {delay: 0}`` rule. ``run --once`` on the embedded default deletes
the archive's copy: the scan queues its files in jobs, every job confirms
on the other copy the files it is about to remove (the first to decide: all
of them), and removes its own. Checked afterwards: the archive's copy is
gone from the catalog and from the disk, the other still there.

The archive copy is made afresh for every run as hard links to the source
(``cp -al``): what a delete removes from either contender is the names, as
it would be for a plain copy of small files. The peer is ``rm -rf && sync``
of the same folder (no catalog, no confirmation), run in the same round;
the ratio is peer / ours, the median of the rounds'. Peak memory is the
largest resident set of any one process.

``--options`` adds options to ``run --once`` (``--processes 1``: one worker
process of 8 threads, jobs of 128 files, as a worker pool takes them).
``--code DIR`` runs another checkout's code on the same data, to compare
with the code before a change. ``--database postgres``: the catalog in a
PostgreSQL database of its own (``$BENCH_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, names the server), made
afresh and imported for every run of ours: one statement of the delete's
first job once took 15.8 s there and no time on SQLite. Data under
``benchmarks/out/delete/``. Not part of the test run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_transfer import Run, measure  # noqa: E402
from measure import POSTGRES, compile_packages, postgres_database  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "delete"
KEY = "wide"
SIZE = 1024


def make_data(files: int, folders: int) -> tuple[Path, Path]:
    """The source files and the import document naming both copies (made once)."""
    base = OUT / f"{files}x{folders}"
    source, document = base / "source", base / "items.json"
    if document.exists():
        return source, document
    shutil.rmtree(base, ignore_errors=True)
    entries = []
    block = os.urandom(SIZE * files)
    for index in range(files):
        path = f"folder-{index % folders:03d}/file-{index:06d}.dat"
        data = block[index * SIZE : (index + 1) * SIZE]
        target = source / KEY / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entries.append({"path": path, "size": SIZE})
    item = {
        "key": KEY,
        "created": "2026-01-01T00:00:00Z",
        "locations": [
            {"connector": "local", "url": KEY, "status": "OK"},
            {"connector": "archive", "url": KEY, "status": "OK"},
        ],
        "files": entries,
    }
    document.write_text(json.dumps({"items": [item]}))
    return source, document


DATABASE = "bench_delete"


def state(catalog: Path | None) -> list[str]:
    """The connectors the item still has a location on (``catalog`` None: PostgreSQL's)."""
    query = "SELECT connector_name FROM storage_location"
    if catalog is None:
        import psycopg2

        with contextlib.closing(psycopg2.connect(_database_url())) as db, db.cursor() as cursor:
            cursor.execute(query)
            return sorted(name for (name,) in cursor.fetchall())
    with contextlib.closing(sqlite3.connect(catalog)) as db:
        return sorted(name for (name,) in db.execute(query))


def _database_url() -> str:
    return POSTGRES.rsplit("/", 1)[0] + "/" + DATABASE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--folders", type=int, default=50)
    parser.add_argument("--code", type=Path, help="another checkout's code to run")
    parser.add_argument("--options", default="", help="more options of run --once")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    code = (args.code or ROOT).resolve()
    compile_packages(code)
    source, document = make_data(args.files, args.folders)
    base = source.parent
    archive, trash = base / "archive", base / "trash"
    catalog, template, config = base / "catalog.sqlite3", base / "template.sqlite3", base / "c.json"
    config.write_text(
        json.dumps(
            {
                "database": (
                    f"sqlite:///{catalog}" if args.database == "sqlite" else _database_url()
                ),
                "connectors": {
                    "local": {"connector": "local", "config": {"priority": 0, "path": str(source)}},
                    "archive": {
                        "connector": "local",
                        "config": {
                            "priority": 10,
                            "path": str(archive),
                            "delete": {"delay": 0, "min_other_copies": 1},
                        },
                    },
                },
            }
        )
    )
    # Not the current folder first on the path (``-m`` puts it there): the code of ``code``.
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONSAFEPATH": "1"}
    command = [sys.executable, "-m", "resolwe_storage", "--config", str(config)]
    if args.database == "sqlite" and not template.exists():
        catalog.unlink(missing_ok=True)
        subprocess.run([*command, "import", str(document)], check=True, env=env)
        shutil.move(catalog, template)
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()

    def fresh_copy() -> None:
        shutil.rmtree(archive, ignore_errors=True)
        archive.mkdir()
        subprocess.run(["cp", "-al", str(source / KEY), str(archive / KEY)], check=True)
        subprocess.run(["sync"], check=True)

    def ours() -> Run:
        fresh_copy()
        if args.database == "sqlite":
            for suffix in ("-wal", "-shm"):
                Path(f"{catalog}{suffix}").unlink(missing_ok=True)
            shutil.copy(template, catalog)
        else:
            postgres_database(DATABASE)
            subprocess.run([*command, "migrate"], check=True, env=env, capture_output=True)
            subprocess.run(
                [*command, "import", str(document)], check=True, env=env, capture_output=True
            )
        run = measure([*command, "run", "--once", *args.options.split()], env=env)
        where = catalog if args.database == "sqlite" else None
        assert state(where) == ["local"], state(where)
        assert not (archive / KEY).exists() or not any((archive / KEY).rglob("*.dat"))
        return run

    def peer() -> Run:
        fresh_copy()
        run = measure(["sh", "-c", f"rm -rf '{archive / KEY}' && sync"])
        assert not (archive / KEY).exists()
        return run

    print(
        f"one item of {args.files:,} x 1 KiB in {args.folders} folders, its second copy deleted"
        f" (run --once {args.options or 'at its defaults'}, {args.database}; {code})"
    )
    ours_times: list[float] = []
    peers: list[float] = []
    for number in range(args.rounds):
        order = (ours, peer) if number % 2 == 0 else (peer, ours)
        runs = {}
        for contender in order:
            runs[contender] = contender()
        ours_times.append(runs[ours].seconds)
        peers.append(runs[peer].seconds)
        print(
            f"  round {number + 1}: ours {runs[ours].seconds:6.2f} s"
            f" ({runs[ours].peak_rss_mb:.0f} MB), rm -rf && sync {runs[peer].seconds:6.2f} s",
            flush=True,
        )
    ratio = statistics.median(p / o for p, o in zip(peers, ours_times, strict=True))
    print(
        f"  median {statistics.median(ours_times):6.2f} s; rm -rf && sync"
        f" {statistics.median(peers):6.2f} s; ratio {ratio:.2f}"
    )


if __name__ == "__main__":
    main()
