"""Migrations applied to a catalog that already holds items made by the earlier ones.

Migration 006 (integrity) is applied to a catalog at 005 holding imported
copies, copies made by the workers, a verification that found a file bad,
copies under way, and history; on SQLite and on a new PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest
from peewee_migrate import Router

from catalog.database import MIGRATIONS_DIR, bind, migrate, open_database
from catalog.integrity import lost_files
from catalog.models import Action, LocationFile, StorageLocation
from tests.conftest import new_postgres_database

BEFORE_INTEGRITY = "005_file_verification"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pw.Database]:
    """An empty database of each engine, not migrated."""
    if request.param == "sqlite":
        database = open_database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
        database.connect()
        yield database
        database.close()
        return
    with new_postgres_database("resolwe_storage_migrate") as url:
        database = open_database(url)
        database.connect()
        yield database
        database.close()


def sql(database: pw.Database, text: str, *params: object) -> list[tuple[object, ...]]:
    text = text.replace("?", database.param)
    cursor = database.execute_sql(text, params)
    return cursor.fetchall() if cursor.description else []


def old_catalog(database: pw.Database) -> dict[str, int]:
    """What a catalog at migration 005 holds, written as that version's code wrote it."""
    Router(database, migrate_dir=MIGRATIONS_DIR).run(BEFORE_INTEGRITY)
    assert not database.table_exists("location_file") or "problem" not in {
        column.name for column in database.get_columns("location_file")
    }
    ids: dict[str, int] = {}
    for key in ("imported", "copied", "found-bad", "only-bad", "under-way"):
        sql(
            database,
            "INSERT INTO file_storage (key, data_slug, process_type, status, created)"
            " VALUES (?, '', '', 'OK', '2026-01-01 00:00:00')",
            key,
        )
        ids[key] = int(sql(database, "SELECT id FROM file_storage WHERE key = ?", key)[0][0])
        for path in ("a.txt", "b.txt"):
            sql(
                database,
                "INSERT INTO referenced_path (file_storage_id, path, size, crc32c, chunk_size)"
                " VALUES (?, ?, 1, '00000000', 8388608)",
                ids[key],
                path,
            )

    def location(key: str, connector: str, status: str, verified: str | None = None) -> int:
        sql(
            database,
            "INSERT INTO storage_location"
            " (file_storage_id, connector_name, url, status, last_update, last_verified)"
            " VALUES (?, ?, ?, ?, '2026-01-02 00:00:00', ?)",
            ids[key],
            connector,
            key,
            status,
            verified,
        )
        return int(
            sql(
                database,
                "SELECT id FROM storage_location WHERE file_storage_id = ? AND connector_name = ?",
                ids[key],
                connector,
            )[0][0]
        )

    def row(location_id: int, key: str, path: str, verified: str | None) -> None:
        (path_id,) = sql(
            database,
            "SELECT id FROM referenced_path WHERE file_storage_id = ? AND path = ?",
            ids[key],
            path,
        )[0]
        sql(
            database,
            "INSERT INTO location_file"
            " (storage_location_id, referenced_path_id, copied, validated_by, verified)"
            " VALUES (?, ?, '2026-01-03 00:00:00', 'crc32c', ?)",
            location_id,
            path_id,
            verified,
        )

    def failed_verify(key: str, connector: str) -> None:
        sql(
            database,
            "INSERT INTO action (started, actor, action, item_key, file_storage_id, target,"
            " result, error) VALUES ('2026-01-04 00:00:00', 'worker', 'verify', ?, ?, ?,"
            " 'failed', 'b.txt: crc32c 11111111, catalog says 00000000')",
            key,
            ids[key],
            connector,
        )

    # Imported, never verified (no rows), and imported with a verification time.
    location("imported", "local", "OK")
    location("imported", "S3", "OK", "2026-01-10 00:00:00")
    # Copied by a worker: both files proven; one verified since.
    copied = location("copied", "S3", "OK")
    row(copied, "copied", "a.txt", "2026-01-05 00:00:00")
    row(copied, "copied", "b.txt", None)
    location("copied", "local", "OK")
    # A verification found b.txt bad: its verified time cleared, the copy left OK.
    location("found-bad", "local", "OK")
    bad = location("found-bad", "S3", "OK")
    row(bad, "found-bad", "a.txt", "2026-01-04 00:00:00")
    row(bad, "found-bad", "b.txt", None)
    failed_verify("found-bad", "S3")
    # The only copy, found bad by a verification.
    only = location("only-bad", "local", "OK")
    failed_verify("only-bad", "local")
    sql(
        database,
        "INSERT INTO location_file"
        " (storage_location_id, referenced_path_id, copied, validated_by, verified)"
        " SELECT ?, id, '2026-01-03 00:00:00', 'crc32c', '2026-01-04 00:00:00'"
        " FROM referenced_path WHERE file_storage_id = ? AND path = 'a.txt'",
        only,
        ids["only-bad"],
    )
    # A copy under way, one file recorded.
    location("under-way", "local", "OK")
    under_way = location("under-way", "S3", "UP")
    row(under_way, "under-way", "a.txt", None)
    return ids


def test_integrity_migration_on_a_catalog_holding_items(fresh: pw.Database) -> None:
    ids = old_catalog(fresh)
    actions_before = sql(fresh, "SELECT COUNT(*) FROM action")[0][0]

    applied = migrate(fresh)
    assert applied[0] == "006_integrity"
    bind(fresh)

    def state(key: str, connector: str) -> tuple[str, dict[str, tuple[str, str | None]]]:
        location = StorageLocation.get(
            (StorageLocation.file_storage == ids[key])
            & (StorageLocation.connector_name == connector)
        )
        rows = {
            lf.referenced_path.path: (lf.validated_by, lf.problem)
            for lf in LocationFile.select().where(LocationFile.storage_location == location)
        }
        return str(location.status), rows

    # An imported copy counts as before: its files as the import asserted them.
    assert state("imported", "local") == ("OK", {})
    imported_s3 = StorageLocation.get(
        (StorageLocation.file_storage == ids["imported"]) & (StorageLocation.connector_name == "S3")
    )
    assert str(imported_s3.last_verified) == "2026-01-10 00:00:00"
    # A copy made and proven by a worker is as it was.
    assert state("copied", "S3") == ("OK", {"a.txt": ("crc32c", None), "b.txt": ("crc32c", None)})
    # The file a verification found bad is suspect: the copy is damaged, to be repaired.
    status, rows = state("found-bad", "S3")
    assert status == "DM"
    assert rows["a.txt"] == ("crc32c", None)
    assert rows["b.txt"][1] is not None and rows["b.txt"][1].startswith("suspect")
    # The only copy, found bad: lost, said loudly, not deleted. Its file
    # without a row (an imported copy: the bad one was never recorded) is suspect.
    status, rows = state("only-bad", "local")
    assert status == "DM" and rows["a.txt"] == ("crc32c", None)
    assert rows["b.txt"][1] is not None and rows["b.txt"][1].startswith("suspect")
    assert lost_files() == {ids["only-bad"]: ["b.txt"]}
    # A copy under way is left to its jobs.
    assert state("under-way", "S3") == ("UP", {"a.txt": ("crc32c", None)})
    # Nothing of the history went.
    assert Action.select().count() == actions_before
