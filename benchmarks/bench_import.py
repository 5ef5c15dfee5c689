"""Import benchmark: a catalog of N items × F files, as a JSON document and as JSON Lines.

    python benchmarks/bench_import.py [--items N] [--files F] [--database sqlite|postgres]
                                      [--formats json,jsonl] [--reference N]
    python benchmarks/bench_import.py --from-resolwe DSN [--database sqlite|postgres]

Each import runs as a whole process, as users run it (``resolwe-storage import``),
into an empty catalog, then again unchanged; wall time and the peak resident
memory of the process (``wait4``) are printed. The reference is the
item-by-item import (``catalog.importing.import_one``), the way every item
went before the batched writer, timed on ``--reference`` items and scaled:
the ratio says how many times faster the whole import is now.

On PostgreSQL the rows the first import wrote are also loaded into a fresh
catalog of the same schema by ``psql`` with ``COPY`` in one transaction,
timed as a whole process: the server's own floor for those rows (its
indexes, foreign keys and log), printed with our time's ratio to it.

With ``--from-resolwe DSN`` it times ``import --from-resolwe`` instead, of a
Resolwe database that ``benchmarks/generate_resolwe.py`` filled.

Targets (issue 21): 1,000,000 items × 5 files ≤ 60 s and ≤ 300 MB on SQLite,
≤ 120 s on PostgreSQL; re-import unchanged ≤ 0.5 × the first import;
``--from-resolwe`` of 1,000,000 generated rows sets ≤ 120 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The re-import of an unchanged document, as a share of the first import, at most.
RE_IMPORT_TARGET = 0.5
POSTGRES_ADMIN = os.environ.get(
    "RESOLWE_STORAGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def item(number: int, files: int, rng: random.Random) -> dict:
    key = f"item-{number:08d}"
    return {
        "key": key,
        "data_slug": rng.choice(["reads", "alignment", "variants", "upload-genome"]),
        "process_type": rng.choice(
            ["data:reads:fastq:", "data:alignment:bam:", "data:variants:vcf:"]
        ),
        "status": "OK",
        "created": f"2025-{1 + number % 12:02d}-{1 + number % 28:02d}T10:00:00Z",
        "locations": [
            {
                "connector": "local",
                "url": key,
                "status": "OK",
                "last_update": "2026-01-05T00:00:00Z",
                "open_access_logs": 1 if number % 100 == 0 else 0,
            },
        ]
        + ([{"connector": "S3", "url": key, "status": "OK"}] if number % 3 == 0 else []),
        "files": [
            {
                "path": f"out/file-{n}.dat",
                "size": rng.randrange(1, 1 << 30),
                "md5": f"{rng.getrandbits(128):032x}",
                "crc32c": f"{rng.getrandbits(32):08x}",
                "awss3etag": f"{rng.getrandbits(128):032x}-2",
                "chunk_size": 8388608,
            }
            for n in range(files)
        ],
    }


def write_inputs(folder: Path, items: int, files: int) -> dict[str, Path]:
    rng = random.Random(1)
    lines, document = folder / "items.jsonl", folder / "items.json"
    with lines.open("w") as out_lines, document.open("w") as out_doc:
        out_doc.write('{"items": [\n')
        for number in range(items):
            text = json.dumps(item(number, files, rng))
            out_lines.write(text + "\n")
            out_doc.write(("," if number else "") + text + "\n")
        out_doc.write("]}\n")
    return {"json": document, "jsonl": lines}


def config_for(folder: Path, database: str) -> Path:
    config = folder / f"config-{database.split(':')[0]}.json"
    config.write_text(
        json.dumps(
            {
                "database": database,
                "connectors": {
                    "local": {
                        "connector": "local",
                        "config": {"priority": 0, "path": str(folder / "local")},
                    },
                    "S3": {"connector": "s3", "config": {"priority": 10, "bucket": "bench"}},
                },
            }
        )
    )
    return config


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, and stdout of ``command``."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - began
    out = process.stdout.read().decode()  # type: ignore[union-attr]
    err = process.stderr.read().decode()  # type: ignore[union-attr]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed: {err}")
    return seconds, usage.ru_maxrss / 1024, out.strip()


def fresh_database(kind: str, folder: Path, label: str) -> tuple[str, object]:
    if kind == "sqlite":
        path = folder / f"catalog-{label}.sqlite3"
        for suffix in ("", "-wal", "-shm"):  # an earlier run's (--reuse)
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}", None
    import psycopg2

    name = f"bench_import_{label}_{os.getpid()}"
    admin = psycopg2.connect(POSTGRES_ADMIN)
    admin.autocommit = True
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    admin.cursor().execute(f"CREATE DATABASE {name}")
    base = POSTGRES_ADMIN.rsplit("/", 1)[0]
    return f"{base}/{name}", (admin, name)


def drop(handle: object) -> None:
    if handle is None:
        return
    admin, name = handle  # type: ignore[misc]
    admin.cursor().execute(f"DROP DATABASE IF EXISTS {name}")
    admin.close()


def reference_rate(folder: Path, files: int, items: int) -> float:
    """Items per second of the item-by-item import, on SQLite, in this process."""
    from catalog.database import bind, migrate, open_database
    from catalog.importing import import_one
    from catalog.queries import writing

    database = open_database(f"sqlite:///{folder / 'reference.sqlite3'}")
    database.connect()
    migrate(database)
    bind(database)
    rng = random.Random(2)
    docs = [item(n, files, rng) for n in range(items)]
    began = time.perf_counter()
    with writing(database):
        for number, raw in enumerate(docs):
            import_one(raw, where=f"items.{number}", actor="import", verified_at=None)
    rate = items / (time.perf_counter() - began)
    database.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=5)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--formats", default="json,jsonl")
    parser.add_argument(
        "--reference", type=int, default=5_000, help="items of the reference (0: none)"
    )
    parser.add_argument(
        "--folder", help="keep inputs and catalogs here (default: a temporary folder)"
    )
    parser.add_argument(
        "--reuse", action="store_true", help="use the inputs already in --folder (same --items)"
    )
    parser.add_argument(
        "--from-resolwe",
        metavar="DSN",
        help="instead: time import --from-resolwe DSN (a database benchmarks/"
        "generate_resolwe.py filled) into an empty catalog, then again",
    )
    args = parser.parse_args()
    if args.from_resolwe:
        from_resolwe(args)
        return
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench-import-"))
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    inputs = {"json": folder / "items.json", "jsonl": folder / "items.jsonl"}
    if not (args.reuse and all(path.exists() for path in inputs.values())):
        inputs = write_inputs(folder, args.items, args.files)
    size = inputs["json"].stat().st_size / 1e6
    print(
        f"{args.items:,} items × {args.files} files: {size:,.0f} MB of JSON, "
        f"written in {time.perf_counter() - began:.1f} s"
    )
    rate = reference_rate(folder, args.files, args.reference) if args.reference > 0 else None
    if rate is not None:
        print(
            f"reference (item by item, {args.reference:,} items): {rate:,.0f} items/s, "
            f"{args.items / rate:,.0f} s for {args.items:,} items"
        )
    command = [sys.executable, "-m", "resolwe_storage"]
    print(
        f"{'format':<6} {'database':<9} {'run':<10} {'seconds':>8} {'items/s':>9} "
        f"{'peak MB':>8} {'vs reference':>12}"
    )
    for form in args.formats.split(","):
        url, handle = fresh_database(args.database, folder, form)
        try:
            config = config_for(folder, url)
            subprocess.run(
                [*command, "--config", str(config), "migrate"], check=True, capture_output=True
            )
            first = 0.0
            for run in ("first", "unchanged"):
                seconds, peak, out = timed(
                    [
                        *command,
                        "--config",
                        str(config),
                        "import",
                        "--json",
                        "--format",
                        form,
                        str(inputs[form]),
                    ]
                )
                counts = json.loads(out)
                expected = "created" if run == "first" else "unchanged"
                assert counts[expected] == args.items, counts
                print(
                    f"{form:<6} {args.database:<9} {run:<10} {seconds:8.1f} "
                    f"{args.items / seconds:9,.0f} {peak:8.0f} "
                    + (f"{(args.items / rate) / seconds:11.1f}×" if rate else f"{'-':>12}")
                )
                if run == "first":
                    first = seconds
                    if args.database == "postgres":
                        floor = copy_floor(url, folder, command)
                        print(
                            f"{'':<17}PostgreSQL's own COPY of the rows written (psql, one "
                            f"transaction): {floor:.1f} s; ours / COPY: {seconds / floor:.2f}"
                        )
                else:
                    ratio = seconds / first
                    verdict = "met" if ratio <= RE_IMPORT_TARGET else "NOT met"
                    print(f"{'':<17}re-import / first: {ratio:.2f} ({verdict}, target ≤ 0.5)")
        finally:
            drop(handle)


#: The catalog's tables, parents first.
TABLES = ("file_storage", "storage_location", "referenced_path", "access_log", "action")


def copy_floor(url: str, folder: Path, command: list[str]) -> float:
    """Seconds ``psql`` takes to load the rows the import wrote into ``url`` into a fresh
    catalog of the same schema (indexes, foreign keys) with ``COPY``, in one transaction.

    The server's floor for those rows: what no client of it could write faster.
    """
    import psycopg2

    rows = folder / "floor"
    rows.mkdir(exist_ok=True)
    with psycopg2.connect(url) as source, source.cursor() as cursor:
        for table in TABLES:
            with (rows / f"{table}.csv").open("w") as out:
                cursor.copy_expert(f"COPY {table} TO STDOUT CSV", out)
    target, handle = fresh_database("postgres", folder, "floor")
    try:
        config = config_for(folder / "floor", target)
        subprocess.run(
            [*command, "--config", str(config), "migrate"], check=True, capture_output=True
        )
        script = rows / "load.sql"
        script.write_text(
            "BEGIN;\n"
            + "".join(f"\\copy {table} FROM '{rows / table}.csv' CSV\n" for table in TABLES)
            + "COMMIT;\n"
        )
        os.sync()
        seconds, _, _ = timed(
            ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f", str(script)]
        )
        return seconds
    finally:
        drop(handle)


def from_resolwe(args: argparse.Namespace) -> None:
    """``import --from-resolwe`` as a whole process: first into an empty catalog, then again."""
    folder = Path(args.folder or tempfile.mkdtemp(prefix="bench-import-"))
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "resolwe_storage"]
    url, handle = fresh_database(args.database, folder, "resolwe")
    print(
        f"{'source':<14} {'database':<9} {'run':<10} {'seconds':>8} {'items/s':>9} {'peak MB':>8}"
    )
    try:
        config = config_for(folder, url)
        subprocess.run([*command, "--config", str(config), "migrate"], check=True)
        for run in ("first", "again"):
            source = ["--from-resolwe", args.from_resolwe]
            seconds, peak, out = timed(
                [*command, "--config", str(config), "import", "--json", *source]
            )
            counts = json.loads(out)
            items = counts["created"] + counts["updated"] + counts["unchanged"]
            print(
                f"{'--from-resolwe':<14} {args.database:<9} {run:<10} {seconds:8.1f} "
                f"{items / seconds:9,.0f} {peak:8.0f}  {counts}"
            )
    finally:
        drop(handle)


if __name__ == "__main__":
    main()
