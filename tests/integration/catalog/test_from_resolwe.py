"""``import --from-resolwe``: a Resolwe database read as import items, then imported.

The source is a real PostgreSQL database with the original's schema, laid
out with every awkward case by ``tests/resolwe_db.py``, which also says
what a correct import makes of it (``fill_awkward``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
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


# -- catch-up keeps this catalog's knowledge; a wrong source is refused ------

_BYTES = b"reads of a sample\n"
_MD5 = hashlib.md5(_BYTES).hexdigest()


def two_copies(
    tmp_path: Path,
    source: str,
    *,
    delete: dict[str, Any] | None = None,
    database: str | None = None,
) -> Cli:
    """A Resolwe FileStorage copied on ``local`` and ``archive`` (both folders here, the
    bytes there), imported into a catalog (``database``, default SQLite) configured
    with both: ``archive`` with the ``delete`` rule."""
    size = len(_BYTES)
    with ResolweDb(source) as db:
        process = db.process("upload-fastq-single", "data:reads:fastq:single:")
        fs = db.file_storage(datetime(2025, 1, 1, tzinfo=UTC))
        db.data("reads-1", process, fs)
        local = db.location(fs, "local", last_update=datetime(2025, 1, 2, tzinfo=UTC))
        archive = db.location(fs, "archive", last_update=datetime(2025, 1, 3, tzinfo=UTC))
        db.files([local, archive], {"path": "reads.fastq.gz", "size": size, "md5": _MD5})
    for connector in ("local", "archive"):
        folder = tmp_path / connector / str(fs)
        folder.mkdir(parents=True)
        (folder / "reads.fastq.gz").write_bytes(_BYTES)
    archive_config: dict[str, Any] = {"priority": 10, "path": str(tmp_path / "archive")}
    if delete is not None:
        archive_config["delete"] = delete
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "database": database or f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
                "connectors": {
                    "local": {
                        "connector": "local",
                        "config": {
                            "priority": 0,
                            "path": str(tmp_path / "local"),
                            "public_url": "/pub",
                        },
                    },
                    "archive": {"connector": "local", "config": archive_config},
                },
            }
        )
    )
    cli = Cli(config)
    cli.ok("import", "--from-resolwe", source)
    return cli


def resolwe_sql(source: str, query: str) -> None:
    with psycopg2.connect(source) as connection, connection.cursor() as cursor:
        cursor.execute(query)
    connection.close()


def drop_archive_copy(source: str) -> None:
    """At the source, the archive copies go as Resolwe removes one: links, then the row."""
    resolwe_sql(
        source,
        "DELETE FROM storage_referencedpath_storage_locations WHERE storagelocation_id IN"
        " (SELECT id FROM storage_storagelocation WHERE connector_name = 'archive');"
        " DELETE FROM storage_storagelocation WHERE connector_name = 'archive'",
    )


def lock_every_copy(source: str) -> None:
    """News of every item at the source: a lock on each of its copies."""
    resolwe_sql(
        source,
        "INSERT INTO storage_accesslog (storage_location_id, started, reason)"
        " SELECT id, now(), 'Manager data transfer' FROM storage_storagelocation",
    )


def copies(cli: Cli, key: str) -> dict[str, dict[str, Any]]:
    shown = json.loads(cli.ok("show", key, "--json").out)
    return {location["connector"]: location for location in shown["locations"]}


def test_a_catch_up_does_not_bring_back_as_a_copy_one_this_catalog_deleted(
    tmp_path: Path, source: str, catalog: str
) -> None:
    cli = two_copies(tmp_path, source, delete={"delay": 0, "min_other_copies": 1}, database=catalog)
    cli.ok("run", "--once")  # the archive copy goes, by the policy
    assert set(copies(cli, "resolwe:1")) == {"local"}
    assert not (tmp_path / "archive" / "1" / "reads.fastq.gz").exists()
    # Resolwe, which does not know, uses its local copy as an input meanwhile.
    resolwe_sql(
        source,
        "INSERT INTO storage_accesslog (storage_location_id, started, reason)"
        " SELECT id, now(), 'Input for data with id 9' FROM storage_storagelocation"
        " WHERE connector_name = 'local'",
    )
    assert json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)["updated"] == 1
    found = copies(cli, "resolwe:1")
    assert found["local"]["locks"]  # the news of the source is taken
    assert found.get("archive", {}).get("status") != "OK"  # not a copy: its bytes are gone
    counted = json.loads(cli.ok("status", "--json").out)["locations"].get("archive", {})
    assert counted.get("OK", 0) == 0


def test_a_catch_up_takes_a_copy_made_again_at_the_source_after_ours_went_as_unproven(
    tmp_path: Path, source: str
) -> None:
    cli = two_copies(tmp_path, source, delete={"delay": 0, "min_other_copies": 1})
    cli.ok("run", "--once")
    assert set(copies(cli, "resolwe:1")) == {"local"}
    # Resolwe copies to the archive again (a new row, written later than our delete).
    resolwe_sql(source, "UPDATE storage_storagelocation SET last_update = now() + interval '1 s'")
    cli.ok("import", "--from-resolwe", source)
    archive = copies(cli, "resolwe:1")["archive"]
    assert archive["status"] == "DM"  # named again, not counted until proven
    (tmp_path / "archive" / "1").mkdir(exist_ok=True)
    (tmp_path / "archive" / "1" / "reads.fastq.gz").write_bytes(_BYTES)
    assert json.loads(cli.ok("verify", "resolwe:1", "--json").out)
    assert copies(cli, "resolwe:1")["archive"]["status"] == "OK"  # proven: a copy again


def test_a_catch_up_never_moves_a_last_access_recorded_here_back(
    tmp_path: Path, source: str
) -> None:
    cli = two_copies(tmp_path, source)
    before = copies(cli, "resolwe:1")["local"]["last_access"]
    assert cli.ok("url", "resolwe:1", "reads.fastq.gz").out.strip() == "/pub/1/reads.fastq.gz"
    read_here = copies(cli, "resolwe:1")["local"]["last_access"]
    assert read_here > before
    # At the source, something else of the item changes (a lock on the archive copy).
    resolwe_sql(
        source,
        "INSERT INTO storage_accesslog (storage_location_id, started, reason)"
        " SELECT id, now(), 'Manager data transfer' FROM storage_storagelocation"
        " WHERE connector_name = 'archive'",
    )
    assert json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)["updated"] == 1
    found = copies(cli, "resolwe:1")
    assert found["archive"]["locks"]
    assert found["local"]["last_access"] == read_here


def test_another_resolwe_database_is_refused_not_taken_for_the_same_items(
    tmp_path: Path, source: str, awkward: dict[str, Any]
) -> None:
    cli = Cli(write_config(tmp_path))
    cli.ok("import", "--from-resolwe", source)
    before = cli.ok("export", "--format", "jsonl").out
    with new_postgres_database("resolwe_other") as other:
        create_schema(other)
        # Another installation (a staging copy, a test one): its FileStorages have
        # the same ids, made at other times, and no Data points to them.
        with ResolweDb(other) as db:
            for _ in awkward["file_storage_ids"].values():
                db.file_storage(datetime(2026, 2, 1, tzinfo=UTC))
        line = cli("import", "--from-resolwe", other).error_line
    assert "resolwe:1" in line and "another" in line
    assert cli.ok("export", "--format", "jsonl").out == before  # none removed, none changed


def test_an_empty_resolwe_database_changes_nothing(
    tmp_path: Path, source: str, awkward: dict[str, Any], fresh_postgres_url: str
) -> None:
    cli = Cli(write_config(tmp_path))
    cli.ok("import", "--from-resolwe", source)
    before = cli.ok("export", "--format", "jsonl").out
    with new_postgres_database("resolwe_empty") as empty:
        create_schema(empty)
        outcome = json.loads(cli.ok("import", "--from-resolwe", empty, "--json").out)
    assert (outcome["created"], outcome["updated"], outcome["unchanged"]) == (0, 0, 0)
    assert cli.ok("export", "--format", "jsonl").out == before


def test_a_copy_resolwe_deleted_is_no_longer_claimed_after_a_catch_up(
    tmp_path: Path, source: str, catalog: str
) -> None:
    cli = two_copies(tmp_path, source, database=catalog)
    assert copies(cli, "resolwe:1")["archive"]["status"] == "OK"
    # Resolwe's own delete: the files go, then the location row and its links.
    (tmp_path / "archive" / "1" / "reads.fastq.gz").unlink()
    drop_archive_copy(source)
    assert json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)["updated"] == 1
    assert copies(cli, "resolwe:1")["archive"]["status"] == "DM"  # named, not counted
    counted = json.loads(cli.ok("status", "--json").out)["locations"].get("archive", {})
    assert counted.get("OK", 0) == 0


def test_a_dropped_copy_proven_here_since_stays_counted_through_catch_ups(
    tmp_path: Path, source: str
) -> None:
    cli = two_copies(tmp_path, source)
    # The source drops its archive copy, whose bytes are still there ...
    drop_archive_copy(source)
    cli.ok("import", "--from-resolwe", source)
    assert copies(cli, "resolwe:1")["archive"]["status"] == "DM"
    cli.ok("verify", "resolwe:1", "--connector", "archive")  # its bytes are there: proven
    assert copies(cli, "resolwe:1")["archive"]["status"] == "OK"
    # ... and the next catch-up, with news of the item, leaves it counted.
    lock_every_copy(source)
    assert json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)["updated"] == 1
    found = copies(cli, "resolwe:1")
    assert found["local"]["locks"] and found["archive"]["status"] == "OK"


def test_a_copy_this_catalog_made_survives_a_catch_up(tmp_path: Path, source: str) -> None:
    with ResolweDb(source) as db:
        process = db.process("upload-fastq-single", "data:reads:fastq:single:")
        fs = db.file_storage(datetime(2025, 1, 1, tzinfo=UTC))
        db.data("reads-1", process, fs)
        local = db.location(fs, "local")
        db.files([local], {"path": "reads.fastq.gz", "size": len(_BYTES), "md5": _MD5})
    (tmp_path / "local" / "1").mkdir(parents=True)
    (tmp_path / "local" / "1" / "reads.fastq.gz").write_bytes(_BYTES)
    connectors = {
        "local": {"connector": "local", "config": {"priority": 0, "path": str(tmp_path / "local")}},
        "archive": {
            "connector": "local",
            "config": {"priority": 10, "path": str(tmp_path / "archive"), "copy": {"delay": 0}},
        },
    }
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {"database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}", "connectors": connectors}
        )
    )
    cli = Cli(config)
    cli.ok("import", "--from-resolwe", source)
    cli.ok("run", "--once")  # this catalog's workers copy it to the archive
    assert copies(cli, "resolwe:1")["archive"]["status"] == "OK"
    lock_every_copy(source)
    assert json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)["updated"] == 1
    found = copies(cli, "resolwe:1")
    assert found["local"]["locks"] and found["archive"]["status"] == "OK"


def test_a_catch_up_keeps_hashes_known_here_where_the_source_says_unknown(
    tmp_path: Path, source: str
) -> None:
    with ResolweDb(source) as db:
        process = db.process("upload-fastq-single", "data:reads:fastq:single:")
        fs = db.file_storage(datetime(2025, 1, 1, tzinfo=UTC))
        db.data("reads-1", process, fs)
        db.files([db.location(fs, "local")], {"path": "reads.fastq.gz"})  # size -1, no hash
    folder = tmp_path / "local" / "1"
    folder.mkdir(parents=True)
    (folder / "reads.fastq.gz").write_bytes(_BYTES)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
                "connectors": {
                    "local": {"connector": "local", "config": {"path": str(tmp_path / "local")}}
                },
            }
        )
    )
    cli = Cli(config)
    cli.ok("import", "--from-resolwe", source)
    cli.ok("ingest", "local", str(folder), "--key", "resolwe:1")  # hashed here
    # At the source, news of the item (a lock); its file is still "unknown" there.
    lock_every_copy(source)
    assert json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)["updated"] == 1
    [entry] = json.loads(cli.ok("show", "resolwe:1", "--json").out)["files"]
    assert (entry["size"], entry["md5"]) == (len(_BYTES), _MD5)  # not forgotten
    (folder / "reads.fastq.gz").write_bytes(b"other bytes\n")
    assert cli("verify", "resolwe:1").code == 1  # so other bytes are found out


def test_a_copy_is_not_taken_to_hold_a_file_the_source_does_not_link_to_it(
    tmp_path: Path, source: str, catalog: str
) -> None:
    cli = two_copies(tmp_path, source, database=catalog)
    # At the source, a file added to the item, on its local copy only.
    (tmp_path / "local" / "1" / "notes.txt").write_bytes(_BYTES)
    with ResolweDb(source) as db:
        db.files([1], {"path": "notes.txt", "size": len(_BYTES), "md5": _MD5})  # local is 1
    cli.ok("import", "--from-resolwe", source)
    found = copies(cli, "resolwe:1")
    assert found["local"]["status"] == "OK"
    assert found["archive"]["status"] == "DM"  # it lacks notes.txt: not a copy of the item
    assert found["archive"]["files"]["notes.txt"]["state"] == "bad"
    cli.ok("run", "--once")  # repaired here from the local copy
    assert (tmp_path / "archive" / "1" / "notes.txt").read_bytes() == _BYTES
    assert copies(cli, "resolwe:1")["archive"]["status"] == "OK"
    # A catch-up with news of the item does not undo the repair.
    lock_every_copy(source)
    assert json.loads(cli.ok("import", "--from-resolwe", source, "--json").out)["updated"] == 1
    assert copies(cli, "resolwe:1")["archive"]["status"] == "OK"


def test_a_bad_source_row_is_one_line_naming_it(tmp_path: Path, source: str) -> None:
    with ResolweDb(source) as db:
        process = db.process("upload-fastq-single", "data:reads:fastq:single:")
        fs = db.file_storage(datetime(2025, 1, 1, tzinfo=UTC))
        db.data("reads-1", process, fs)
        local = db.location(fs, "local")
        db.files([local], {"path": "a/../reads.fastq.gz", "size": 3})
    cli = Cli(write_config(tmp_path))
    line = cli("import", "--from-resolwe", source).error_line
    assert (
        line == "error: FileStorage 1.files.0.path: path 'a/../reads.fastq.gz' has a '..' segment"
    )


def test_overlapping_process_type_overrides_are_named_when_the_import_starts(
    tmp_path: Path, source: str, awkward: dict[str, Any]
) -> None:
    overrides = {"data:reads:": {"delay": 2}, "data:reads:fastq:": {"delay": 3}}
    config = write_config(tmp_path)
    settings = json.loads(config.read_text())
    settings["connectors"]["S3"]["config"]["copy"] = {"delay": 1, "process_type": overrides}
    config.write_text(json.dumps(settings))
    outcome = Cli(config).ok("import", "--from-resolwe", source, "--json")
    warnings = [line for line in outcome.err.splitlines() if "overlap" in line]
    assert warnings == [
        "warning: connectors.S3.config.copy.process_type: 'data:reads:' and 'data:reads:fastq:'"
        " overlap: the longest matching key applies here (the original took the first in order)"
    ]
    assert json.loads(outcome.out)["created"] == len(awkward["document"]["items"])
