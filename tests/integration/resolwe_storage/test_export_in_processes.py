"""``export | import`` as users run it, each command in a process of its own.

A catalog that went through what a catalog goes through (real copies, a
verification that found damage, a removal, a read lock, an imported item of
unknown hashes and a folder) is exported, imported into an empty catalog, and
the two catalogs are compared table by table: on SQLite and on PostgreSQL, as
a JSON document and as JSON Lines.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from catalog.database import open_database
from tests.conftest import new_postgres_database
from tests.processes import Cli

LATER = "2030-01-01T00:00:00Z"


def write_config(folder: Path, database: str) -> Path:
    """``local`` (where items are ingested) copied at once to ``archive`` (preferred)."""
    path = folder / "config.json"
    path.write_text(
        json.dumps(
            {
                "database": database,
                "connectors": {
                    "local": {
                        "connector": "local",
                        "config": {"priority": 10, "path": str(folder.parent / "local")},
                    },
                    "archive": {
                        "connector": "local",
                        "config": {
                            "priority": 0,
                            "path": str(folder.parent / "archive"),
                            "copy": {"delay": 0},
                            "verify": {"interval": 30},
                        },
                    },
                },
            }
        )
    )
    return path


@contextlib.contextmanager
def two_catalogs(kind: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The URLs of two empty catalogs of ``kind``."""
    if kind == "sqlite":
        yield (
            f"sqlite:///{tmp_path / 'source.sqlite3'}",
            f"sqlite:///{tmp_path / 'target.sqlite3'}",
        )
        return
    with (
        new_postgres_database("resolwe_storage_export") as source,
        new_postgres_database("resolwe_storage_import") as target,
    ):
        yield source, target


_TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d")


def _time(value: Any) -> Any:
    """A time as SQLite gives it (text) as PostgreSQL does (a datetime); else ``value``."""
    return datetime.fromisoformat(value) if isinstance(value, str) and _TIME.match(value) else value


def tables(url: str) -> dict[str, Any]:
    """The catalog at ``url``, table by table, rows named by what they are (not by their ids)."""
    database = open_database(url)
    database.connect()
    try:

        def rows(query: str) -> list[tuple[Any, ...]]:
            return [
                tuple(_time(value) for value in row)
                for row in database.execute_sql(query).fetchall()
            ]

        return {
            "items": sorted(
                rows(
                    "SELECT key, data_slug, process_type, status, created, removed"
                    " FROM file_storage"
                )
            ),
            "locations": sorted(
                rows(
                    "SELECT f.key, l.connector_name, l.url, l.status, l.last_update,"
                    " l.last_verified FROM storage_location l"
                    " JOIN file_storage f ON f.id = l.file_storage_id"
                )
            ),
            "files": sorted(
                rows(
                    "SELECT f.key, p.path, p.size, p.md5, p.crc32c, p.awss3etag, p.chunk_size"
                    " FROM referenced_path p JOIN file_storage f ON f.id = p.file_storage_id"
                )
            ),
            "open locks": sorted(
                rows(
                    "SELECT f.key, l.connector_name, COUNT(*) FROM access_log a"
                    " JOIN storage_location l ON l.id = a.storage_location_id"
                    " JOIN file_storage f ON f.id = l.file_storage_id"
                    " WHERE a.finished IS NULL AND a.expires IS NULL"
                    " GROUP BY f.key, l.connector_name"
                )
            ),
            "bad files": sorted(
                rows(
                    "SELECT f.key, l.connector_name, p.path, x.problem FROM location_file x"
                    " JOIN storage_location l ON l.id = x.storage_location_id"
                    " JOIN referenced_path p ON p.id = x.referenced_path_id"
                    " JOIN file_storage f ON f.id = l.file_storage_id"
                    " WHERE x.problem IS NOT NULL"
                )
            ),
        }
    finally:
        database.close()


def lived_in(cli: Cli, tmp_path: Path) -> None:
    """Take the catalog of ``cli`` through copies, a damaging verification, a removal..."""
    for key in ("item-a", "item-b", "item-c"):
        folder = tmp_path / "local" / key
        (folder / "sub").mkdir(parents=True)
        (folder / "reads.txt").write_bytes(f"reads of {key}\n".encode() * 100)
        (folder / "sub" / "log.txt").write_bytes(f"log of {key}\n".encode())
        cli.ok("ingest", "local", folder, "--key", key)
    # Only what the ingests made: real copies, each validated.
    outcome = json.loads(cli("run", "--once", "--json").out)
    assert outcome["actions"] == {"copy": {"ok": 3}}, outcome
    # Other bytes on the archive's copy of item-a: a verification finds them.
    (tmp_path / "archive" / "item-a" / "reads.txt").write_bytes(b"X" * 10)
    assert cli("verify", "item-a", "--connector", "archive").code == 1
    cli.ok("remove", "item-c")
    document = tmp_path / "more.json"
    document.write_text(
        json.dumps(
            {
                "items": [
                    {
                        "key": "item-d",
                        "status": "ER",
                        "created": "2026-01-01T00:00:00.123456Z",
                        "locations": [
                            {
                                "connector": "local",
                                "url": "item-d",
                                "last_update": "2026-01-02T00:00:00Z",
                                "last_verified": "2026-01-03T00:00:00Z",
                                "open_access_logs": 2,
                            },
                            {"connector": "archive", "url": "d/item-d", "status": "UP"},
                        ],
                        "files": [
                            {"path": "out/"},
                            {"path": "out/unknown.bin"},
                            {"path": "sized.bin", "size": 7, "chunk_size": 5 << 20},
                        ],
                    }
                ]
            }
        )
    )
    cli.ok("import", document)


@pytest.mark.parametrize("form", ["json", "jsonl"])
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_export_then_import_into_an_empty_catalog_keeps_every_table(
    kind: str, form: str, tmp_path: Path
) -> None:
    with two_catalogs(kind, tmp_path) as (source_url, target_url):
        (tmp_path / "source").mkdir()
        (tmp_path / "target").mkdir()
        source = Cli(write_config(tmp_path / "source", source_url))
        target = Cli(write_config(tmp_path / "target", target_url))
        lived_in(source, tmp_path)
        before = tables(source_url)
        assert [row[:4] for row in before["bad files"]] == [
            ("item-a", "archive", "reads.txt", row[3]) for row in before["bad files"]
        ] and before["bad files"]

        exported = tmp_path / f"catalog.{form}"
        source.ok("export", exported)
        counts = json.loads(target.ok("import", exported, "--json").out)
        assert counts == {"created": 4, "updated": 0, "unchanged": 0}
        assert tables(target_url) == before
        # The same catalog to the user: the same status, the same plan, the same export.
        for args in (("status", "--json"), ("plan", "--json", "--now", LATER)):
            assert json.loads(target.ok(*args).out) == json.loads(source.ok(*args).out), args
        again = tmp_path / f"again.{form}"
        target.ok("export", again)
        assert again.read_text() == exported.read_text()
        # Imported again: nothing changes.
        counts = json.loads(target.ok("import", exported, "--json").out)
        assert counts == {"created": 0, "updated": 0, "unchanged": 4}
        assert tables(target_url) == before
        # And into the catalog it came from (a backup put back): nothing changes there.
        counts = json.loads(source.ok("import", exported, "--json").out)
        assert counts == {"created": 0, "updated": 0, "unchanged": 4}
        assert tables(source_url) == before


def plain(number: int) -> dict[str, Any]:
    return {
        "key": f"item-{number:05d}",
        "created": "2026-01-01T00:00:00Z",
        "locations": [{"connector": "local", "url": f"u/{number}"}],
        "files": [{"path": "a.txt", "size": 1}],
    }


#: Items of a document (three batches and more), and a last one wrong in each way.
LATE_PROBLEMS: dict[str, dict[str, Any] | str] = {
    "an unknown connector": {
        **plain(99999),
        "locations": [{"connector": "elsewhere", "url": "x"}],
    },
    "a damaged file the item lacks": {
        **plain(99999),
        "locations": [{"connector": "local", "url": "x", "status": "DM", "damaged": {"b": "gone"}}],
    },
    "a key seen in the first batch": plain(1),
    "a place of an item of the first batch": {
        **plain(99999),
        "locations": [{"connector": "local", "url": "u/1"}],
    },
    "text cut short": '{"key": "item-99999", "created": "2026-01-01T00:00:00Z", "locati',
}


@pytest.mark.parametrize("problem", list(LATE_PROBLEMS))
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_an_import_with_a_wrong_item_late_in_the_file_stores_nothing(
    kind: str, problem: str, tmp_path: Path
) -> None:
    with two_catalogs(kind, tmp_path) as (url, _):
        (tmp_path / "c").mkdir()
        cli = Cli(write_config(tmp_path / "c", url))
        last = LATE_PROBLEMS[problem]
        lines = [json.dumps(plain(number)) for number in range(1, 4500)]
        lines.append(last if isinstance(last, str) else json.dumps(last))
        document = tmp_path / "items.jsonl"
        document.write_text("\n".join(lines) + "\n")
        outcome = cli("import", document)
        assert outcome.code != 0 and "line 4500" in outcome.error_line, outcome
        after = tables(url)
        assert after["items"] == [] and after["locations"] == [] and after["files"] == []
        # Nothing of it in the history either.
        database = open_database(url)
        database.connect()
        try:
            assert database.execute_sql("SELECT COUNT(*) FROM action").fetchone()[0] == 0
        finally:
            database.close()
