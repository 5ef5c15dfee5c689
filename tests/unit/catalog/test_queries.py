"""Named catalog queries: what each writes, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import uuid
from datetime import datetime

import peewee as pw
import pytest

from catalog.database import bind, migrate, open_database
from catalog.models import FileStorage, LocationFile, ReferencedPath, StorageLocation
from catalog.queries import locations_at, mark_files_to_delete
from tests.conftest import POSTGRES_ADMIN_URL, server_missing

EARLIER = datetime(2026, 1, 2, 3, 4, 5, 678901)
NOW = datetime(2026, 3, 4, 5, 6, 7, 123456)


def test_marking_a_copy_s_files_to_delete_gives_a_row_to_each_file_without_one(
    catalog_db: pw.Database,
) -> None:
    item = FileStorage.create(key="item")
    paths = {
        path: ReferencedPath.create(file_storage=item, path=path, size=1)
        for path in ("a.txt", "b/c.txt", "b/", "d.txt")
    }
    other = FileStorage.create(key="other")
    ReferencedPath.create(file_storage=other, path="a.txt", size=1)
    location = StorageLocation.create(file_storage=item, connector_name="x", url="i", status="DE")
    LocationFile.create(
        storage_location=location,
        referenced_path=paths["a.txt"],
        copied=EARLIER,
        validated_by="md5",
    )
    for _ in range(2):  # again: nothing more
        mark_files_to_delete(location.id, item.id, now=NOW)
        rows = {
            row.referenced_path.path: (row.copied, row.validated_by)
            for row in LocationFile.select().where(LocationFile.storage_location == location)
        }
        assert rows == {"a.txt": (EARLIER, "md5"), "b/c.txt": (NOW, ""), "d.txt": (NOW, "")}


@pytest.mark.postgres
def test_urls_under_one_are_found_whatever_the_databases_collation() -> None:
    # In a language's order ``a/x`` comes after ``a0`` (punctuation weighs
    # less than letters): the range ``a/`` to ``a0`` must be read in bytes'.
    admin = open_database(POSTGRES_ADMIN_URL)
    try:
        admin.connect()
    except pw.OperationalError as exc:
        server_missing("PostgreSQL", str(exc).strip().splitlines()[0])
    name = f"resolwe_storage_icu_{uuid.uuid4().hex[:12]}"
    admin.execute_sql(
        f"CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )
    try:
        database = open_database(f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}")
        database.connect()
        migrate(database)
        bind(database)
        for key in ("a/x", "b"):
            item = FileStorage.create(key=key, created=datetime(2026, 1, 1))
            StorageLocation.create(
                file_storage=item,
                connector_name="local",
                url=key,
                status="OK",
                last_update=datetime(2026, 1, 1),
            )
        assert locations_at("local", ["a", "b/c", "ab"]) == [
            ("a", "a/x", "a/x"),
            ("b/c", "b", "b"),
        ]
        # The comparison ``locations_at`` makes, in the index (a scan, were
        # there another way: two rows here).
        database.execute_sql("SET enable_seqscan = off")
        plan = database.execute_sql(
            "EXPLAIN SELECT 1 FROM storage_location WHERE connector_name = 'local'"
            """ AND url COLLATE "C" >= 'a/' AND url COLLATE "C" < 'a0'"""
        ).fetchall()
        assert "storagelocation_connector_name_url" in " ".join(row[0] for row in plan)
        database.close()
    finally:
        admin.execute_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
