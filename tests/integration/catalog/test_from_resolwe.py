"""``import --from-resolwe``: a Resolwe database read as import items, then imported.

The source is a real PostgreSQL database with the original's schema, laid
out with every awkward case by ``tests/resolwe_db.py``, which also says
what a correct import makes of it (``fill_awkward``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from catalog.database import open_database
from catalog.resolwe import Skipped, connector_map, resolwe_items
from tests.conftest import new_postgres_database
from tests.processes import Cli
from tests.resolwe_db import TABLES, ResolweDb, create_schema, fill_awkward, fill_generated

pytestmark = pytest.mark.postgres


@pytest.fixture
def source(fresh_postgres_url: str) -> str:
    create_schema(fresh_postgres_url)
    return fresh_postgres_url


@pytest.fixture
def awkward(source: str) -> dict[str, Any]:
    with ResolweDb(source) as db:
        return fill_awkward(db)


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the source, to show that an import changed nothing there."""
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        found = {}
        for table in TABLES:
            cursor.execute(f"SELECT * FROM {table} ORDER BY id")
            found[table] = cursor.fetchall()
    connection.close()
    return found


def test_every_awkward_case_reads_as_the_rules_say(source: str, awkward: dict[str, Any]) -> None:
    skipped = Skipped()
    names = connector_map({}, dict.fromkeys(awkward["connectors"]))
    read = [item for _, item in resolwe_items(source, connectors=names, skipped=skipped, page=3)]
    assert read == awkward["document"]["items"]
    assert skipped.first == awkward["skipped_locations"][:5]
    assert sum(skipped.counts.values()) == len(awkward["skipped_locations"])


def test_connector_names_are_mapped_to_ours(source: str, awkward: dict[str, Any]) -> None:
    names = connector_map({"S3": "archive"}, {"local": None, "archive": None})
    read = [item for _, item in resolwe_items(source, connectors=names)]
    connectors = {loc["connector"] for item in read for loc in item["locations"]}
    assert connectors == {"local", "archive"}


def write_config(folder: Path, **extra: Any) -> Path:
    config = folder / "config.json"
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{folder / 'catalog.sqlite3'}",
                "connectors": {
                    "local": {"connector": "local", "config": {"priority": 0, "path": "local"}},
                    "S3": {"connector": "s3", "config": {"priority": 10, "bucket": "data"}},
                },
                **extra,
            }
        )
    )
    return config


@pytest.fixture(params=["sqlite", "postgres"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The catalog's URL: SQLite, or a PostgreSQL database of its own (read on a second thread)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
        return
    with new_postgres_database("resolwe_storage_catalog") as url:
        yield url


def test_the_command_imports_a_resolwe_database_read_only_and_catches_up(
    tmp_path: Path, source: str, awkward: dict[str, Any], catalog: str
) -> None:
    cli = Cli(write_config(tmp_path, database=catalog))
    before = dump(source)
    outcome = cli.ok("import", "--from-resolwe", source, "--json")
    report = json.loads(outcome.out)
    expected = awkward["document"]["items"]
    assert report["created"] == len(expected) and report["skipped_locations"] == {"legacy-nfs": 1}
    assert "legacy-nfs" in outcome.err  # said on stderr too
    assert dump(source) == before  # read only
    exported = [json.loads(line) for line in cli.ok("export", "--format", "jsonl").out.splitlines()]
    assert sorted(item["key"] for item in exported) == sorted(item["key"] for item in expected)
    removed = {item["key"] for item in expected if item["status"] == "removed"}
    assert {item["key"] for item in exported if "removed" in item} == removed
    # Again: nothing new, nothing changed; then a new FileStorage is caught up.
    again = json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, len(expected))
    fill_generated(source, 3, seed=1)
    later = json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)
    assert later["created"] == 3 and later["unchanged"] == len(expected)


def test_a_catch_up_keeps_what_happened_here_to_what_did_not_change_there(
    tmp_path: Path, source: str, awkward: dict[str, Any], catalog: str
) -> None:
    cli = Cli(write_config(tmp_path, database=catalog))
    cli.ok("import", "--from-resolwe", source)
    expected = awkward["document"]["items"]
    gone, moved = [item for item in expected if item["locations"]][:2]

    def accesses(key: str) -> list[str]:
        return [
            loc["last_access"] for loc in json.loads(cli.ok("show", key, "--json").out)["locations"]
        ]

    before = accesses(moved["key"])
    # Here, one item's copies went (a delete by the policies, say) ...
    here = open_database(catalog)
    here.execute_sql(
        "DELETE FROM storage_location WHERE file_storage_id ="
        f" (SELECT id FROM file_storage WHERE key = {here.param})",
        (gone["key"],),
    )
    here.close()
    # ... and there, another item's copy was used again.
    with psycopg2.connect(source) as connection, connection.cursor() as cursor:
        cursor.execute(
            "UPDATE storage_storagelocation SET last_update = last_update + interval '1 day'"
            " WHERE file_storage_id = %s",
            (int(moved["key"].removeprefix("resolwe:")),),
        )
    connection.close()
    again = json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 1, len(expected) - 1)
    assert accesses(gone["key"]) == []  # not brought back: the source says nothing new of it
    after = accesses(moved["key"])
    assert len(after) == len(before) and after != before


def test_a_file_and_from_resolwe_together_are_refused(tmp_path: Path) -> None:
    cli = Cli(write_config(tmp_path))
    line = cli("import", "x.json", "--from-resolwe", "postgresql://nowhere/x").error_line
    assert line == "error: import: give a FILE (or - for standard input) or --from-resolwe DSN"


def test_a_database_that_is_not_resolwes_is_one_line_without_its_password(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    cli = Cli(write_config(tmp_path))
    line = cli("import", "--from-resolwe", fresh_postgres_url).error_line
    assert 'relation "storage_filestorage" does not exist' in line
    secret = "postgresql://someone:s3cret@127.0.0.1:1/resolwe"
    line = cli("import", "--from-resolwe", secret).error_line
    assert line.startswith("error: --from-resolwe postgresql://someone:") and "s3cret" not in line
