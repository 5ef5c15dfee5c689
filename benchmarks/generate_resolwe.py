"""Generate a synthetic Resolwe database, for the ``import --from-resolwe`` benchmark.

    python benchmarks/generate_resolwe.py --url postgresql://postgres@127.0.0.1/resolwe_bench_1m \\
        --items 1000000 [--seed 1] [--files-per-item 5] [--drop]

The database named in ``--url`` is created when it does not exist (through the
server's ``postgres`` database), and the Resolwe schema when it has no
``storage_filestorage`` table (``tests.resolwe_db.create_schema``: the tables,
keys and indexes of the original Django app). Items are then added after any
already there with ``tests.resolwe_db.fill_generated``: one FileStorage each,
its Data, one or two locations, ``--files-per-item`` ReferencedPaths and some
locks, loaded with ``COPY``; the shape is described there. Same seed, same
database.

What it prints: the time of each phase, the rows added per table, and the
size of the database (``pg_database_size``). ``--drop`` drops the database
afterwards (a million items take a few GB).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.resolwe_db import create_schema, fill_generated

DEFAULT_SEED = 1
DEFAULT_FILES_PER_ITEM = 5


def _admin(url: str) -> psycopg2.extensions.connection:
    """A connection to the server's ``postgres`` database, outside any transaction."""
    connection = psycopg2.connect(make_dsn(url, dbname="postgres"))
    connection.autocommit = True
    return connection


def ensure_database(url: str) -> bool:
    """Create the database of ``url`` unless it exists; whether it was created."""
    name = parse_dsn(url)["dbname"]
    connection = _admin(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone():
                return False
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        connection.close()


def has_schema(url: str) -> bool:
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('storage_filestorage') IS NOT NULL")
            return bool(cursor.fetchone()[0])
    finally:
        connection.close()


def database_size(url: str) -> int:
    """Bytes the database takes on disk."""
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_database_size(current_database())")
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def drop_database(url: str) -> None:
    name = parse_dsn(url)["dbname"]
    connection = _admin(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    """Command line: make the database, fill it, and print times and size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="postgresql://... of the database to fill")
    parser.add_argument("--items", required=True, type=int, metavar="N", help="file storages")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default 1)")
    parser.add_argument(
        "--files-per-item",
        type=int,
        default=DEFAULT_FILES_PER_ITEM,
        metavar="F",
        help=f"ReferencedPaths per item (default {DEFAULT_FILES_PER_ITEM})",
    )
    parser.add_argument(
        "--drop", action="store_true", help="drop the database after reporting its size"
    )
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be at least 1")
    if args.files_per_item < 1:
        parser.error("--files-per-item must be at least 1")

    began = time.perf_counter()
    created = ensure_database(args.url)
    if not has_schema(args.url):
        create_schema(args.url)
        print(f"database {'created' if created else 'found'}, schema created")
    else:
        print("database and schema found: adding after the rows there")
    print(f"  {'schema':<44} {time.perf_counter() - began:8.1f} s")

    filling = time.perf_counter()
    added = fill_generated(
        args.url,
        args.items,
        seed=args.seed,
        files_per_item=args.files_per_item,
        log=lambda line: print(f"  {line}"),
    )
    finished = time.perf_counter()
    for table, count in added.items():
        print(f"  {table:<44} {count:>12,} rows")
    size = database_size(args.url)
    total = finished - began
    print(
        f"generated {args.items:,} items (seed {args.seed}, {args.files_per_item} files each)"
        f" in {total:.1f} s ({args.items / (finished - filling):,.0f} items/s);"
        f" database size {size / 2**20:,.0f} MiB ({size:,} bytes)"
    )
    if args.drop:
        drop_database(args.url)
        print(f"dropped {parse_dsn(args.url)['dbname']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
