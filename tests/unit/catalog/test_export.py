"""Exporting the catalog: what import reads back, field for field, states included."""

from __future__ import annotations

import io
import json
from typing import Any

import peewee as pw
import pytest

from catalog.export import export_items, snapshot, write_items
from catalog.integrity import record_bad, settle
from catalog.models import AccessLog, FileStorage, ReferencedPath, StorageLocation, utcnow
from catalog.streaming import import_items, read_items
from tests.unit.catalog.test_streaming import CONNECTORS, stream_of, variety


def exported(database: pw.Database, form: str = "json", batch: int = 2) -> str:
    out = io.StringIO()
    with snapshot(database):
        write_items(export_items(batch=batch), out, format=form)
    return out.getvalue()


def empty(database: pw.Database) -> None:
    for model in (AccessLog, ReferencedPath, StorageLocation, FileStorage):
        model.delete().execute()


def test_export_then_import_into_an_empty_catalog_gives_the_same_export(
    catalog_db: pw.Database,
) -> None:
    import_items(stream_of(variety("e-")), connectors=CONNECTORS, database=catalog_db)
    # States the catalog reaches by itself: a file found bad by a verification,
    # a lock a reader holds, an item without a key (not exportable).
    location = StorageLocation.get(StorageLocation.url == "e-two")
    path = ReferencedPath.get(ReferencedPath.path == "b.bin")
    record_bad(location.id, [(path.id, "size 9, expected 3")], now=utcnow())
    settle(location.id, now=utcnow())
    AccessLog.create(storage_location=StorageLocation.get(StorageLocation.url == "e-plain"))
    FileStorage.create(key=None, created=utcnow())
    first = exported(catalog_db)
    document = json.loads(first)
    by_key = {item["key"]: item for item in document["items"]}
    assert [item["key"] for item in document["items"]] == sorted(by_key)  # key order
    assert len(by_key) == 6  # the item without a key is left out
    # Removed: the status it keeps, and when.
    assert by_key["e-removed"]["status"] == "OK" and "removed" in by_key["e-removed"]
    two = {loc["connector"]: loc for loc in by_key["e-two-copies-locked"]["locations"]}
    assert two["local"]["status"] == "DM" and two["local"]["damaged"] == {
        "b.bin": "size 9, expected 3"
    }
    assert two["local"]["open_access_logs"] == 2 and two["S3"]["status"] == "UP"
    assert by_key["e-plain"]["locations"][0]["open_access_logs"] == 1
    assert by_key["e-normalized"]["files"][0]["md5"] == "0123456789abcdef0123456789abcdef"

    for form in ("json", "jsonl"):
        text = exported(catalog_db, form)
        empty(catalog_db)
        counts = import_items(
            read_items(io.BytesIO(text.encode()), format=form),
            connectors=CONNECTORS,
            database=catalog_db,
        )
        assert counts.created == 6
        assert exported(catalog_db) == first


def test_an_empty_catalog_exports_an_empty_document(catalog_db: pw.Database) -> None:
    assert json.loads(exported(catalog_db)) == {"items": []}
    assert exported(catalog_db, "jsonl") == ""


@pytest.mark.parametrize("batch", [1, 3, 1000])
def test_every_item_is_exported_once_whatever_the_pages(
    catalog_db: pw.Database, batch: int
) -> None:
    items: list[dict[str, Any]] = [
        {"key": f"k{n:03d}", "created": "2026-01-01T00:00:00Z"} for n in range(7)
    ]
    import_items(stream_of(items), connectors=CONNECTORS, database=catalog_db)
    keys = [item["key"] for item in json.loads(exported(catalog_db, batch=batch))["items"]]
    assert keys == [f"k{n:03d}" for n in range(7)]


def test_an_exported_removal_keeps_its_time_and_the_items_status(
    catalog_db: pw.Database,
) -> None:
    """An item removed 30 days ago (its grace of 7 days over, its copies going) must
    not come back from ``export | import`` removed "now": its grace would start
    again, and ``restore`` would bring back an item whose copies may be half
    deleted. Its producer status (``ER``) must not become ``OK`` either."""
    from datetime import timedelta

    from catalog.queries import writing
    from catalog.removal import RestoreRefused, remove_items, restore_item

    item = {
        "key": "gone",
        "status": "ER",
        "created": "2026-01-01T00:00:00Z",
        "locations": [{"connector": "local", "url": "gone"}],
        "files": [{"path": "a", "size": 1}],
    }
    import_items(stream_of([item]), connectors=CONNECTORS, database=catalog_db)
    long_ago = utcnow() - timedelta(days=30)
    with writing(catalog_db):
        remove_items(["gone"], now=long_ago, actor="test")
    text = exported(catalog_db)
    assert json.loads(text)["items"][0]["status"] == "ER"
    empty(catalog_db)
    import_items(
        read_items(io.BytesIO(text.encode()), format="json"),
        connectors=CONNECTORS,
        database=catalog_db,
    )

    with writing(catalog_db), pytest.raises(RestoreRefused):
        restore_item("gone", now=utcnow(), removal_delay=7, actor="test")
    again = FileStorage.get(FileStorage.key == "gone")
    assert again.status == "ER"
    assert abs(again.removed - long_ago) < timedelta(seconds=1)
    assert exported(catalog_db) == text


def open_locks(url: str) -> list[tuple[str, bool]]:
    """The open locks of the location at ``url``: (reason, whether it ends by itself)."""
    return sorted(
        (log.reason, log.expires is not None)
        for log in AccessLog.select()
        .join(StorageLocation)
        .where((StorageLocation.url == url) & AccessLog.finished.is_null())
    )


def test_a_workers_lock_does_not_come_back_as_a_lock_for_good(catalog_db: pw.Database) -> None:
    """A worker's lock ends by itself (its job's time limit): one whose worker was
    killed is closed by the next scan, one whose job runs by the job. Neither is
    a fact of the catalog to carry into another: imported as a lock that never
    ends, the copy would never be deleted, and ``show`` would give "import" as
    the reason of a lock nobody took."""
    from datetime import timedelta

    item = {
        "key": "copying",
        "created": "2026-01-01T00:00:00Z",
        "locations": [{"connector": "local", "url": "copying", "open_access_logs": 1}],
        "files": [{"path": "a", "size": 1}],
    }
    import_items(stream_of([item]), connectors=CONNECTORS, database=catalog_db)
    source = StorageLocation.get(StorageLocation.url == "copying")
    now = utcnow()
    # A copy from it running, and one whose worker was killed an hour ago.
    AccessLog.create(storage_location=source, reason="copy to S3", expires=now + timedelta(hours=1))
    AccessLog.create(storage_location=source, reason="verify", expires=now - timedelta(hours=1))
    text = exported(catalog_db)
    assert json.loads(text)["items"][0]["locations"][0]["open_access_logs"] == 1
    empty(catalog_db)
    import_items(
        read_items(io.BytesIO(text.encode()), format="json"),
        connectors=CONNECTORS,
        database=catalog_db,
    )
    assert open_locks("copying") == [("import", False)]


def another_connection(database: pw.Database) -> Any:
    """A DB-API connection of its own to the catalog of ``database`` (another process's view)."""
    if isinstance(database, pw.SqliteDatabase):
        import sqlite3

        return sqlite3.connect(database.database, isolation_level=None)
    import psycopg2

    connection = psycopg2.connect(dbname=database.database, **database.connect_params)
    connection.autocommit = True
    return connection


def test_an_export_is_one_snapshot_whatever_commits_meanwhile(catalog_db: pw.Database) -> None:
    """Workers and imports commit while an export pages through the catalog: it
    writes the catalog as it was when it began, each item once, none half changed."""
    items: list[dict[str, Any]] = [
        {
            "key": f"k{n}",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": f"u{n}"}],
            "files": [{"path": "a", "size": 1}],
        }
        for n in range(1, 6)
    ]
    import_items(stream_of(items), connectors=CONNECTORS, database=catalog_db)
    before = exported(catalog_db, batch=1000)
    other = another_connection(catalog_db)
    mark = "?" if isinstance(catalog_db, pw.SqliteDatabase) else "%s"
    out = io.StringIO()
    with snapshot(catalog_db):
        stream = export_items(batch=1)
        first = [next(stream)]
        cursor = other.cursor()
        # Meanwhile: a copy's status changes, an item goes, keys come before and after.
        cursor.execute(f"UPDATE storage_location SET status = 'DE' WHERE url = {mark}", ["u4"])
        cursor.execute(f"DELETE FROM file_storage WHERE key = {mark}", ["k3"])
        for key in ("k0", "k35", "k9"):
            cursor.execute(
                "INSERT INTO file_storage (key, data_slug, process_type, status, created)"
                f" VALUES ({mark}, '', '', 'OK', {mark})",
                [key, "2026-01-01 00:00:00"],
            )
        cursor.execute(
            f"UPDATE file_storage SET key = {mark} WHERE key = {mark}", ["k0-was-k5", "k5"]
        )
        write_items([*first, *stream], out)
    other.close()
    assert out.getvalue() == before
