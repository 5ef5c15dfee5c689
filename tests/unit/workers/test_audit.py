"""The consistency audit on local folders and a real catalog (SQLite and PostgreSQL)."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import peewee as pw
import pytest

from catalog.integrity import lost_files
from catalog.models import (
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
    utcnow,
)
from connectors.base import ObjectInfo
from connectors.errors import BackendUnavailable
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from workers.audit import audit_connector

NOW = datetime(2026, 6, 1)
FILES = {"reads.fastq": b"ACGT\n" * 50, "sub/log.txt": b"log"}


def add_item(folder: LocalConnector, key: str, *, status: str = "OK") -> FileStorage:
    """An item whose files lie in ``folder`` under ``key``, its copy there ``status``."""
    item = FileStorage.create(key=key, created=NOW - timedelta(days=10))
    for path, data in FILES.items():
        hashes = hash_stream(io.BytesIO(data))
        ReferencedPath.create(
            file_storage=item, path=path, size=len(data), md5=hashes.md5, crc32c=hashes.crc32c
        )
        folder.write(f"{key}/{path}", io.BytesIO(data))
    ReferencedPath.create(file_storage=item, path="sub/")  # a folder: no object
    StorageLocation.create(file_storage=item, connector_name=folder.name, url=key, status=status)
    return item


def status_of(key: str) -> str:
    return StorageLocation.get(StorageLocation.url == key).status


def aged(path: Path, days: float) -> None:
    moment = time.time() - days * 86400
    os.utime(path, (moment, moment))


@pytest.fixture
def folder(tmp_path: Path) -> LocalConnector:
    return LocalConnector("local", path=tmp_path / "local")


def test_a_whole_connector_is_quiet(catalog_db: pw.Database, folder: LocalConnector) -> None:
    for key in ("a", "a-b", "a.b", "a/nested-is-odd", "b"):  # keys that sort oddly
        add_item(folder, key)
    report = audit_connector(folder, catalog_db, now=NOW)
    assert (report.objects, report.expected) == (10, 10)
    assert (report.lost, report.mismatched, report.dark) == (0, 0, 0)
    assert report.ok and Action.select().count() == 0


def test_missing_and_changed_files_damage_their_copies_and_dark_ones_are_reported(
    catalog_db: pw.Database, folder: LocalConnector, tmp_path: Path
) -> None:
    for key in ("one", "two", "three", "four"):
        add_item(folder, key)
    root = tmp_path / "local"
    (root / "one" / "reads.fastq").unlink()  # lost
    (root / "two" / "sub" / "log.txt").write_bytes(b"logs")  # another size
    (root / "three" / "extra.bin").write_bytes(b"x" * 7)  # dark, under an item's folder
    (root / "stray").mkdir()
    (root / "stray" / "old.tmp").write_bytes(b"y" * 5)  # dark, under nothing
    findings: list[dict[str, object]] = []
    report = audit_connector(folder, catalog_db, now=NOW, found=findings.append)
    assert (report.lost, report.mismatched, report.dark, report.dark_bytes) == (1, 1, 2, 12)
    assert (report.objects, report.expected) == (9, 8)
    assert not report.ok and sorted(report.damaged_items) == ["one", "two"]
    assert (status_of("one"), status_of("two"), status_of("three")) == ("DM", "DM", "OK")
    problems = {row.referenced_path.path: row.problem for row in LocationFile.select()}
    assert problems["reads.fastq"].startswith("missing")
    assert problems["sub/log.txt"] == "size 4, the catalog says 3 (audit)"
    history = Action.select().where(Action.actor == "audit")
    assert sorted((row.item_key, row.result) for row in history) == [
        ("one", "damaged"),
        ("two", "damaged"),
    ]
    kinds = sorted((f["kind"], f["key"]) for f in findings)
    assert kinds == [
        ("dark", "stray/old.tmp"),
        ("dark", "three/extra.bin"),
        ("lost", "one/reads.fastq"),
        ("mismatched", "two/sub/log.txt"),
    ]
    [under] = [f["under"] for f in findings if f["key"] == "three/extra.bin"]
    assert under == {"url": "three", "item": "three", "status": "OK", "locked": False}
    # Their only copies: what is bad on them is good nowhere, LOST (said loudly).
    one, two = (FileStorage.get(FileStorage.key == key).id for key in ("one", "two"))
    assert lost_files() == {one: ["reads.fastq"], two: ["sub/log.txt"]}


def test_what_a_second_look_does_not_confirm_is_not_recorded(
    catalog_db: pw.Database, folder: LocalConnector
) -> None:
    """A listing that missed an object (written meanwhile) concludes nothing: stat says."""
    add_item(folder, "one")

    class Missing(LocalConnector):
        def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
            return (info for info in super().list(prefix) if info.path != "one/reads.fastq")

    blind = Missing("local", path=folder.root)
    report = audit_connector(blind, catalog_db, now=NOW)
    assert (report.lost, report.mismatched) == (0, 0)
    assert status_of("one") == "OK" and LocationFile.select().count() == 0


def test_copies_under_way_are_not_judged(catalog_db: pw.Database, folder: LocalConnector) -> None:
    add_item(folder, "copying", status="UP")
    add_item(folder, "deleting", status="DE")
    os.remove(folder.root / "copying" / "reads.fastq")
    os.remove(folder.root / "deleting" / "reads.fastq")
    report = audit_connector(folder, catalog_db, now=NOW)
    assert (report.lost, report.mismatched, report.dark, report.expected) == (0, 0, 0, 0)


def test_dark_objects_go_only_when_asked_old_enough_and_not_in_motion(
    catalog_db: pw.Database, folder: LocalConnector, tmp_path: Path
) -> None:
    root = tmp_path / "local"
    add_item(folder, "kept")
    add_item(folder, "locked")
    add_item(folder, "moving", status="UP")
    AccessLog.create(storage_location=StorageLocation.get(StorageLocation.url == "locked"))
    for where, days in [
        ("stray/old", 30),
        ("stray/young", 1),
        ("kept/old", 30),
        ("locked/old", 30),
        ("moving/old", 30),
    ]:
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_bytes(b"d")
        aged(root / where, days)
    report = audit_connector(folder, catalog_db, now=utcnow())
    assert (report.dark, report.dark_deleted) == (5, 0)  # reported, never removed unasked
    report = audit_connector(
        folder, catalog_db, now=utcnow(), delete_dark_before=utcnow() - timedelta(days=7)
    )
    assert (report.dark, report.dark_deleted, report.dark_kept) == (5, 2, 3)
    left = {info.path for info in folder.list()}
    assert {"stray/young", "locked/old", "moving/old"} <= left
    assert not {"stray/old", "kept/old"} & left
    removed = Action.select().where(Action.action == "delete dark")
    assert sorted(row.path for row in removed) == ["kept/old", "stray/old"]
    assert status_of("kept") == "OK"  # its own files untouched


def test_a_dark_object_where_a_copy_began_during_the_removals_is_kept(
    catalog_db: pw.Database, folder: LocalConnector, tmp_path: Path
) -> None:
    """The removals of a batch take a request each; the scan may place a copy meanwhile.

    That copy's job would take the object already there, with the right
    hashes, as its own: asked about again just before its removal, it stays.
    """
    root = tmp_path / "local"
    for where in ("a-first/old", "b-later/reads.fastq"):
        (root / where).parent.mkdir(parents=True, exist_ok=True)
        (root / where).write_bytes(FILES["reads.fastq"])
        aged(root / where, 30)

    class CopyPlacedMeanwhile(LocalConnector):
        def delete(self, path: str, *, within: str = "") -> None:
            super().delete(path, within=within)
            if path == "a-first/old":  # the scan reserves a copy at b-later now
                item = FileStorage.create(key="b", created=NOW)
                StorageLocation.create(
                    file_storage=item, connector_name="local", url="b-later", status="PR"
                )

    racing = CopyPlacedMeanwhile("local", path=folder.root)
    report = audit_connector(
        racing, catalog_db, now=utcnow(), delete_dark_before=utcnow() - timedelta(days=7)
    )
    assert (report.dark, report.dark_deleted, report.dark_kept) == (2, 1, 1)
    assert (root / "b-later" / "reads.fastq").exists()
    assert not (root / "a-first" / "old").exists()


@pytest.mark.parametrize("url", ["late", "late/"])
def test_an_object_catalogued_while_the_audit_ran_is_not_dark_nor_removed(
    catalog_db: pw.Database, folder: LocalConnector, tmp_path: Path, url: str
) -> None:
    """The pass saw no record of it; by the time it would go, an import registered it.

    At a url written with a trailing ``/`` too, as the pass itself reads it.
    """
    add_item(folder, "kept")
    late = tmp_path / "local" / "late" / "reads.fastq"
    late.parent.mkdir(parents=True)
    late.write_bytes(FILES["reads.fastq"])
    aged(late, 30)

    class ImportMeanwhile(LocalConnector):
        def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
            yield from super().list(prefix)
            add_item_record("late")  # the listing is done: the catalog changes now

    def add_item_record(key: str) -> None:
        item = FileStorage.create(key=key, created=NOW)
        ReferencedPath.create(file_storage=item, path="reads.fastq", size=len(FILES["reads.fastq"]))
        StorageLocation.create(file_storage=item, connector_name="local", url=url, status="OK")

    racing = ImportMeanwhile("local", path=folder.root)
    report = audit_connector(
        racing, catalog_db, now=utcnow(), delete_dark_before=utcnow() - timedelta(days=7)
    )
    assert (report.dark, report.dark_deleted) == (0, 0)
    assert late.exists()


def test_a_backend_that_stops_answering_concludes_nothing(
    catalog_db: pw.Database, folder: LocalConnector, tmp_path: Path
) -> None:
    """The listing lacks a file; asked again, the backend does not answer: nothing is recorded."""
    add_item(folder, "one")
    (tmp_path / "local" / "one" / "reads.fastq").unlink()

    class Down(LocalConnector):
        def stat(self, path: str) -> ObjectInfo | None:
            raise BackendUnavailable(f"{self.name}: the store does not answer")

    with pytest.raises(BackendUnavailable):
        audit_connector(Down("local", path=folder.root), catalog_db, now=NOW)
    assert status_of("one") == "OK"
    assert LocationFile.select().count() == 0 and Action.select().count() == 0


def test_a_connector_whose_root_is_not_there_concludes_nothing(
    catalog_db: pw.Database, folder: LocalConnector, tmp_path: Path
) -> None:
    """The volume of the connector's root is not mounted: it lists nothing, and
    every object is "no such file". That is the backend out of reach: nothing is
    recorded lost."""
    add_item(folder, "one")
    folder.root.rename(tmp_path / "unmounted")
    with pytest.raises(BackendUnavailable, match="root"):
        audit_connector(folder, catalog_db, now=NOW)
    assert status_of("one") == "OK"
    assert LocationFile.select().count() == 0 and Action.select().count() == 0


def test_a_file_of_which_a_new_version_came_meanwhile_is_not_recorded_bad(
    catalog_db: pw.Database, folder: LocalConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The producer wrote a new version of ``reads.fastq`` and registers it while the
    audit runs: after the audit judged the file against the old size, before it
    records. What it found is no evidence about the new version, which this copy,
    the only one, holds: recording it would call the file lost."""
    from catalog.streaming import import_document
    from workers import audit

    add_item(folder, "one")
    new = b"ACGT\n" * 60
    (folder.root / "one" / "reads.fastq").write_bytes(new)
    files = [
        {"path": path, "size": len(data), "md5": hash_stream(io.BytesIO(data)).md5}
        for path, data in {**FILES, "reads.fastq": new}.items()
    ]
    document = {
        "items": [
            {
                "key": "one",
                "created": (NOW - timedelta(days=10)).isoformat(),
                "locations": [{"connector": "local", "url": "one", "status": "OK"}],
                "files": [*files, {"path": "sub/"}],
            }
        ]
    }
    locked = audit.locked_item

    def registered_first(item_id: int):  # type: ignore[no-untyped-def]
        import_document(document, connectors={"local"}, database=catalog_db)
        return locked(item_id)

    monkeypatch.setattr(audit, "locked_item", registered_first)
    report = audit_connector(folder, catalog_db, now=NOW)

    assert report.mismatched == 0
    assert status_of("one") == "OK" and lost_files() == {}
