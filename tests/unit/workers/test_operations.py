"""Copy and delete jobs against a real catalog (SQLite and PostgreSQL) and real folders."""

from __future__ import annotations

import io
import os
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from catalog.errors import LocationConflictError
from catalog.integrity import (
    ASSERTED,
    bad_files,
    lost_files,
    record_bad,
    settle,
)
from catalog.models import (
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
)
from catalog.queries import (
    LOCATION_EXISTS,
    RESERVED,
    URL_TAKEN,
    reserve_location,
    reserve_locations,
)
from catalog.removal import remove_items
from catalog.settings import pause_deletes
from connectors import local as local_module
from connectors.base import Connector
from connectors.errors import BackendUnavailable, ChecksumMismatch, InvalidPath, ObjectNotFound
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from workers.operations import (
    ALREADY_THERE,
    COPIED,
    DELETED,
    FILES_DELETED,
    GONE,
    NOT_WANTED,
    REFUSED,
    DeleteCheck,
    ItemChangedError,
    NoSourceError,
    close_access_log,
    copy_item_file,
    copy_item_files,
    copy_items,
    delete_files,
    delete_location,
    finish_location,
    open_access_log,
    remove_location,
    repair_location,
    verify_item_files,
)

NOW = datetime(2026, 6, 1)


def proven_rows() -> pw.ModelSelect:
    """Rows of files copied or verified, not those the set-up asserted (as an import does)."""
    return LocationFile.select().where(LocationFile.validated_by != ASSERTED)


PREFERENCE = ("local", "backup", "archive", "cold")


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, LocalConnector]:
    return {name: LocalConnector(name, path=tmp_path / name) for name in PREFERENCE}


def make_item(
    folders: dict[str, LocalConnector],
    *,
    key: str = "item-1",
    files: dict[str, bytes] | None = None,
    on: tuple[str, ...] = ("local",),
) -> FileStorage:
    """An item whose files lie, with their hashes in the catalog, on each of ``on``."""
    files = {"reads.fastq": os.urandom(3000), "sub/log.txt": b"log"} if files is None else files
    item = FileStorage.create(key=key, created=NOW - timedelta(days=30))
    for path, data in files.items():
        hashes = hash_stream(io.BytesIO(data))
        ReferencedPath.create(
            file_storage=item,
            path=path,
            size=len(data),
            md5=hashes.md5,
            crc32c=hashes.crc32c,
            awss3etag=hashes.awss3etag,
        )
    for name in on:
        location = StorageLocation.create(
            file_storage=item,
            connector_name=name,
            url=key,
            status="OK",
            last_update=NOW - timedelta(days=20),
        )
        for path, data in files.items():
            folders[name].write(f"{location.url}/{path}", io.BytesIO(data))
    return item


def location(item: FileStorage, name: str) -> StorageLocation | None:
    return StorageLocation.get_or_none(
        (StorageLocation.file_storage == item) & (StorageLocation.connector_name == name)
    )


def copy(item: FileStorage, target: str, path: str, folders: dict[str, LocalConnector]) -> str:
    return copy_item_file(
        item.id, target, path, connectors=folders.__getitem__, preference=PREFERENCE
    )


def open_locks() -> int:
    return AccessLog.select().where(AccessLog.finished.is_null()).count()


# -- copies ----------------------------------------------------------------------


def test_a_location_is_ok_only_when_every_file_is_copied_and_proven(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders)
    assert reserve_location(item.id, "backup", url=item.key) is not None
    assert location(item, "backup").status == "PR"

    assert copy(item, "backup", "reads.fastq", folders) == COPIED
    assert location(item, "backup").status == "UP"
    assert proven_rows().count() == 1

    assert copy(item, "backup", "sub/log.txt", folders) == COPIED
    assert location(item, "backup").status == "OK"
    for entry in ReferencedPath.select():
        with folders["backup"].open_read(f"item-1/{entry.path}") as stream:
            assert hash_stream(stream).md5 == entry.md5
    assert open_locks() == 0
    copies = Action.select().where(Action.action == "copy")
    assert sorted((a.source, a.target, a.path, a.result) for a in copies) == [
        ("local", "backup", "reads.fastq", "ok"),
        ("local", "backup", "sub/log.txt", "ok"),
    ]


def test_small_files_share_a_job_one_lock_and_one_record(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    files = {f"part-{n}": os.urandom(100 + n) for n in range(6)}
    item = make_item(folders, files=files)
    reserve_location(item.id, "backup", url=item.key)

    report = copy_item_files(
        item.id, "backup", sorted(files), connectors=folders.__getitem__, preference=PREFERENCE
    )

    assert (report.copied, report.already_there, report.outcome) == (6, 0, COPIED)
    assert location(item, "backup").status == "OK"
    assert proven_rows().count() == 6
    # The source was locked once for the whole job, and is unlocked.
    assert AccessLog.select().count() == 1
    assert open_locks() == 0
    # One line of history for the job: its files, their bytes.
    [action] = Action.select().where(Action.action == "copy")
    assert (action.path, action.result) == ("part-0 and 5 more", "ok")
    assert action.bytes == sum(len(data) for data in files.values())
    assert action.started is not None and action.duration_ms is not None
    for path, data in files.items():
        with folders["backup"].open_read(f"item-1/{path}") as stream:
            assert stream.read() == data


def test_a_failed_file_keeps_the_ones_before_and_a_retry_carries_on(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path
) -> None:
    files = {"a": b"aaa", "b": b"bbb", "c": b"ccc"}
    item = make_item(folders, files=files)
    reserve_location(item.id, "backup", url=item.key)
    hidden = tmp_path / "b"
    (tmp_path / "local" / "item-1" / "b").rename(hidden)
    lookup = folders.__getitem__

    with pytest.raises(ObjectNotFound):
        copy_item_files(
            item.id, "backup", ["a", "b", "c"], connectors=lookup, preference=PREFERENCE
        )
    recorded = (
        proven_rows()
        .select(LocationFile, ReferencedPath)
        .join(ReferencedPath)
        .where(LocationFile.storage_location == location(item, "backup"))
    )
    assert [entry.referenced_path.path for entry in recorded] == ["a"]
    assert location(item, "backup").status == "UP"
    assert open_locks() == 0
    failed = Action.get(Action.result == "failed")
    assert failed.path == "b" and "does not exist" in failed.error
    # The source was found without b: damaged, until a verification finds it whole again.
    assert location(item, "local").status == "DM"

    hidden.rename(tmp_path / "local" / "item-1" / "b")
    verify_item_files(item.id, "local", ["b"], connectors=lookup, now=NOW)
    assert location(item, "local").status == "OK"
    report = copy_item_files(
        item.id, "backup", ["a", "b", "c"], connectors=lookup, preference=PREFERENCE
    )
    assert (report.copied, report.already_there) == (2, 1)
    assert location(item, "backup").status == "OK"


@pytest.mark.parametrize("look_first", [True, False])
def test_files_already_there_are_kept_when_looked_for_and_wrong_ones_rewritten(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path, look_first: bool
) -> None:
    files = {"good": b"good bytes", "bad": b"right bytes", "new": b"new"}
    item = make_item(folders, files=files)
    reserve_location(item.id, "backup", url=item.key)
    # As if a worker died after writing two files, before recording them.
    folders["backup"].write("item-1/good", io.BytesIO(b"good bytes"))
    folders["backup"].write("item-1/bad", io.BytesIO(b"wrong bytes"))
    good = (tmp_path / "backup" / "item-1" / "good").stat().st_ino

    report = copy_item_files(
        item.id,
        "backup",
        ["bad", "good", "new"],
        connectors=folders.__getitem__,
        preference=PREFERENCE,
        look_first=look_first,
    )

    assert report.copied == 3 and location(item, "backup").status == "OK"
    # Looked for, the good file is kept; without looking, every file is written again.
    kept = (tmp_path / "backup" / "item-1" / "good").stat().st_ino == good
    assert kept is look_first
    for path, data in files.items():
        assert (tmp_path / "backup" / "item-1" / path).read_bytes() == data


def test_files_whose_common_prefix_ends_in_a_dot_are_looked_for_and_copied(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """ "item-1/.bashrc" and "item-1/.profile" share "item-1/.": a listing prefix, not a path.

    Listed as it is, the connector refuses it (a '.' segment) and the copy
    fails for good, before any I/O: the item is never copied.
    """
    files = {".bashrc": b"one", ".profile": b"two"}
    item = make_item(folders, files=files)
    reserve_location(item.id, "backup", url=item.key)
    report = copy_item_files(
        item.id,
        "backup",
        sorted(files),
        connectors=folders.__getitem__,
        preference=PREFERENCE,
        look_first=True,
    )
    assert report.copied == 2 and location(item, "backup").status == "OK"


def test_a_duplicate_job_finds_its_file_recorded_and_does_nothing(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"aaa"})
    reserve_location(item.id, "backup", url=item.key)
    assert copy(item, "backup", "a", folders) == COPIED
    assert copy(item, "backup", "a", folders) == NOT_WANTED  # already OK
    assert proven_rows().count() == 1
    assert Action.select().where(Action.action == "copy").count() == 1


def test_a_redelivered_job_after_the_record_finishes_the_location(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"aaa"})
    target = reserve_location(item.id, "backup", url=item.key)
    entry = ReferencedPath.get()
    # As if the worker died after recording the file but before the location became OK.
    LocationFile.create(storage_location=target, referenced_path=entry, validated_by="crc32c")
    assert copy(item, "backup", "a", folders) == ALREADY_THERE
    assert location(item, "backup").status == "OK"


def test_an_item_without_files_is_finished_by_the_finish_job(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={})
    reserve_location(item.id, "backup", url=item.key)
    assert finish_location(item.id, "backup") is True
    assert location(item, "backup").status == "OK"


def test_the_scan_reserves_a_location_once(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders)
    assert reserve_location(item.id, "backup", url=item.key) is not None
    assert reserve_location(item.id, "backup", url=item.key) is None
    other = make_item(folders, key="item-2", on=())
    with pytest.raises(LocationConflictError, match="backup: url 'item-1'"):
        reserve_location(other.id, "backup", url="item-1")


def test_a_copy_is_not_reserved_inside_or_around_another_items_location(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """A copy goes to the source's url on the target; where another item lies inside
    or around that url there, the two would share files (a copy of one would write
    over the other's), so none is reserved: ``url overlaps``."""
    from catalog.queries import URL_OVERLAPS

    inner = make_item(folders, key="inner", on=())
    StorageLocation.create(file_storage=inner, connector_name="backup", url="a/b", status="OK")
    outer = make_item(folders, key="outer", on=())
    StorageLocation.create(file_storage=outer, connector_name="backup", url="c", status="OK")
    around, inside, beside = (make_item(folders, key=k, on=()) for k in ("x", "y", "z"))
    with catalog_db.atomic():
        outcomes = reserve_locations(
            [
                (around.id, "backup", "a"),  # around inner's a/b
                (inside.id, "backup", "c/d"),  # inside outer's c
                (beside.id, "backup", "a-b"),  # beside: shares nothing
            ]
        )
    assert outcomes == [URL_OVERLAPS, URL_OVERLAPS, RESERVED]
    assert [
        loc.file_storage_id
        for loc in StorageLocation.select().where(StorageLocation.status == "PR")
    ] == [beside.id]
    with pytest.raises(LocationConflictError, match="backup: url 'a' lies around item 'inner'"):
        reserve_location(around.id, "backup", url="a")


def test_the_scan_reserves_many_locations_in_one_go(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    first = make_item(folders)
    second = make_item(folders, key="item-2", on=())
    third = make_item(folders, key="item-3", on=())
    reserve_location(first.id, "backup", url="item-1")
    with catalog_db.atomic():
        outcomes = reserve_locations(
            [
                (first.id, "backup", "item-1"),  # reserved before
                (second.id, "backup", "item-1"),  # first's url
                (third.id, "backup", "item-3"),
                (second.id, "archive", "item-2"),
            ]
        )
    assert outcomes == [LOCATION_EXISTS, URL_TAKEN, RESERVED, RESERVED]
    reserved = StorageLocation.select().where(StorageLocation.status == "PR")
    assert sorted((loc.file_storage_id, loc.connector_name) for loc in reserved) == [
        (first.id, "backup"),
        (second.id, "archive"),
        (third.id, "backup"),
    ]


def test_a_copy_not_wanted_any_more_does_no_io(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"aaa"})
    assert copy(item, "backup", "a", folders) == NOT_WANTED  # never reserved
    reserve_location(item.id, "backup", url=item.key)
    StorageLocation.update(status="DE").where(StorageLocation.connector_name == "backup").execute()
    assert copy(item, "backup", "a", folders) == NOT_WANTED
    assert copy(item, "backup", "missing", folders) == NOT_WANTED
    assert not folders["backup"].root.exists()  # not even made (nor listed: it is not there)


def test_a_copy_of_an_item_removed_since_it_was_queued_does_no_io(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    # A removed item counts nowhere: nothing is copied (README, "Removed items").
    item = make_item(folders, files={"a": b"aaa"})
    reserve_location(item.id, "backup", url=item.key)
    remove_items([item.key], now=NOW, actor="test")
    assert copy(item, "backup", "a", folders) == NOT_WANTED
    assert not folders["backup"].root.exists()
    assert location(item, "backup").status == "PR"  # its removal deletes it


def test_small_items_copied_in_one_job_share_its_transactions(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    ready = [make_item(folders, key=f"ready-{n}", files={"a": b"a" * n, "b": b"b"}) for n in (1, 2)]
    done = make_item(folders, key="done", files={"a": b"x"}, on=("local", "backup"))
    orphan = make_item(folders, key="orphan", files={"a": b"o"})
    for item in [*ready, done, orphan]:
        reserve_location(item.id, "backup", url=item.key)
    StorageLocation.update(status="DE").where(
        (StorageLocation.file_storage == orphan) & (StorageLocation.connector_name == "local")
    ).execute()  # its only copy is going: nothing to copy from
    wanted = [(item.id, ["a", "b"]) for item in ready] + [(done.id, ["a"]), (orphan.id, ["a"])]

    with pytest.raises(NoSourceError, match="orphan"):
        copy_items("backup", wanted, connectors=folders.__getitem__, preference=PREFERENCE)

    # The orphan holds nothing back: the others are copied, recorded, OK.
    assert [location(item, "backup").status for item in ready] == ["OK", "OK"]
    assert location(orphan, "backup").status == "PR"
    assert sorted(info.path for info in folders["backup"].list()) == [
        "done/a",
        "ready-1/a",
        "ready-1/b",
        "ready-2/a",
        "ready-2/b",
    ]
    assert proven_rows().count() == 4
    history = Action.select().where(Action.action == "copy").order_by(Action.path)
    assert [(a.item_key, a.path) for a in history] == [
        ("ready-1", "a and 1 more"),
        ("ready-2", "a and 1 more"),
    ]
    assert open_locks() == 0
    assert AccessLog.select().count() == 2  # one per item copied, closed
    # Again (a redelivery): their copies are OK now, so not wanted; no I/O.
    report = copy_items("backup", wanted[:3], connectors=folders.__getitem__, preference=PREFERENCE)
    assert (report.copied, report.already_there, report.not_wanted) == (0, 0, 3)
    assert AccessLog.select().count() == 2


def test_files_that_did_not_land_are_not_recorded(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [make_item(folders, key=f"item-{n}", files={"a": b"a", "b": b"b"}) for n in (1, 2)]
    for item in items:
        reserve_location(item.id, "backup", url=item.key)

    def broken_replace(source: str, destination: str) -> None:
        raise OSError(5, "I/O error")  # the disk failed as the files were put in place

    monkeypatch.setattr(local_module.os, "replace", broken_replace)
    with pytest.raises(BackendUnavailable) as caught:
        copy_items(
            "backup",
            [(item.id, ["a", "b"]) for item in items],
            connectors=folders.__getitem__,
            preference=PREFERENCE,
        )
    monkeypatch.undo()
    assert caught.value.transient  # tried again later
    assert proven_rows().count() == 0
    assert [location(item, "backup").status for item in items] == ["UP", "UP"]
    assert open_locks() == 0 and list(folders["backup"].list()) == []
    # The retry copies them all.
    report = copy_items(
        "backup",
        [(item.id, ["a", "b"]) for item in items],
        connectors=folders.__getitem__,
        preference=PREFERENCE,
    )
    assert report.copied == 4
    assert [location(item, "backup").status for item in items] == ["OK", "OK"]


def test_a_source_that_does_not_match_the_catalog_fails_for_good(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"aaa"})
    folders["local"].write("item-1/a", io.BytesIO(b"aab"))  # damaged at the source
    reserve_location(item.id, "backup", url=item.key)
    with pytest.raises(ChecksumMismatch) as caught:
        copy(item, "backup", "a", folders)
    assert not caught.value.transient
    assert folders["backup"].stat("item-1/a") is None
    backup = location(item, "backup")
    assert not proven_rows().where(LocationFile.storage_location == backup).exists()
    assert backup.status == "UP"
    assert open_locks() == 0
    failed = Action.get(Action.action == "copy")
    assert failed.result == "failed" and "removed" in failed.error


@pytest.mark.parametrize(
    ("harm", "found", "error"),
    [
        (lambda path: path.write_bytes(b"ALPHA"), "crc32c", ChecksumMismatch),
        (lambda path: path.unlink(), "missing", ObjectNotFound),
    ],
    ids=["rotted", "missing"],
)
def test_a_copy_that_finds_its_source_bad_marks_it_and_no_delete_counts_on_it(
    catalog_db: pw.Database,
    folders: dict[str, LocalConnector],
    harm: Any,
    found: str,
    error: type[Exception],
) -> None:
    """The bytes the copy read are evidence: the source is damaged, not counted any more."""
    item = make_item(folders, files={"a": b"alpha"}, on=("local", "backup"))
    harm(folders["local"].root / "item-1" / "a")  # behind the system's back
    reserve_location(item.id, "archive", url=item.key)
    with pytest.raises(error):
        copy(item, "archive", "a", folders)
    assert location(item, "local").status == "DM"
    assert [b.problem.split(" ")[0] for b in bad_files(location(item, "local").id)] == [found]
    assert open_locks() == 0
    # backup holds the only good bytes: it is not deleted on the strength of local.
    assert delete(item, "backup", folders) == REFUSED
    assert (folders["backup"].root / "item-1" / "a").read_bytes() == b"alpha"
    # The copy's retry takes the good copy; the repair mends local from it.
    assert copy(item, "archive", "a", folders) == COPIED
    report = repair_location(
        item.id, "local", connectors=folders.__getitem__, preference=PREFERENCE
    )
    assert report.status == "OK"
    assert (folders["local"].root / "item-1" / "a").read_bytes() == b"alpha"


def test_a_copy_whose_bytes_were_damaged_on_the_way_leaves_its_source_alone(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """The source read again on its own is good: the damage was on the way, no evidence."""
    item = make_item(folders, files={"a": b"alpha"}, on=("local", "backup"))
    reserve_location(item.id, "archive", url=item.key)

    class Garbling(Connector):
        """A store whose first read comes back damaged on the way."""

        name = "local"

        def __init__(self, inner: LocalConnector) -> None:
            self.inner = inner
            self.garbled = False

        def stat(self, path: str) -> Any:
            return self.inner.stat(path)

        def open_read(self, path: str) -> Any:
            if self.garbled:
                return self.inner.open_read(path)
            self.garbled = True
            return io.BytesIO(b"alphA")

        def write(self, path: str, stream: Any, *, size: int | None = None) -> Any:
            return self.inner.write(path, stream, size=size)

        def delete(self, path: str, *, within: str = "") -> None:
            self.inner.delete(path, within=within)

        def list(self, prefix: str = "") -> Any:
            return self.inner.list(prefix)

    lookup = {**folders, "local": Garbling(folders["local"])}.__getitem__
    with pytest.raises(ChecksumMismatch):
        copy_item_file(item.id, "archive", "a", connectors=lookup, preference=PREFERENCE)
    assert location(item, "local").status == "OK"
    assert LocationFile.select().where(LocationFile.problem.is_null(False)).count() == 0


def test_a_source_read_back_bad_after_a_failed_copy_counts_no_more(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """A copy that finds its source's bytes are not the catalog's has the backend's answer.

    The preferred copy rotted behind our back (same size: a listing cannot
    tell). The copy from it fails; read again on its own, the source is
    still bad: it is marked damaged there, so it no longer counts as a copy
    (a delete rule must not take the only good one on the strength of it),
    and the copy's retry takes the good copy.
    """
    item = make_item(folders, files={"a": b"alpha"}, on=("local", "backup"))
    (folders["local"].root / "item-1" / "a").write_bytes(b"alphA")
    reserve_location(item.id, "archive", url=item.key)
    with pytest.raises(ChecksumMismatch):
        copy(item, "archive", "a", folders)
    local = location(item, "local")
    assert local is not None and local.status == "DM"
    assert [bad.path for bad in bad_files(local.id)] == ["a"]
    assert delete(item, "backup", folders) == REFUSED
    assert (folders["backup"].root / "item-1" / "a").read_bytes() == b"alpha"
    assert copy(item, "archive", "a", folders) == COPIED
    assert (folders["archive"].root / "item-1" / "a").read_bytes() == b"alpha"


def test_the_source_is_the_preferred_ok_copy_as_the_catalog_says_now(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"aaa"}, on=("local", "archive"))
    StorageLocation.update(status="DE").where(StorageLocation.connector_name == "local").execute()
    reserve_location(item.id, "backup", url=item.key)
    assert copy(item, "backup", "a", folders) == COPIED
    assert Action.get(Action.action == "copy").source == "archive"


def test_without_an_ok_copy_there_is_nothing_to_copy_from(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"aaa"})
    StorageLocation.update(status="UP").execute()
    reserve_location(item.id, "backup", url=item.key)
    with pytest.raises(NoSourceError, match="no OK copy"):
        copy(item, "backup", "a", folders)


def test_the_source_is_locked_while_it_is_read(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"aaa"})
    reserve_location(item.id, "backup", url=item.key)
    seen: list[int] = []

    class Watching(LocalConnector):
        # Every read of a local object opens it here (open_read, and a kernel copy).
        def _open_object(self, path: str) -> int:
            seen.append(open_locks())
            return super()._open_object(path)

    watched = {**folders, "local": Watching("local", path=folders["local"].root)}
    assert copy(item, "backup", "a", watched) == COPIED
    assert seen == [1] and open_locks() == 0


# -- deletes -------------------------------------------------------------------


def check(**changes: object) -> DeleteCheck:
    values: dict[str, object] = {
        "cutoff": NOW - timedelta(days=2),
        "min_other_copies": 1,
        "preference": PREFERENCE,
    }
    values.update(changes)
    return DeleteCheck(**values)  # type: ignore[arg-type]


def delete_part(item: FileStorage, folders: dict[str, LocalConnector], *paths: str) -> str:
    """One job of a delete of the item's copy on ``backup``: those of its files."""
    return delete_files(
        item.id, "backup", list(paths), check=check(), connectors=folders.__getitem__
    )


def delete(
    item: FileStorage, name: str, folders: dict[str, LocalConnector], **changes: object
) -> str:
    return delete_location(item.id, name, check=check(**changes), connectors=folders.__getitem__)


def test_a_delete_the_rules_allow_removes_files_then_the_location(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))
    assert delete(item, "backup", folders) == DELETED
    assert location(item, "backup") is None
    assert list(folders["backup"].list()) == []
    assert len(list(folders["local"].list())) == 2
    assert Action.get(Action.action == "delete").result == "ok"
    assert delete(item, "backup", folders) == GONE


@pytest.mark.parametrize(
    ("arrange", "changes", "reason"),
    [
        ("lock", {}, "locked by 1 open access log"),
        (None, {"min_other_copies": 2}, "2 OK copies, counting this one; more than 2 needed"),
        (None, {"cutoff": NOW - timedelta(days=30)}, "too recently"),
        (None, {"cutoff": None}, "never"),
        ("prefer backup", {}, "it is the preferred copy"),
        ("uploading", {}, "the location is UP, not OK"),
        # SPEC §5 condition 2: the producer re-opened the item since the scan.
        ("reopened", {}, "the item's status is 'PR', not OK"),
    ],
)
def test_a_delete_the_rules_forbid_now_is_refused_and_recorded(
    catalog_db: pw.Database,
    folders: dict[str, LocalConnector],
    arrange: str | None,
    changes: dict[str, object],
    reason: str,
) -> None:
    item = make_item(folders, on=("local", "backup"))
    target = location(item, "backup")
    if arrange == "lock":
        AccessLog.create(storage_location=target, reason="reading")
    elif arrange == "prefer backup":
        changes = {"preference": ("backup", "local")}
    elif arrange == "uploading":
        StorageLocation.update(status="UP").where(StorageLocation.id == target.id).execute()
    elif arrange == "reopened":
        FileStorage.update(status="PR").where(FileStorage.id == item.id).execute()
    assert delete(item, "backup", folders, **changes) == REFUSED
    assert location(item, "backup") is not None
    assert len(list(folders["backup"].list())) == 2
    refused = Action.get(Action.action == "delete")
    assert refused.result == "refused" and reason in refused.error


def test_a_delete_that_died_midway_is_finished_off(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))
    StorageLocation.update(status="DE").where(StorageLocation.connector_name == "backup").execute()
    folders["backup"].delete("item-1/reads.fastq")  # one file already gone
    assert delete(item, "backup", folders) == DELETED
    assert location(item, "backup") is None and list(folders["backup"].list()) == []


@pytest.mark.parametrize("round_", range(5))
def test_two_workers_deleting_two_copies_never_both_succeed_when_one_may(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], round_: int
) -> None:
    # Three OK copies and min_other_copies=2: only one of backup and archive
    # may go. Without the catalog lock both read three copies and both go.
    item = make_item(folders, on=("local", "backup", "archive"))
    start = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def run(name: str) -> None:
        catalog_db.connect(reuse_if_open=True)
        try:
            start.wait()
            outcomes[name] = delete(item, name, folders, min_other_copies=2)
        finally:
            catalog_db.close()

    threads = [threading.Thread(target=run, args=(name,)) for name in ("backup", "archive")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes.values()) == [DELETED, REFUSED]
    left = StorageLocation.select().where(StorageLocation.status == "OK").count()
    assert left == 2


def test_a_delete_in_parts_marks_the_copy_then_drops_it_with_its_last_file(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))

    def part(*paths: str) -> str:
        return delete_part(item, folders, *paths)

    assert part("reads.fastq") == FILES_DELETED
    copy = location(item, "backup")
    assert copy is not None and copy.status == "DE"
    # The files still to remove keep their rows.
    left = LocationFile.select().where(LocationFile.storage_location == copy)
    assert [row.referenced_path.path for row in left] == ["sub/log.txt"]
    assert [info.path for info in folders["backup"].list()] == ["item-1/sub/log.txt"]
    assert part("reads.fastq") == FILES_DELETED  # a duplicate: nothing changes
    # The decision is taken: the next part goes on, though the rules now forbid it.
    assert part("sub/log.txt") == DELETED
    assert location(item, "backup") is None
    assert list(folders["backup"].list()) == []
    assert part("sub/log.txt") == GONE
    assert len(list(folders["local"].list())) == 2


class SlowListing(LocalConnector):
    """A local folder that notes what it lists, and takes its time over the first listing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listed: list[str] = []

    def list(self, prefix: str = "") -> Any:
        self.listed.append(prefix)
        if len(self.listed) == 1:
            time.sleep(0.3)  # time for the other jobs to start meanwhile
        return super().list(prefix)


def test_the_jobs_of_a_delete_wait_for_the_first_to_decide_and_confirm_only_their_own(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path
) -> None:
    # Once, each job that started before the delete was decided confirmed
    # every file of the item: the whole other copy listed by each.
    files = {f"{folder}/{number}.txt": b"x" * number for folder in "abcd" for number in (1, 2)}
    item = make_item(folders, files=files, on=("local", "backup"))
    folders["local"] = keep = SlowListing("local", path=tmp_path / "local")
    outcomes: list[str] = []

    def job(folder: str) -> None:
        catalog_db.connect(reuse_if_open=True)
        try:
            outcomes.append(delete_part(item, folders, f"{folder}/1.txt", f"{folder}/2.txt"))
        finally:
            catalog_db.close()

    threads = [threading.Thread(target=job, args=(folder,)) for folder in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [DELETED] + [FILES_DELETED] * 3
    assert location(item, "backup") is None and list(folders["backup"].list()) == []
    # The first to decide listed the copy (one page of it); the others only their folder.
    first, *later = keep.listed
    assert first == "item-1/"
    assert len(later) == 3 and set(later) < {f"item-1/{folder}/" for folder in "abcd"}


def test_a_verification_in_parts_settles_the_copy_once_every_file_is_verified(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))

    def part(*paths: str, at: datetime) -> bool:
        report = verify_item_files(
            item.id, "backup", list(paths), connectors=folders.__getitem__, now=at
        )
        assert report is not None
        return report.ok

    assert part("sub/log.txt", at=NOW)
    assert location(item, "backup").last_verified is None  # one file of two
    assert part("reads.fastq", at=NOW + timedelta(hours=1))
    assert location(item, "backup").last_verified == NOW  # as old as its oldest file
    # A file found damaged is bad there, and the copy damaged: it no longer counts.
    folders["backup"].write("item-1/sub/log.txt", io.BytesIO(b"LOG"))
    assert not part("sub/log.txt", at=NOW + timedelta(days=1))
    assert location(item, "backup").status == "DM"
    row = LocationFile.get(
        (LocationFile.referenced_path == ReferencedPath.get(path="sub/log.txt"))
        & (LocationFile.storage_location == location(item, "backup"))
    )
    assert row.verified is None and row.problem.startswith("crc32c ")
    assert open_locks() == 0
    # A copy of no files is verified when verified.
    empty = make_item(folders, key="empty", files={}, on=("local", "backup"))
    report = verify_item_files(
        empty.id, "backup", [], connectors=folders.__getitem__, now=NOW + timedelta(days=2)
    )
    assert report is not None and report.ok
    assert location(empty, "backup").last_verified == NOW + timedelta(days=2)
    nowhere = verify_item_files(empty.id, "cold", None, connectors=folders.__getitem__, now=NOW)
    assert nowhere is None


def test_a_location_marked_de_elsewhere_goes_only_with_its_last_file(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))
    StorageLocation.update(status="DE").where(StorageLocation.connector_name == "backup").execute()

    def part(*paths: str) -> str:
        return delete_part(item, folders, *paths)

    # No row said what was left: the first part must not take the location.
    assert part("reads.fastq") == FILES_DELETED
    assert [info.path for info in folders["backup"].list()] == ["item-1/sub/log.txt"]
    assert part("sub/log.txt") == DELETED
    assert location(item, "backup") is None and list(folders["backup"].list()) == []


# -- integrity: confirmation before a delete, repair, evidence only ----------------


def damage(item: FileStorage, name: str, path: str, problem: str = "missing") -> None:
    """Record ``path`` of the item's copy on ``name`` as bad, as a verification would."""
    here = location(item, name)
    record_bad(here.id, [(ReferencedPath.get(path=path).id, problem)], now=NOW)
    settle(here.id, now=NOW)


@pytest.mark.parametrize(
    ("harm", "found"),
    [
        (lambda root: (root / "item-1" / "reads.fastq").unlink(), "reads.fastq: missing"),
        (
            lambda root: (root / "item-1" / "sub" / "log.txt").write_bytes(b"lo"),
            "sub/log.txt: size 2, catalog says 3",
        ),
    ],
    ids=["missing", "other size"],
)
def test_a_delete_confirms_the_copies_it_counts_and_refuses_on_a_bad_one(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], harm: Any, found: str
) -> None:
    """The catalog says local holds every file; its folder says otherwise: backup stays."""
    item = make_item(folders, on=("local", "backup"))
    harm(folders["local"].root)
    assert delete(item, "backup", folders) == REFUSED
    assert len(list(folders["backup"].list())) == 2 and location(item, "backup").status == "OK"
    # The copy that failed is damaged now (and will be repaired from backup).
    assert location(item, "local").status == "DM"
    refused = Action.get(Action.action == "delete")
    assert refused.result == "refused" and f"the copy on local is damaged: {found}" in refused.error
    assert open_locks() == 0


def test_a_delete_counting_on_a_copy_whose_root_is_not_there_concludes_nothing(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path
) -> None:
    """The volume of ``local``'s root is not mounted: its copy cannot be confirmed.
    The delete of ``backup`` waits (retried), and ``local`` is not found damaged."""
    item = make_item(folders, on=("local", "backup"))
    folders["local"].root.rename(tmp_path / "unmounted")
    with pytest.raises(BackendUnavailable, match="root"):
        delete(item, "backup", folders)
    assert len(list(folders["backup"].list())) == 2
    assert location(item, "backup").status == "OK"
    assert location(item, "local").status == "OK"
    assert LocationFile.select().where(LocationFile.problem.is_null(False)).count() == 0


def test_a_damaged_copy_never_counts_for_a_delete(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup", "archive"))
    damage(item, "local", "reads.fastq")
    # backup and archive count; local is damaged, so backup is the preferred copy.
    assert delete(item, "archive", folders) == DELETED
    assert delete(item, "backup", folders) == REFUSED
    assert "1 OK copies, counting this one" in Action.get(Action.result == "refused").error


def test_a_delete_removes_a_link_and_leaves_what_it_points_to(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    other = make_item(folders, key="b", files={"data.txt": b"b's only copy"}, on=("local",))
    root = folders["local"].root
    (root / "a").mkdir()
    (root / "a" / "link.txt").symlink_to("../b/data.txt")
    item = make_item(folders, key="a", files={"link.txt": b"b's only copy"}, on=("backup",))
    StorageLocation.create(
        file_storage=item,
        connector_name="local",
        url="a",
        status="OK",
        last_update=NOW - timedelta(days=20),
    )
    assert delete(item, "local", folders, preference=("backup", "local")) == DELETED
    assert not (root / "a").exists()
    assert (root / "b" / "data.txt").read_bytes() == b"b's only copy"
    assert location(other, "local").status == "OK"


def test_a_delete_under_way_stops_when_the_copies_it_counted_no_longer_count(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))

    def part(*paths: str) -> str:
        return delete_part(item, folders, *paths)

    assert part("reads.fastq") == FILES_DELETED
    # The copy the delete counted on is found bad meanwhile.
    damage(item, "local", "sub/log.txt")
    assert part("sub/log.txt") == REFUSED
    backup = location(item, "backup")
    assert backup.status == "DM"
    assert (folders["backup"].root / "item-1" / "sub" / "log.txt").exists()
    problems = {bad.path: bad.problem for bad in bad_files(backup.id)}
    assert problems == {"reads.fastq": "missing: removed by a delete that was stopped"}
    assert "stopped" in Action.select().order_by(Action.id.desc()).get().error
    # Nothing is lost: each file is good on one copy, and repair puts both right.
    assert lost_files() == {}
    lookup = folders.__getitem__
    assert repair_location(item.id, "backup", connectors=lookup, preference=PREFERENCE).status == (
        "OK"
    )
    assert repair_location(item.id, "local", connectors=lookup, preference=PREFERENCE).status == (
        "OK"
    )


def test_a_delete_that_fails_for_good_is_recorded(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path
) -> None:
    item = make_item(folders, on=("local", "backup"))
    # Someone replaced the copy's folder by a link to another: not deleted through.
    sub = folders["backup"].root / "item-1" / "sub"
    (tmp_path / "elsewhere").mkdir()
    sub.rename(tmp_path / "elsewhere" / "sub")
    sub.symlink_to(tmp_path / "elsewhere" / "sub")
    with pytest.raises(InvalidPath) as caught:
        delete(item, "backup", folders)
    failed = Action.get(Action.result == "failed")
    assert (failed.action, failed.item_key, failed.target) == ("delete", "item-1", "backup")
    assert "symbolic link" in failed.error and caught.value.recorded  # type: ignore[attr-defined]
    assert (tmp_path / "elsewhere" / "sub" / "log.txt").exists()


def test_a_repair_copies_the_bad_files_again_and_the_copy_counts_again(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))
    (folders["backup"].root / "item-1" / "reads.fastq").unlink()
    damage(item, "backup", "reads.fastq")
    kept = (folders["backup"].root / "item-1" / "sub" / "log.txt").stat().st_ino
    report = repair_location(
        item.id, "backup", connectors=folders.__getitem__, preference=PREFERENCE
    )
    assert (report.repaired, report.unrepairable, report.status) == (1, [], "OK")
    assert (folders["backup"].root / "item-1" / "sub" / "log.txt").stat().st_ino == kept
    for info in folders["local"].list():
        with (
            folders["backup"].open_read(info.path) as copy,
            folders["local"].open_read(info.path) as original,
        ):
            assert copy.read() == original.read()
    repair = Action.get(Action.action == "repair")
    assert (repair.result, repair.source, repair.target, repair.path) == (
        "ok",
        "local",
        "backup",
        "reads.fastq",
    )
    row = LocationFile.get(LocationFile.storage_location == location(item, "backup"))
    assert all(
        lf.problem is None and lf.verified is not None
        for lf in LocationFile.select().where(LocationFile.storage_location == row.storage_location)
        if lf.referenced_path.path == "reads.fastq"
    )
    assert open_locks() == 0
    # Nothing left to do: a second repair does nothing.
    again = repair_location(
        item.id, "backup", connectors=folders.__getitem__, preference=PREFERENCE
    )
    assert (again.repaired, again.status) == (0, "OK")


def test_a_repair_takes_each_file_from_a_copy_where_it_is_good(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """No copy counts; each file is good on one of them: every copy is made whole."""
    files = {"a": b"alpha", "b": b"bravo"}
    item = make_item(folders, files=files, on=("local", "backup", "archive"))
    (folders["local"].root / "item-1" / "a").write_bytes(b"ALPHA")
    damage(item, "local", "a", "crc32c differs")
    (folders["backup"].root / "item-1" / "b").unlink()
    damage(item, "backup", "b")
    for path in files:
        (folders["archive"].root / "item-1" / path).unlink()
        damage(item, "archive", path)
    assert lost_files() == {}
    lookup = folders.__getitem__
    report = repair_location(item.id, "archive", connectors=lookup, preference=PREFERENCE)
    assert (report.repaired, report.status) == (2, "OK")
    repair = Action.get(Action.action == "repair")
    assert repair.source == "backup, local"
    for name in ("local", "backup"):
        assert repair_location(item.id, name, connectors=lookup, preference=PREFERENCE).status == (
            "OK"
        )
    for name in ("local", "backup", "archive"):
        for path, data in files.items():
            assert (folders[name].root / "item-1" / path).read_bytes() == data


def test_a_source_found_bad_when_read_is_marked_and_the_file_reported_lost(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"alpha"}, on=("local", "backup"))
    (folders["backup"].root / "item-1" / "a").unlink()
    damage(item, "backup", "a")
    # local's bytes rotted behind our back; the catalog still counts it.
    (folders["local"].root / "item-1" / "a").write_bytes(b"alphA")
    report = repair_location(
        item.id, "backup", connectors=folders.__getitem__, preference=PREFERENCE
    )
    assert (report.repaired, report.status, report.unrepairable) == (0, "DM", ["a"])
    assert location(item, "local").status == "DM"
    assert lost_files() == {item.id: ["a"]}
    failed = Action.get(Action.action == "repair")
    assert failed.result == "failed" and "LOST" in failed.error
    # Nothing was written where a bad copy was read.
    assert not (folders["backup"].root / "item-1" / "a").exists()


def test_a_repair_source_whose_file_leads_out_of_its_root_is_bad_and_the_next_is_taken(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path
) -> None:
    """A link out of the connector's root holds no bytes of it (as a verification finds)."""
    item = make_item(folders, files={"a": b"alpha"}, on=("local", "backup", "archive"))
    (folders["archive"].root / "item-1" / "a").unlink()
    damage(item, "archive", "a")
    # local's file was replaced behind our back by a link to a file outside its root.
    outside = tmp_path / "outside"
    outside.write_bytes(b"alpha")
    (folders["local"].root / "item-1" / "a").unlink()
    (folders["local"].root / "item-1" / "a").symlink_to(outside)
    report = repair_location(
        item.id, "archive", connectors=folders.__getitem__, preference=PREFERENCE
    )
    assert (report.repaired, report.status) == (1, "OK")
    assert Action.get(Action.action == "repair").source == "backup"
    assert (folders["archive"].root / "item-1" / "a").read_bytes() == b"alpha"
    assert location(item, "local").status == "DM"
    assert open_locks() == 0


class Unreachable(LocalConnector):
    """A folder whose reads of some paths fail as a backend that does not answer."""

    def __init__(self, *args: Any, failing: set[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failing = failing

    def open_read(self, path: str) -> Any:
        if path in self.failing:
            raise BackendUnavailable(f"{self.name}: timed out reading {path!r}")
        return super().open_read(path)

    def _open_object(self, path: str) -> Any:  # a copy between folders reads this way
        if path in self.failing:
            raise BackendUnavailable(f"{self.name}: timed out reading {path!r}")
        return super()._open_object(path)


def test_a_backend_that_does_not_answer_is_no_evidence(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    files = {"a": b"alpha", "b": b"bravo", "c": b"charlie"}
    item = make_item(folders, files=files, on=("local", "backup"))
    (folders["backup"].root / "item-1" / "a").write_bytes(b"ALPHA")  # found bad first
    flaky = Unreachable("backup", path=folders["backup"].root, failing={"item-1/b"})
    lookup = {**folders, "backup": flaky}.__getitem__
    with pytest.raises(BackendUnavailable):
        verify_item_files(item.id, "backup", None, connectors=lookup, now=NOW)
    problems = {
        lf.referenced_path.path: lf.problem
        for lf in LocationFile.select().where(
            LocationFile.storage_location == location(item, "backup")
        )
    }
    # a: the evidence found before the outage; b, c: as they were (asserted good).
    assert problems["a"].startswith("crc32c") and set(problems) == {"a"}
    assert location(item, "backup").status == "DM"
    assert not Action.select().where(Action.action == "verify").exists()  # retried, not recorded
    assert open_locks() == 0


def test_a_repair_whose_first_source_does_not_answer_takes_the_next(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """The preferred copy's backend is out (a timeout): another good copy repairs the damage.

    The outage concludes nothing of the source's bytes; the copy that
    answers puts the damaged one right now, not when the outage ends.
    """
    item = make_item(folders, files={"a": b"alpha"}, on=("local", "backup", "archive"))
    (folders["archive"].root / "item-1" / "a").unlink()
    damage(item, "archive", "a")
    out = Unreachable("local", path=folders["local"].root, failing={"item-1/a"})
    lookup = {**folders, "local": out}.__getitem__
    report = repair_location(item.id, "archive", connectors=lookup, preference=PREFERENCE)
    assert (report.repaired, report.status) == (1, "OK")
    assert Action.get(Action.action == "repair").source == "backup"
    assert location(item, "local").status == "OK"  # no evidence against it
    assert (folders["archive"].root / "item-1" / "a").read_bytes() == b"alpha"
    assert open_locks() == 0


def test_a_repair_whose_every_source_does_not_answer_concludes_nothing(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"alpha"}, on=("local", "backup"))
    (folders["backup"].root / "item-1" / "a").unlink()
    damage(item, "backup", "a")
    out = Unreachable("local", path=folders["local"].root, failing={"item-1/a"})
    lookup = {**folders, "local": out}.__getitem__
    with pytest.raises(BackendUnavailable):
        repair_location(item.id, "backup", connectors=lookup, preference=PREFERENCE)
    assert (location(item, "local").status, location(item, "backup").status) == ("OK", "DM")
    assert lost_files() == {}
    assert open_locks() == 0


def test_a_damaged_copy_found_whole_again_counts_again(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))
    damage(item, "backup", "reads.fastq", "suspect")
    report = verify_item_files(item.id, "backup", None, connectors=folders.__getitem__, now=NOW)
    assert report is not None and report.ok and report.status == "OK"
    assert location(item, "backup").status == "OK"


def test_a_file_changed_while_it_was_copied_is_not_recorded(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, files={"a": b"version 1"})
    reserve_location(item.id, "backup", url=item.key)

    class Reingesting(LocalConnector):
        """The producer registers a new version while the old bytes are read."""

        def _open_object(self, path: str) -> int:
            descriptor = super()._open_object(path)
            ReferencedPath.update(size=9, crc32c="ffffffff", md5=None).where(
                ReferencedPath.path == "a"
            ).execute()
            return descriptor

    racing = {**folders, "local": Reingesting("local", path=folders["local"].root)}
    with pytest.raises(ItemChangedError):
        copy(item, "backup", "a", racing)
    assert proven_rows().count() == 0
    assert location(item, "backup").status == "UP"


def test_every_job_of_a_delete_confirms_the_files_it_removes(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """A delete resumed later does not trust the first job's confirmation."""
    item = make_item(folders, on=("local", "backup"))
    assert delete_part(item, folders, "reads.fastq") == FILES_DELETED
    # Gone behind the system's back between the jobs of the delete.
    (folders["local"].root / "item-1" / "sub" / "log.txt").unlink()
    assert delete_part(item, folders, "sub/log.txt") == REFUSED
    assert (folders["backup"].root / "item-1" / "sub" / "log.txt").exists()
    assert {bad.path for bad in bad_files(location(item, "local").id)} == {"sub/log.txt"}
    assert {bad.path for bad in bad_files(location(item, "backup").id)} == {"reads.fastq"}
    assert lost_files() == {}
    lookup = folders.__getitem__
    for name in ("local", "backup"):
        report = repair_location(item.id, name, connectors=lookup, preference=PREFERENCE)
        assert report.status == "OK"


class Unlistable(LocalConnector):
    """A folder whose listings fail as a backend that does not answer."""

    def list(self, prefix: str = "") -> Any:
        raise BackendUnavailable(f"{self.name}: timed out listing {prefix!r}")


def test_a_confirmation_the_backend_cannot_answer_deletes_nothing_and_concludes_nothing(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))
    down = {**folders, "local": Unlistable("local", path=folders["local"].root)}
    with pytest.raises(BackendUnavailable):
        delete_location(item.id, "backup", check=check(), connectors=down.__getitem__)
    assert {location(item, name).status for name in ("local", "backup")} == {"OK"}
    assert LocationFile.select().count() == 0
    assert len(list(folders["backup"].list())) == 2
    assert not Action.select().where(Action.action == "delete").exists()


def test_two_deletes_at_once_one_goes_the_other_is_refused_not_failed(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """While one delete confirms the copies it counts, another delete removes one of them.

    The copy gone meanwhile is not damaged (its files went with it): it no
    longer counts, and the second delete is refused for want of copies.
    """
    item = make_item(folders, on=("local", "backup", "archive"))
    ran = []

    def connectors(name: str) -> LocalConnector:
        if name == "backup" and not ran:
            # The archive's delete asks for backup to confirm it: right then,
            # the backup's own delete runs to its end.
            ran.append(delete(item, "backup", folders, min_other_copies=1))
        return folders[name]

    outcome = delete_location(
        item.id, "archive", check=check(min_other_copies=2), connectors=connectors
    )
    assert ran == [DELETED] and location(item, "backup") is None
    assert outcome == REFUSED
    assert location(item, "archive").status == "OK"  # type: ignore[union-attr]
    assert location(item, "local").status == "OK"  # type: ignore[union-attr]
    assert len(list(folders["archive"].list())) == 2
    assert [row.result for row in Action.select().order_by(Action.id)] == ["ok", "refused"]


def test_a_removed_items_copies_go_whole_the_locked_one_waits_then_the_item(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))
    assert remove_location(item.id, "backup", connectors=folders.__getitem__) == REFUSED
    assert "no longer removed" in Action.get(Action.result == "refused").error  # not removed yet
    remove_items(["item-1"], now=NOW, actor="test")
    log = open_access_log(location(item, "local"), "reading")  # type: ignore[arg-type]
    assert remove_location(item.id, "local", connectors=folders.__getitem__) == REFUSED
    assert len(list(folders["local"].list())) == 2  # locked: untouched
    # The preferred copy and the last go all the same, once unlocked.
    assert remove_location(item.id, "backup", connectors=folders.__getitem__) == DELETED
    assert list(folders["backup"].list()) == [] and location(item, "backup") is None
    close_access_log(log)
    assert remove_location(item.id, "local", connectors=folders.__getitem__) == DELETED
    assert list(folders["local"].list()) == []
    assert FileStorage.get_or_none(FileStorage.id == item.id) is None  # with its last copy
    removals = Action.select().where((Action.action == "remove") & (Action.result == "ok"))
    assert [(row.item_key, row.target) for row in removals.order_by(Action.id)] == [
        ("item-1", "backup"),
        ("item-1", "local"),
    ]
    assert remove_location(item.id, "local", connectors=folders.__getitem__) == GONE


def test_a_removal_is_refused_while_deletes_are_paused(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local",))
    remove_items(["item-1"], now=NOW, actor="test")
    pause_deletes(note="hold everything")
    assert remove_location(item.id, "local", connectors=folders.__getitem__) == REFUSED
    assert len(list(folders["local"].list())) == 2
