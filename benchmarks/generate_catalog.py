"""Generate a synthetic catalog of N items for the plan benchmark.

    python benchmarks/generate_catalog.py --database URL --items N [--seed S]

``URL`` is ``sqlite:///path`` or ``postgresql://...``. The schema is created
with the product's own migrations (``catalog.database.open_database`` and
``migrate``), so the real tables and indexes are used; the rows are then
bulk-loaded with ``executemany`` in large batches inside transactions (SQLite)
or ``COPY ... FROM STDIN`` (PostgreSQL). The secondary indexes the migrations
created are dropped for the load and re-created afterwards from their own DDL
(building an index once is several times faster than maintaining it row by
row); PostgreSQL is then ``VACUUM ANALYZE``d, as autovacuum would do on its own
shortly after a load this size. SQLite is not ``ANALYZE``d, because the product
never does it either.

What it measures: how long generation takes, printed per phase.

Shape of the data (deterministic for a given ``--seed``):

- items ``item-0000001`` ... (zero-padded, so that key order is stable; with
  ``--shuffle-keys`` the keys are a random permutation of the ids, so key
  order is not id order, as with a producer's own identifiers), a mix of
  ``data_slug`` / ``process_type`` pairs, mostly status ``OK`` with a few per
  cent ``PR`` and ``ER``, created uniformly over the three years before
  2026-11-01;
- 2 or 3 locations per item on a random subset of ``local``, ``S3``, ``GCS``
  (``url`` = the key), mostly ``OK`` with a few ``PR``/``UP``/``DE``,
  ``last_update`` between ``created`` and 2026-11-01, ``last_verified`` null
  or within the last 60 days;
- about 1 % of locations with an open access log (``finished`` null) and 5 %
  with a finished one;
- with ``--files``, 1-3 referenced paths per item (the planner never reads
  them, so they are off by default).
"""

from __future__ import annotations

import argparse
import io
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee as pw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from catalog.database import is_postgres, migrate, open_database

#: The moment the synthetic catalog ends; the benchmark plans at this time.
END = datetime(2026, 11, 1)
#: Items are created uniformly over this span before ``END``.
SPAN = timedelta(days=3 * 365)
#: Items generated and written per batch (and per transaction on SQLite).
DEFAULT_BATCH_ITEMS = 100_000
DEFAULT_SEED = 1

#: (data_slug, process_type, weight): a few upload, alignment, variant and
#: expression processes, as a genomics platform holds them.
PROCESSES: tuple[tuple[str, str, int], ...] = (
    ("upload-fastq-single", "data:reads:fastq:single:", 20),
    ("upload-fastq-paired", "data:reads:fastq:paired:", 20),
    ("00hrfastqgz-66", "data:reads:fastq:single:", 2),
    ("alignment-bwa-mem", "data:alignment:bam:bwamem:", 12),
    ("alignment-star", "data:alignment:bam:star:", 12),
    ("alignment-bowtie2", "data:alignment:bam:bowtie2:", 4),
    ("vc-gatk4-hc", "data:variants:vcf:gatk:", 8),
    ("vc-freebayes", "data:variants:vcf:freebayes:", 4),
    ("expression-featurecounts", "data:expression:featurecounts:", 10),
    ("qc-fastqc", "data:qc:fastqc:", 6),
    ("upload-genome", "data:seq:nucleotide:", 2),
)
#: Producer statuses: only OK is eligible for policies.
ITEM_STATUSES: tuple[tuple[str, int], ...] = (("OK", 96), ("PR", 2), ("ER", 2))
#: Which connectors hold an item's copies.
CONNECTOR_SETS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("local", "S3", "GCS"), 40),
    (("local", "S3"), 30),
    (("S3", "GCS"), 18),
    (("local", "GCS"), 12),
)
LOCATION_STATUSES: tuple[tuple[str, int], ...] = (("OK", 94), ("PR", 2), ("UP", 2), ("DE", 2))
OPEN_LOG_RATE = 0.01
FINISHED_LOG_RATE = 0.05
NEVER_VERIFIED_RATE = 0.4
#: Recently verified copies were verified within this many days before ``END``.
VERIFIED_WITHIN_DAYS = 60
#: Share of timestamps with whole seconds (stored without '.ffffff' on SQLite).
WHOLE_SECOND_RATE = 0.1
FILE_NAMES = ("reads.fastq.gz", "report.html", "stats/", "output.bam", "output.bam.bai")

TABLES = ("file_storage", "storage_location", "access_log", "referenced_path")
COLUMNS: dict[str, tuple[str, ...]] = {
    "file_storage": ("id", "key", "data_slug", "process_type", "status", "created"),
    "storage_location": (
        "id",
        "file_storage_id",
        "connector_name",
        "url",
        "status",
        "last_update",
        "last_verified",
    ),
    "access_log": ("id", "storage_location_id", "started", "finished", "reason"),
    "referenced_path": ("id", "file_storage_id", "path", "size", "md5", "chunk_size"),
}


@dataclass
class Batch:
    """The rows of one batch of items, one list of tuples per table."""

    rows: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {table: [] for table in TABLES}
    )


@dataclass
class Counters:
    """Next id per table (ids are assigned here so that rows reference each other)."""

    location: int = 1
    log: int = 1
    path: int = 1


def _chooser(rng: random.Random, weighted: Sequence[tuple[Any, int]]) -> Callable[[], Any]:
    """A fast weighted choice: a lookup table indexed by a random integer."""
    table = [value for value, weight in weighted for _ in range(weight)]
    size = len(table)
    return lambda: table[int(rng.random() * size)]


def generate(
    items: int,
    *,
    seed: int,
    files: bool,
    shuffle_keys: bool = False,
    batch_items: int = DEFAULT_BATCH_ITEMS,
) -> Iterator[Batch]:
    """Yield the catalog's rows in batches of ``batch_items`` items, deterministically.

    ``shuffle_keys`` changes only which key each item gets (its own random
    stream), so both variants hold the same items and plan the same actions.
    """
    rng = random.Random(seed)
    random_ = rng.random
    process = _chooser(rng, [((slug, ptype), w) for slug, ptype, w in PROCESSES])
    item_status = _chooser(rng, ITEM_STATUSES)
    connector_set = _chooser(rng, CONNECTOR_SETS)
    location_status = _chooser(rng, LOCATION_STATUSES)
    width = max(7, len(str(items)))
    numbers = list(range(1, items + 1))
    if shuffle_keys:
        random.Random(f"keys-{seed}").shuffle(numbers)
    start = END - SPAN
    span_seconds = SPAN.total_seconds()
    verified_seconds = VERIFIED_WITHIN_DAYS * 86_400.0

    def moment(base: datetime, seconds: float) -> datetime:
        if random_() < WHOLE_SECOND_RATE:
            return base + timedelta(seconds=int(seconds))
        return base + timedelta(seconds=seconds)

    ids = Counters()
    for first in range(1, items + 1, batch_items):
        batch = Batch()
        fs, sl, al, rp = (batch.rows[table] for table in TABLES)
        for item_id in range(first, min(first + batch_items, items + 1)):
            key = f"item-{numbers[item_id - 1]:0{width}d}"
            slug, ptype = process()
            created = moment(start, random_() * span_seconds)
            fs.append((item_id, key, slug, ptype, item_status(), created))
            left = (END - created).total_seconds()
            for connector in connector_set():
                status = location_status()
                last_update = moment(created, random_() * left)
                verified = None
                if status == "OK" and random_() >= NEVER_VERIFIED_RATE:
                    verified = max(moment(END, -random_() * verified_seconds), created)
                location_id = ids.location
                ids.location += 1
                sl.append((location_id, item_id, connector, key, status, last_update, verified))
                chance = random_()
                if chance < OPEN_LOG_RATE + FINISHED_LOG_RATE:
                    started = moment(last_update, random_() * (END - last_update).total_seconds())
                    finished = None
                    if chance >= OPEN_LOG_RATE:
                        finished = started + timedelta(seconds=int(random_() * 3_600))
                    al.append((ids.log, location_id, started, finished, "download"))
                    ids.log += 1
            if files:
                for name in rng.sample(FILE_NAMES, 1 + int(random_() * 3)):
                    size = None if name.endswith("/") else int(random_() * 10**10)
                    md5 = None if size is None else f"{rng.getrandbits(128):032x}"
                    rp.append((ids.path, item_id, name, size, md5, 8 * 1024 * 1024))
                    ids.path += 1
        yield batch


# -- writing --------------------------------------------------------------


def _secondary_indexes(database: pw.Database) -> list[tuple[str, str]]:
    """(name, DDL) of every secondary index on the tables we load."""
    tables = list(TABLES)
    if is_postgres(database):
        cursor = database.execute_sql(
            "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x"
            " JOIN pg_class c ON c.oid = x.indexrelid"
            " JOIN pg_class t ON t.oid = x.indrelid"
            " WHERE t.relnamespace = current_schema()::regnamespace AND t.relname = ANY(%s)"
            " AND NOT x.indisprimary"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)"
            " ORDER BY c.relname",
            (tables,),
        )
    else:
        marks = ", ".join("?" for _ in tables)
        cursor = database.execute_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            f" AND tbl_name IN ({marks}) ORDER BY name",
            tables,
        )
    return [(name, ddl) for name, ddl in cursor.fetchall()]


def _foreign_keys(database: pw.Database) -> list[tuple[str, str, str]]:
    """(table, name, definition) of the foreign keys on the tables we load (PostgreSQL)."""
    if not is_postgres(database):
        # SQLite checks a foreign key with one primary-key lookup; cheap enough.
        return []
    cursor = database.execute_sql(
        "SELECT t.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k"
        " JOIN pg_class t ON t.oid = k.conrelid"
        " WHERE k.contype = 'f' AND t.relnamespace = current_schema()::regnamespace"
        " AND t.relname = ANY(%s) ORDER BY t.relname, k.conname",
        (list(TABLES),),
    )
    return [(table, name, definition) for table, name, definition in cursor.fetchall()]


def _copy_text(rows: list[tuple[Any, ...]]) -> io.StringIO:
    """Rows in PostgreSQL's COPY text format (our values hold no tab, newline or backslash)."""
    buffer = io.StringIO()
    write = buffer.write
    for row in rows:
        write("\t".join(r"\N" if value is None else str(value) for value in row))
        write("\n")
    buffer.seek(0)
    return buffer


def _write_postgres(database: pw.Database, batch: Batch) -> None:
    cursor = database.connection().cursor()
    with database.atomic():
        for table in TABLES:
            rows = batch.rows[table]
            if rows:
                columns = ", ".join(COLUMNS[table])
                cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", _copy_text(rows))


def _sqlite_value(value: Any) -> Any:
    # str(datetime) is datetime.isoformat(" "): exactly how peewee stores a
    # DateTimeField in SQLite ('.ffffff' only when there are microseconds).
    return str(value) if isinstance(value, datetime) else value


def _write_sqlite(database: pw.Database, batch: Batch) -> None:
    connection = database.connection()
    with database.atomic():
        for table in TABLES:
            rows = batch.rows[table]
            if rows:
                columns = COLUMNS[table]
                marks = ", ".join("?" for _ in columns)
                connection.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                    [tuple(map(_sqlite_value, row)) for row in rows],
                )


def count_items(database: pw.Database) -> int:
    """Items already in the catalog."""
    return int(database.execute_sql("SELECT COUNT(*) FROM file_storage").fetchone()[0])


def populate(
    url: str,
    *,
    items: int,
    seed: int = DEFAULT_SEED,
    files: bool = False,
    shuffle_keys: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Create the schema at ``url`` and fill it; returns seconds per phase."""
    timings: dict[str, float] = {}
    began = time.perf_counter()
    database = open_database(url)
    database.connect()
    try:
        migrate(database)
        if count_items(database):
            raise SystemExit(f"error: {url}: the catalog is not empty; use a fresh database")
        postgres = is_postgres(database)
        if not postgres:
            # A synthetic load can be redone: skip the fsyncs.
            database.execute_sql("PRAGMA synchronous = OFF")
        timings["schema"] = time.perf_counter() - began

        mark = time.perf_counter()
        indexes = _secondary_indexes(database)
        # PostgreSQL checks foreign keys with a trigger per row, which makes
        # COPY several times slower; one ADD CONSTRAINT afterwards validates
        # them all in a single join.
        foreign_keys = _foreign_keys(database)
        with database.atomic():
            for table, name, _ in foreign_keys:
                database.execute_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            for name, _ in indexes:
                database.execute_sql(f'DROP INDEX "{name}"')
        write = _write_postgres if postgres else _write_sqlite
        counts = dict.fromkeys(TABLES, 0)
        generating = 0.0
        produced = generate(items, seed=seed, files=files, shuffle_keys=shuffle_keys)
        while True:
            tick = time.perf_counter()
            batch = next(produced, None)
            generating += time.perf_counter() - tick
            if batch is None:
                break
            write(database, batch)
            for table in TABLES:
                counts[table] += len(batch.rows[table])
        timings["rows"] = time.perf_counter() - mark
        # A producer thread does not help: COPY reads its input through the
        # GIL, and building the rows holds it.
        timings["rows: of which generating"] = generating

        mark = time.perf_counter()
        for _, ddl in indexes:
            database.execute_sql(ddl)
        for table, name, definition in foreign_keys:
            database.execute_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        timings["indexes and constraints"] = time.perf_counter() - mark

        mark = time.perf_counter()
        if postgres:
            for table in TABLES:
                # Ids were given explicitly; later inserts must not collide.
                database.execute_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST((SELECT MAX(id) FROM {table}), 1))"
                )
            database.execute_sql(f"VACUUM ANALYZE {', '.join(TABLES)}")
        else:
            database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        timings["finish"] = time.perf_counter() - mark
    finally:
        database.close()
    timings["total"] = time.perf_counter() - began
    log(
        "generated "
        + ", ".join(f"{counts[table]:,} {table}" for table in TABLES)
        + f" (seed {seed}{', keys shuffled' if shuffle_keys else ''})"
    )
    return timings


def main(argv: list[str] | None = None) -> int:
    """Command line: generate the catalog and print how long each phase took."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database", required=True, metavar="URL", help="sqlite:/// or postgresql://"
    )
    parser.add_argument("--items", required=True, type=int, metavar="N", help="number of items")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default 1)")
    parser.add_argument(
        "--files", action="store_true", help="also add 1-3 referenced paths per item"
    )
    parser.add_argument(
        "--shuffle-keys",
        action="store_true",
        help="give items their keys in random order (key order is then not id order)",
    )
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be at least 1")
    timings = populate(
        args.database,
        items=args.items,
        seed=args.seed,
        files=args.files,
        shuffle_keys=args.shuffle_keys,
    )
    for phase, seconds in timings.items():
        print(f"  {phase:<26} {seconds:8.1f} s")
    rate = args.items / timings["total"]
    print(f"generation took {timings['total']:.1f} s ({rate:,.0f} items/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
