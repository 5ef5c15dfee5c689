"""The integrity model (SPEC §3): per-file state, damaged copies, lost files, new versions.

Every test runs on SQLite and on PostgreSQL, through the import document as
a producer uses it, and the catalog functions the workers call.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import peewee as pw
import pytest

from catalog.errors import ImportDocumentError
from catalog.integrity import (
    NOT_COPIED,
    STALE,
    bad_files,
    content_changed,
    good_holders,
    lost_files,
    record_bad,
    record_good,
    settle,
)
from catalog.models import FileStorage, LocationFile, ReferencedPath, StorageLocation
from catalog.streaming import ImportResult, import_document

CONNECTORS = frozenset({"local", "S3", "GCS"})
NOW = datetime(2026, 6, 1, 12, 0)
OLD = {"size": 3, "md5": "0" * 32, "crc32c": "0" * 8}
NEW = {"size": 4, "md5": "1" * 32, "crc32c": "1" * 8}


def document(*locations: dict[str, Any], files: list[dict[str, Any]] | None = None) -> Any:
    files = files if files is not None else [{"path": "a.txt", **OLD}, {"path": "b.txt", **OLD}]
    return {
        "items": [
            {
                "key": "item",
                "created": "2026-01-01T00:00:00Z",
                "locations": list(locations),
                "files": files,
            }
        ]
    }


def ok(connector: str, **more: Any) -> dict[str, Any]:
    return {"connector": connector, "url": "item", "status": "OK", **more}


def run(database: pw.Database, doc: Any) -> ImportResult:
    return import_document(doc, connectors=CONNECTORS, database=database)


def where(connector: str) -> StorageLocation:
    return StorageLocation.get(StorageLocation.connector_name == connector)


def path_id(path: str) -> int:
    return ReferencedPath.get(ReferencedPath.path == path).id


def problems(connector: str) -> dict[str, str | None]:
    rows = (
        LocationFile.select(LocationFile, ReferencedPath)
        .join(ReferencedPath)
        .where(LocationFile.storage_location == where(connector))
    )
    return {row.referenced_path.path: row.problem for row in rows}


def test_an_imported_copy_holds_every_file_as_asserted(catalog_db: pw.Database) -> None:
    run(catalog_db, document(ok("local"), ok("S3", last_verified="2026-02-01T00:00:00Z")))
    # Nothing to record per file: the import asserts them, and they count.
    assert LocationFile.select().count() == 0
    assert {where(name).status for name in ("local", "S3")} == {"OK"}
    assert bad_files(where("S3").id) == []
    # Never verified, unless the document says when.
    assert where("local").last_verified is None
    assert where("S3").last_verified == datetime(2026, 2, 1)
    # A verification of some files keeps the copy as old as its least recently verified.
    s3 = where("S3")
    record_good(s3.id, [(path_id("a.txt"), "crc32c")], now=NOW, verified_at=NOW)
    assert settle(s3.id, now=NOW) == "OK" and where("S3").last_verified == datetime(2026, 2, 1)
    record_good(s3.id, [(path_id("b.txt"), "crc32c")], now=NOW, verified_at=NOW)
    settle(s3.id, now=NOW)
    assert where("S3").last_verified == NOW


def test_a_file_found_bad_makes_the_copy_damaged_and_good_again_ok(
    catalog_db: pw.Database,
) -> None:
    run(catalog_db, document(ok("local"), ok("S3")))
    s3 = where("S3")
    record_bad(s3.id, [(path_id("a.txt"), "missing")], now=NOW)
    assert settle(s3.id, now=NOW) == "DM"
    assert [(bad.path, bad.problem) for bad in bad_files(s3.id)] == [("a.txt", "missing")]
    assert LocationFile.get(LocationFile.problem == "missing").problem_found == NOW

    record_good(s3.id, [(path_id("a.txt"), "crc32c")], now=NOW, verified_at=NOW)
    assert settle(s3.id, now=NOW) == "OK"
    assert bad_files(s3.id) == []
    # b.txt was never verified there (nor the copy, says its import): not verified as a whole.
    assert where("S3").last_verified is None
    record_good(s3.id, [(path_id("b.txt"), "crc32c")], now=NOW, verified_at=NOW)
    settle(s3.id, now=NOW)
    assert where("S3").last_verified == NOW


def test_a_file_good_nowhere_is_lost_and_holders_are_known(catalog_db: pw.Database) -> None:
    run(catalog_db, document(ok("local"), ok("S3")))
    local, s3 = where("local"), where("S3")
    a, b = path_id("a.txt"), path_id("b.txt")
    record_bad(local.id, [(a, "missing")], now=NOW)
    settle(local.id, now=NOW)
    # The copy on S3 counts: nothing is lost.
    assert lost_files() == {}
    assert good_holders(local.file_storage_id, [a, b], exclude=local.id) == {a: [s3], b: [s3]}
    record_bad(s3.id, [(b, "size 2, catalog says 3")], now=NOW)
    settle(s3.id, now=NOW)
    # Both damaged, each file good on one of them: still nothing lost.
    assert lost_files() == {}
    assert good_holders(local.file_storage_id, [a, b]) == {a: [s3], b: [local]}
    record_bad(s3.id, [(a, "missing")], now=NOW)
    settle(s3.id, now=NOW)
    assert lost_files() == {local.file_storage_id: ["a.txt"]}


def test_a_new_version_makes_the_other_copies_stale(catalog_db: pw.Database) -> None:
    run(catalog_db, document(ok("local"), ok("S3")))
    # A copy under way on GCS, one file of it recorded already.
    gcs = StorageLocation.create(
        file_storage=FileStorage.get(), connector_name="GCS", url="item", status="UP"
    )
    LocationFile.create(storage_location=gcs, referenced_path=path_id("a.txt"), validated_by="x")

    changed = [{"path": "a.txt", **NEW}, {"path": "b.txt", **OLD}]
    assert run(catalog_db, document(ok("local"), files=changed)) == ImportResult(updated=1)
    # The document says local holds the new version: it does, and only it.
    assert where("local").status == "OK" and set(problems("local").values()) == {None}
    assert where("S3").status == "DM"
    assert problems("S3") == {"a.txt": STALE}
    # The copy under way forgets the old bytes: they are copied again.
    assert problems("GCS") == {} and where("GCS").status == "UP"
    # Importing the same again changes nothing.
    assert run(catalog_db, document(ok("local"), files=changed)) == ImportResult(unchanged=1)


def test_a_new_file_is_missing_from_the_copies_the_document_does_not_name(
    catalog_db: pw.Database,
) -> None:
    run(catalog_db, document(ok("local"), ok("S3")))
    more = [{"path": "a.txt", **OLD}, {"path": "b.txt", **OLD}, {"path": "c.txt", **NEW}]
    run(catalog_db, document(ok("local"), files=more))
    assert where("local").status == "OK"
    assert where("S3").status == "DM" and problems("S3")["c.txt"] == NOT_COPIED


def test_a_new_version_that_no_copy_holds_is_lost(catalog_db: pw.Database) -> None:
    run(catalog_db, document(ok("local")))
    changed = [{"path": "a.txt", **NEW}, {"path": "b.txt", **OLD}]
    run(catalog_db, document(files=changed))
    assert where("local").status == "DM"
    assert lost_files() == {where("local").file_storage_id: ["a.txt"]}


def test_an_etag_of_another_part_size_is_not_a_new_version(catalog_db: pw.Database) -> None:
    first = [{"path": "a.txt", **OLD, "awss3etag": "2" * 32 + "-2", "chunk_size": 1024}]
    run(catalog_db, document(ok("local"), ok("S3"), files=first))
    again = [{"path": "a.txt", **OLD, "awss3etag": "3" * 32 + "-1", "chunk_size": 4096}]
    assert run(catalog_db, document(ok("local"), files=again)) == ImportResult(updated=1)
    assert where("S3").status == "OK"


def test_reimporting_an_old_document_does_not_make_a_damaged_copy_count(
    catalog_db: pw.Database,
) -> None:
    doc = document(ok("local"), ok("S3"))
    run(catalog_db, doc)
    s3 = where("S3")
    record_bad(s3.id, [(path_id("b.txt"), "missing")], now=NOW)
    settle(s3.id, now=NOW)
    assert run(catalog_db, doc) == ImportResult(unchanged=1)
    assert where("S3").status == "DM" and problems("S3")["b.txt"] == "missing"


def test_a_damaged_copy_is_importable(catalog_db: pw.Database) -> None:
    damaged = {"connector": "S3", "url": "item", "status": "DM", "damaged": {"b.txt": "missing"}}
    run(catalog_db, document(ok("local"), damaged))
    assert where("S3").status == "DM"
    assert problems("S3") == {"b.txt": "missing"}
    assert run(catalog_db, document(ok("local"), damaged)) == ImportResult(unchanged=1)


@pytest.mark.parametrize(
    ("location", "complaint"),
    [
        ({"status": "DM"}, "a damaged location (DM) names its damaged files"),
        ({"status": "OK", "damaged": {"a.txt": "x"}}, "only a damaged location"),
        ({"status": "DM", "damaged": {"zzz.txt": "x"}}, "'zzz.txt' is not a file of the item"),
        ({"status": "DM", "damaged": {"../a": "x"}}, "'..' segment"),
    ],
)
def test_bad_damaged_locations_are_refused_and_store_nothing(
    catalog_db: pw.Database, location: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ImportDocumentError, match=re.escape(complaint)):
        run(catalog_db, document({"connector": "S3", "url": "item", **location}))
    assert FileStorage.select().count() == 0


@pytest.mark.parametrize("field", ["key", "data_slug", "process_type", "status"])
def test_a_nul_in_an_items_text_is_one_clear_error(catalog_db: pw.Database, field: str) -> None:
    doc = document(ok("local"))
    doc["items"][0][field] = "a\x00b"
    with pytest.raises(ImportDocumentError, match=rf"items\.0\.{field}: .*NUL character"):
        run(catalog_db, doc)
    assert FileStorage.select().count() == 0


def test_content_changed_forgets_files_of_copies_under_way(catalog_db: pw.Database) -> None:
    run(catalog_db, document(ok("local")))
    item = FileStorage.get()
    copy = StorageLocation.create(file_storage=item, connector_name="S3", url="i", status="PR")
    LocationFile.create(storage_location=copy, referenced_path=path_id("b.txt"), validated_by="x")
    content_changed(
        item.id, [path_id("b.txt")], asserted={where("local").id}, problem=STALE, now=NOW
    )
    assert problems("S3") == {} and where("local").status == "OK"


FIVE = [{"path": name, **OLD} for name in ("a.txt", "b.txt", "c.txt", "d.txt", "e.txt")]
IMPORTED = datetime(2026, 2, 1)


def test_a_file_without_a_row_between_others_keeps_the_copy_as_old_as_the_import(
    catalog_db: pw.Database,
) -> None:
    # The files around it verified later, one after another; the one in the
    # middle only as the import asserted it.
    run(catalog_db, document(ok("S3", last_verified="2026-02-01T00:00:00Z"), files=FIVE))
    s3 = where("S3")
    for minute, name in enumerate(("a.txt", "b.txt", "d.txt", "e.txt")):
        moment = NOW.replace(minute=minute)
        record_good(s3.id, [(path_id(name), "crc32c")], now=moment, verified_at=moment)
        assert settle(s3.id, now=moment) == "OK"
        assert where("S3").last_verified == IMPORTED
        assert not where("S3").files_recorded
    moment = NOW.replace(minute=10)
    record_good(s3.id, [(path_id("c.txt"), "crc32c")], now=moment, verified_at=moment)
    settle(s3.id, now=moment)
    assert where("S3").last_verified == NOW.replace(minute=0)
    assert where("S3").files_recorded
    # Known whole: each verification after moves it on to the oldest file's time.
    later = NOW.replace(hour=13)
    record_good(s3.id, [(path_id("a.txt"), "crc32c")], now=later, verified_at=later)
    settle(s3.id, now=later)
    assert where("S3").last_verified == NOW.replace(minute=1)


def test_a_copy_made_ok_by_an_import_is_not_taken_as_whole(catalog_db: pw.Database) -> None:
    # Once whole, then a copy under way (a file to copy again), then said OK
    # by a document: the file without a row counts as the document says.
    run(catalog_db, document(ok("local"), ok("S3"), files=FIVE))
    s3 = where("S3")
    record_good(s3.id, [(path_id(doc["path"]), "crc32c") for doc in FIVE], now=NOW, verified_at=NOW)
    settle(s3.id, now=NOW)
    assert where("S3").files_recorded and where("S3").last_verified == NOW
    run(catalog_db, document(ok("local"), ok("S3", status="UP"), files=FIVE))
    assert not where("S3").files_recorded
    copied = LocationFile.storage_location == s3.id
    c_txt = LocationFile.referenced_path == path_id("c.txt")
    LocationFile.delete().where(copied & c_txt).execute()
    run(
        catalog_db,
        document(ok("local"), ok("S3", last_verified="2026-02-01T00:00:00Z"), files=FIVE),
    )
    later = NOW.replace(hour=13)
    record_good(s3.id, [(path_id("a.txt"), "crc32c")], now=later, verified_at=later)
    assert settle(s3.id, now=later) == "OK"
    assert where("S3").last_verified == IMPORTED
    assert not where("S3").files_recorded


def test_a_problem_of_any_text_is_recorded_as_said(catalog_db: pw.Database) -> None:
    # Written out, as arrays on PostgreSQL: quotes, backslashes, commas and braces kept.
    run(catalog_db, document(ok("local"), ok("S3")))
    said = "not readable: \"a\\b\", {c}; 'd'"
    record_bad(where("S3").id, [(path_id("a.txt"), said)], now=NOW)
    assert settle(where("S3").id, now=NOW) == "DM"
    assert problems("S3") == {"a.txt": said}
    record_good(where("S3").id, [(path_id("a.txt"), "crc32c")], now=NOW, verified_at=NOW)
    assert settle(where("S3").id, now=NOW) == "OK" and problems("S3") == {"a.txt": None}
