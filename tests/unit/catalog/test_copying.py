"""A copy job's catalog statements decide under the items' locks, by the catalog as it is then.

The job reads its facts first (``copy_facts``) and copies; whatever changed
meanwhile is judged again when the sources are locked (``start_copies``) and
when the copies are recorded (``record_copies``).
"""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from catalog.copying import (
    Place,
    Proven,
    Record,
    Start,
    copy_facts,
    finish_copies,
    record_copies,
    start_copies,
)
from catalog.integrity import ASSERTED
from catalog.models import (
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
)

NOW = datetime(2026, 6, 1, 12, 0)


def proven_rows() -> pw.ModelSelect:
    """Rows of files copied or verified, not those the set-up asserted (as an import does)."""
    return LocationFile.select().where(LocationFile.validated_by != ASSERTED)


def item_with_copy(key: str, paths: tuple[str, ...] = ("a", "b")) -> FileStorage:
    """An item with ``paths`` on ``src`` (``OK``) and a reserved location on ``dst``."""
    item = FileStorage.create(key=key)
    for path in paths:
        ReferencedPath.create(file_storage=item, path=path, size=1, crc32c="00000000")
    StorageLocation.create(file_storage=item, connector_name="src", url=key, status="OK")
    StorageLocation.create(file_storage=item, connector_name="dst", url=key, status="PR")
    return item


def where(item: FileStorage, connector: str) -> StorageLocation:
    return StorageLocation.get(
        (StorageLocation.file_storage == item) & (StorageLocation.connector_name == connector)
    )


def start(item: FileStorage) -> Start:
    return Start(item.id, where(item, "src").id, where(item, "dst").id, "copy to dst")


def record(item: FileStorage, log_id: int) -> Record:
    facts = copy_facts("dst", [(item.id, ["a", "b"])])[item.id]
    target = where(item, "dst")
    return Record(
        item.id,
        item.key,
        Place(target.id, "dst", target.url, target.status),
        "src",
        [Proven(entry, "crc32c", 1, 3) for entry in facts.entries.values()],
        log_id,
    )


def test_a_copy_started_and_recorded(catalog_db: pw.Database) -> None:
    item = item_with_copy("one")
    logs = start_copies([start(item)], expires=None, now=NOW)
    assert list(logs) == [item.id]
    assert where(item, "dst").status == "UP"
    assert AccessLog.get_by_id(logs[item.id]).finished is None

    assert record_copies([record(item, logs[item.id])], actor="test", now=NOW).items == {item.id}
    assert where(item, "dst").status == "OK"
    assert proven_rows().count() == 2
    assert AccessLog.get_by_id(logs[item.id]).finished == NOW
    assert [(a.item_key, a.path, a.bytes) for a in Action.select()] == [("one", "a and 1 more", 2)]


def test_a_source_no_longer_ok_is_not_locked_and_its_target_not_started(
    catalog_db: pw.Database,
) -> None:
    going, leaving = item_with_copy("going"), item_with_copy("leaving")
    starts = [start(going), start(leaving)]
    where(leaving, "src").update(status="DE").where(
        StorageLocation.id == where(leaving, "src").id
    ).execute()  # a delete marked it after the job read the catalog
    logs = start_copies(starts, expires=None, now=NOW)
    assert list(logs) == [going.id]
    assert where(leaving, "dst").status == "PR"
    assert (
        AccessLog.select().where(AccessLog.storage_location == where(leaving, "src")).count() == 0
    )


def test_a_source_of_another_item_is_not_locked(catalog_db: pw.Database) -> None:
    one, other = item_with_copy("one"), item_with_copy("other")
    crossed = Start(one.id, where(other, "src").id, where(one, "dst").id, "copy to dst")
    assert start_copies([crossed], expires=None, now=NOW) == {}
    assert AccessLog.select().count() == 0
    assert where(one, "dst").status == "PR"


def test_nothing_is_recorded_on_a_target_being_deleted_or_gone(catalog_db: pw.Database) -> None:
    kept, deleting, gone = (item_with_copy(key) for key in ("kept", "deleting", "gone"))
    logs = start_copies([start(kept), start(deleting), start(gone)], expires=None, now=NOW)
    records = [record(item, logs[item.id]) for item in (kept, deleting, gone)]
    StorageLocation.update(status="DE").where(
        StorageLocation.id == where(deleting, "dst").id
    ).execute()
    where(gone, "dst").delete_instance()

    assert record_copies(records, actor="test", now=NOW).items == {kept.id}
    assert [lf.storage_location.id for lf in proven_rows()] == [where(kept, "dst").id] * 2
    assert [a.item_key for a in Action.select()] == ["kept"]
    assert where(deleting, "dst").status == "DE"
    # The sources are unlocked all the same.
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 0


def test_a_record_for_a_location_of_another_item_is_refused(catalog_db: pw.Database) -> None:
    one, other = item_with_copy("one"), item_with_copy("other")
    logs = start_copies([start(one)], expires=None, now=NOW)
    target = where(other, "dst")
    crossed = record(one, logs[one.id])._replace(target=Place(target.id, "dst", target.url, "PR"))
    assert record_copies([crossed], actor="test", now=NOW).items == set()
    assert proven_rows().count() == 0
    assert where(other, "dst").status == "PR"


def test_a_copy_becomes_ok_with_its_last_file_whichever_end_of_the_paths_it_is(
    catalog_db: pw.Database,
) -> None:
    # The check for a whole copy looks at the paths from the last one (a copy's
    # jobs go in path order): a file missing at the other end still holds it back.
    paths = (*(f"f{n:02d}" for n in range(12)), "folder/")
    for missing in ("f00", "f05", "f11"):
        item = item_with_copy(f"item-{missing}", paths)
        target = where(item, "dst")
        for entry in ReferencedPath.select().where(ReferencedPath.file_storage == item):
            if entry.path not in (missing, "folder/"):  # a folder has no bytes to record
                LocationFile.create(
                    storage_location=target, referenced_path=entry, validated_by="crc32c"
                )
        assert finish_copies([target.id], now=NOW, touch=False) == set()
        assert where(item, "dst").status == "PR", f"{missing} is not recorded"
        entry = ReferencedPath.get(
            (ReferencedPath.file_storage == item) & (ReferencedPath.path == missing)
        )
        bad = LocationFile.create(
            storage_location=target, referenced_path=entry, validated_by="crc32c", problem="size"
        )
        assert finish_copies([target.id], now=NOW, touch=False) == set(), "a bad record is none"
        bad.delete_instance()
        LocationFile.create(storage_location=target, referenced_path=entry, validated_by="crc32c")
        assert finish_copies([target.id], now=NOW, touch=False) == {target.id}
        assert where(item, "dst").status == "OK"
