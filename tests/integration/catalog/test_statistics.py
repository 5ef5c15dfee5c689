"""After a bulk import, PostgreSQL's planner knows the catalog's size (``ANALYZE``).

Without statistics the planner takes a lookup of a batch of items by
``file_storage_id`` to match most of the table and scans all of it, batch
after batch: a re-import straight after a large first import took six
times as long as the import itself. Run as users run it: ``import`` in a
process of its own, on a PostgreSQL catalog of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg2
import pytest

from catalog import streaming
from catalog.database import bind, migrate, open_database, planned_files, planned_items
from catalog.queries import locations_at
from catalog.streaming import (
    DEFAULT_ANALYZE_AFTER_FILES,
    DEFAULT_ANALYZE_AFTER_ITEMS,
    import_items,
)
from tests.processes import Cli

pytestmark = pytest.mark.postgres


def items(first: int, count: int) -> str:
    return "".join(
        json.dumps(
            {
                "key": f"item-{number}",
                "created": "2026-01-01T00:00:00Z",
                "locations": [{"connector": "local", "url": f"item-{number}", "status": "OK"}],
                "files": [{"path": f"f{part}.txt", "size": part} for part in range(3)],
            }
        )
        + "\n"
        for number in range(first, first + count)
    )


def analyzed(url: str) -> set[str]:
    """The catalog tables the planner has statistics of."""
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tablename FROM pg_stats WHERE schemaname = 'public'")
        return {name for (name,) in cursor.fetchall()}


def plan_of_a_batch_lookup(url: str) -> str:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "EXPLAIN SELECT path, size FROM referenced_path WHERE file_storage_id = ANY(%s)",
            [list(range(1, 501))],
        )
        return "\n".join(line for (line,) in cursor.fetchall())


def migrated_catalog(tmp_path: Path, url: str) -> Cli:
    """The command line of a migrated catalog at ``url``, with one local connector."""
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "database": url,
                "connectors": {"local": {"connector": "local", "config": {"path": "data"}}},
            }
        )
    )
    cli = Cli(config)
    cli.ok("migrate")
    return cli


def test_a_bulk_import_leaves_statistics_and_a_small_one_does_not_pay_for_them(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    cli = migrated_catalog(tmp_path, fresh_postgres_url)
    small = tmp_path / "small.jsonl"
    small.write_text(items(0, 10))
    cli.ok("import", small)
    assert not analyzed(fresh_postgres_url) & {"referenced_path", "storage_location"}

    bulk = tmp_path / "bulk.jsonl"
    bulk.write_text(items(10, DEFAULT_ANALYZE_AFTER_ITEMS))
    cli.ok("import", bulk)
    assert {"file_storage", "storage_location", "referenced_path"} <= analyzed(fresh_postgres_url)
    assert "Seq Scan" not in plan_of_a_batch_lookup(fresh_postgres_url)


def test_a_long_import_refreshes_them_as_the_catalog_doubles(
    fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "DEFAULT_ANALYZE_AFTER_ITEMS", 100)
    database = open_database(fresh_postgres_url)
    database.connect()
    try:
        migrate(database)
        bind(database)
        seen: list[tuple[int, int]] = []

        def believed(counts: streaming.ImportCounts) -> None:
            # Inside the import's transaction: what the planner now believes.
            (rows,) = database.execute_sql(
                "SELECT reltuples FROM pg_class WHERE relname = 'storage_location'"
            ).fetchone()
            seen.append((counts.created, int(rows)))

        lines = [
            (f"line {n + 1}", json.loads(line)) for n, line in enumerate(items(0, 550).splitlines())
        ]
        import_items(lines, connectors={"local"}, database=database, batch=50, progress=believed)
        refreshed = sorted({rows for _, rows in seen if rows > 0})
        assert refreshed == [100, 200, 400]
        assert planned_items(database) == 550  # and once more before the commit
    finally:
        database.close()


def test_one_item_of_many_files_leaves_statistics_too(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    """A few items, but a table's worth of files: the planner is told of them."""
    cli = migrated_catalog(tmp_path, fresh_postgres_url)
    wide = {
        "key": "wide",
        "created": "2026-01-01T00:00:00Z",
        "locations": [{"connector": "local", "url": "wide", "status": "OK"}],
        "files": [
            {"path": f"f{part}.txt", "size": 1} for part in range(DEFAULT_ANALYZE_AFTER_FILES)
        ],
    }
    (tmp_path / "wide.json").write_text(json.dumps({"items": [wide]}))
    cli.ok("import", tmp_path / "wide.json")
    assert "referenced_path" in analyzed(fresh_postgres_url)
    database = open_database(fresh_postgres_url)
    try:
        assert planned_files(database) == DEFAULT_ANALYZE_AFTER_FILES
    finally:
        database.close()


def test_the_places_of_a_batch_are_looked_up_in_their_index_whatever_the_statistics(
    fresh_postgres_url: str,
) -> None:
    """Each url by its own index lookup: never a read of every location of the connector.

    With ``url = ANY(...)`` and statistics of a catalog of 20,000 locations
    (as a growing import's are, a batch or two behind), the planner read the
    whole table for each batch of 500 places: a tenth of a large import.
    """
    database = open_database(fresh_postgres_url)
    database.connect()
    try:
        migrate(database)
        bind(database)
        database.execute_sql(
            "INSERT INTO file_storage (key, data_slug, process_type, status, created)"
            " SELECT 'item-' || n, 'reads', 'data:', 'OK', now()"
            " FROM generate_series(1, 20000) AS n"
        )
        database.execute_sql(
            "INSERT INTO storage_location (file_storage_id, connector_name, url, status,"
            " last_update) SELECT id, 'local', key, 'OK', now() FROM file_storage"
        )
        database.execute_sql("ANALYZE")
        urls = [f"item-{n}" for n in range(5000, 5500)] + ["nobody-here"]

        def scans() -> int:
            # This connection's counts so far, not yet sent to the server's.
            return database.execute_sql(
                "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = 'storage_location'"
            ).fetchall()[0][0]

        with database.atomic():
            before = scans()
            owners = locations_at("local", urls)
            after = scans()
        assert sorted(owners) == sorted((url, url, url) for url in urls[:-1])
        assert after == before
    finally:
        database.close()
