"""Registering a folder under a local connector: hashes checked independently, paths confined."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import crc32c
import peewee as pw
import pytest

from catalog.errors import CatalogError
from catalog.models import (
    ALL_MODELS,
    AccessLog,
    Action,
    FileStorage,
    ReferencedPath,
    StorageLocation,
)
from connectors.hashing import DEFAULT_CHUNK_SIZE
from resolwe_storage.config import Config, build_config
from resolwe_storage.errors import InputError, UserError
from resolwe_storage.ingest import ingest_directory

#: Large enough for a two-part S3 etag at the default part size.
BIG = DEFAULT_CHUNK_SIZE + 5


def expected_etag(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> str:
    if len(data) <= chunk_size:
        return hashlib.md5(data).hexdigest()
    parts = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
    joined = b"".join(hashlib.md5(part).digest() for part in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


def configured(root: Path) -> Config:
    return build_config(
        {
            "connectors": {
                "local": {"connector": "local", "config": {"path": str(root)}},
                "S3": {"connector": "s3", "config": {"bucket": "b"}},
            }
        },
        environ={},
    )


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    return {
        model._meta.table_name: list(model.select().order_by(model._meta.primary_key).tuples())
        for model in ALL_MODELS
    }


def empty() -> bool:
    return all(model.select().count() == 0 for model in ALL_MODELS)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def folder(root: Path) -> dict[str, bytes]:
    """An item's folder, ``root/items/data-1``, with nested files; returns their contents."""
    contents = {
        "a.txt": b"hello\n",
        "empty.txt": b"",
        "sub/b.bin": bytes(range(256)) * 40,
        "sub/deeper/c": b"abc",
        "big.bin": os.urandom(BIG),
    }
    for relative, data in contents.items():
        path = root / "items" / "data-1" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return contents


def ingest(database: pw.Database, root: Path, directory: Path, **options: Any) -> dict[str, Any]:
    options.setdefault("connector", "local")
    options.setdefault("key", "data-1")
    config = options.pop("config", None) or configured(root)
    return ingest_directory(config, database, directory=directory, **options)


def test_ingest_registers_the_item_with_independently_checked_hashes(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    summary = ingest(
        catalog_db,
        root,
        root / "items" / "data-1",
        data_slug="reads",
        process_type="data:reads:fastq:",
    )
    assert summary == {
        "key": "data-1",
        "url": "items/data-1",
        "files": len(folder),
        "bytes": sum(len(data) for data in folder.values()),
        "result": "created",
    }
    item = FileStorage.get(FileStorage.key == "data-1")
    assert (item.data_slug, item.process_type, item.status) == ("reads", "data:reads:fastq:", "OK")
    location = StorageLocation.get(StorageLocation.file_storage == item)
    assert (location.connector_name, location.url, location.status) == (
        "local",
        "items/data-1",
        "OK",
    )
    assert location.last_update >= item.created
    stored = {
        row.path: (row.size, row.md5, row.crc32c, row.awss3etag, row.chunk_size)
        for row in ReferencedPath.select().where(ReferencedPath.file_storage == item)
    }
    assert stored == {
        relative: (
            len(data),
            hashlib.md5(data).hexdigest(),
            f"{crc32c.crc32c(data):08x}",
            expected_etag(data),
            DEFAULT_CHUNK_SIZE,
        )
        for relative, data in folder.items()
    }
    assert stored["big.bin"][3].endswith("-2")
    assert AccessLog.select().count() == 0
    action = Action.get()
    assert (action.actor, action.action, action.item_key, action.result) == (
        "ingest",
        "register",
        "data-1",
        "created",
    )


def test_reingesting_is_idempotent(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    """Unchanged files: nothing changes, not even the location's last access."""
    ingest(catalog_db, root, root / "items" / "data-1")
    first = snapshot()
    assert ingest(catalog_db, root, root / "items" / "data-1")["result"] == "unchanged"
    assert ingest(catalog_db, root, root / "items" / "data-1")["result"] == "unchanged"
    assert snapshot() == first


def test_reingesting_changed_files_refreshes_the_hashes(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    ingest(catalog_db, root, root / "items" / "data-1")
    item = FileStorage.get()
    location = StorageLocation.get()
    (root / "items" / "data-1" / "a.txt").write_bytes(b"changed")
    (root / "items" / "data-1" / "new.txt").write_bytes(b"new")
    assert ingest(catalog_db, root, root / "items" / "data-1")["result"] == "updated"
    again = FileStorage.get()
    assert (again.id, again.created) == (item.id, item.created)
    assert StorageLocation.get().last_update == location.last_update
    a = ReferencedPath.get(ReferencedPath.path == "a.txt")
    assert (a.size, a.md5) == (7, hashlib.md5(b"changed").hexdigest())
    assert ReferencedPath.select().count() == len(folder) + 1
    assert FileStorage.select().count() == StorageLocation.select().count() == 1


def test_a_symlink_leaving_the_connector_root_is_refused(
    catalog_db: pw.Database, tmp_path: Path, root: Path, folder: dict[str, bytes]
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"not yours")
    (root / "items" / "data-1" / "sub" / "leak.txt").symlink_to(secret)
    with pytest.raises(InputError, match=r"leak\.txt: links outside the connector root"):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert empty()


def test_a_symlink_into_another_items_folder_is_refused(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    other = root / "items" / "data-2"
    other.mkdir(parents=True)
    (other / "theirs.txt").write_bytes(b"another item's bytes")
    (root / "items" / "data-1" / "borrowed.txt").symlink_to(other / "theirs.txt")
    with pytest.raises(InputError, match=r"borrowed\.txt: links outside the item's folder"):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert empty()


def test_a_symlink_to_a_folder_is_refused(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    (root / "items" / "data-1" / "loop").symlink_to(root / "items" / "data-1" / "sub")
    with pytest.raises(InputError, match=r"loop: is a symbolic link to a folder"):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert empty()


def test_a_dangling_symlink_is_refused(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    (root / "items" / "data-1" / "gone").symlink_to(root / "items" / "data-1" / "nothing")
    with pytest.raises(InputError, match=r"gone: not a regular file"):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert empty()


def test_a_symlink_within_the_folder_is_hashed_as_its_target(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    (root / "items" / "data-1" / "alias.txt").symlink_to("a.txt")
    ingest(catalog_db, root, root / "items" / "data-1")
    alias = ReferencedPath.get(ReferencedPath.path == "alias.txt")
    assert alias.md5 == hashlib.md5(folder["a.txt"]).hexdigest()


def test_a_connector_that_is_not_local_is_refused(catalog_db: pw.Database, root: Path) -> None:
    (root / "x").mkdir()
    with pytest.raises(InputError, match=r"^connector 'S3' is s3, not a local connector$"):
        ingest(catalog_db, root, root / "x", connector="S3")
    assert empty()


def test_a_connector_not_in_the_configuration_is_refused(
    catalog_db: pw.Database, root: Path
) -> None:
    (root / "x").mkdir()
    with pytest.raises(
        InputError, match=r"^connector 'GCS' is not configured \(configured: S3, local\)$"
    ) as caught:
        ingest(catalog_db, root, root / "x", connector="GCS")
    assert isinstance(caught.value, UserError)
    assert empty()


@pytest.mark.parametrize(
    ("where", "complaint"),
    [
        ("outside", "not a folder under the root"),
        ("root", "not a folder under the root"),
        ("missing", "not a folder"),
        ("file", "not a folder"),
        ("escape", "not a folder under the root"),
    ],
)
def test_the_folder_must_lie_under_the_root(
    catalog_db: pw.Database, tmp_path: Path, root: Path, where: str, complaint: str
) -> None:
    (tmp_path / "outside").mkdir()
    (root / "file").write_bytes(b"x")
    (root / "inner").mkdir()
    directory = {
        "outside": tmp_path / "outside",
        "root": root,
        "missing": root / "missing",
        "file": root / "file",
        "escape": root / "inner" / ".." / ".." / "outside",
    }[where]
    with pytest.raises(InputError, match=complaint):
        ingest(catalog_db, root, directory)
    assert empty()


def test_an_item_key_taken_elsewhere_keeps_the_catalog_unchanged(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    """A second folder registered under the same key: the item already has a local location."""
    ingest(catalog_db, root, root / "items" / "data-1")
    before = snapshot()
    (root / "items" / "other").mkdir()
    (root / "items" / "other" / "f").write_bytes(b"f")
    with pytest.raises(CatalogError, match="already has a location on 'local'"):
        ingest(catalog_db, root, root / "items" / "other")
    assert snapshot() == before


# -- ingest registers only bytes it can stand behind ---------------------------------------


@pytest.mark.parametrize(
    "place", [("items", "data-1", "sub"), ("items",)], ids=["inside it", "holding it"]
)
def test_a_folder_overlapping_another_items_folder_is_refused(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes], place: tuple[str, ...]
) -> None:
    """A folder inside another item's, or holding it: the two would share files, and
    deleting one copy would remove the other's."""
    ingest(catalog_db, root, root / "items" / "data-1")
    before = snapshot()
    with pytest.raises(InputError, match="another item"):
        ingest(catalog_db, root, root.joinpath(*place), key="data-2")
    assert snapshot() == before


def test_a_file_that_changes_while_it_is_hashed_is_refused(
    catalog_db: pw.Database,
    root: Path,
    folder: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hashes of bytes half old and half new describe no version: nothing is recorded."""
    import resolwe_storage.ingest as ingesting

    real = ingesting.hash_stream
    target = root / "items" / "data-1" / "big.bin"

    def changing(stream: Any, **options: Any) -> Any:
        if Path(stream.name).name == "big.bin":
            with target.open("r+b") as writer:  # a producer still writing
                writer.seek(BIG - 1)
                writer.write(b"\xff" if folder["big.bin"][-1:] != b"\xff" else b"\x00")
        return real(stream, **options)

    monkeypatch.setattr(ingesting, "hash_stream", changing)
    with pytest.raises(InputError, match="changed while"):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert empty()


def test_reingesting_a_folder_that_lost_a_file_is_refused(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    """The item's file is gone from the folder: the copy there cannot be asserted whole."""
    ingest(catalog_db, root, root / "items" / "data-1")
    before = snapshot()
    (root / "items" / "data-1" / "a.txt").unlink()
    with pytest.raises(InputError, match=r"a\.txt.*recorded bad|a\.txt.*not in the folder"):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert snapshot() == before


def test_reingesting_keeps_the_locks_an_import_left(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    """Locks imported with the item (``open_access_logs``) are another reader's: kept."""
    from catalog.streaming import import_document

    ingest(catalog_db, root, root / "items" / "data-1")
    item = FileStorage.get()
    import_document(
        {
            "items": [
                {
                    "key": "data-1",
                    "created": item.created.isoformat(),
                    "locations": [
                        {
                            "connector": "local",
                            "url": "items/data-1",
                            "status": "OK",
                            "open_access_logs": 1,
                        }
                    ],
                }
            ]
        },
        connectors={"local", "S3"},
        database=catalog_db,
    )
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 1
    ingest(catalog_db, root, root / "items" / "data-1")
    assert AccessLog.select().where(AccessLog.finished.is_null()).count() == 1


@pytest.mark.parametrize("status", ["DE", "UP"])
def test_reingesting_a_copy_being_deleted_or_written_is_refused(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes], status: str
) -> None:
    """A copy under way or being deleted is the workers': ingest must not make it the version."""
    ingest(catalog_db, root, root / "items" / "data-1")
    StorageLocation.update(status=status).execute()
    before = snapshot()
    (root / "items" / "data-1" / "a.txt").write_bytes(b"changed")
    with pytest.raises(InputError, match=status):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert snapshot() == before


def test_reingesting_bytes_found_damaged_does_not_make_them_the_version(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    """A file a verification found corrupt on the copy is no new version: the good copies
    elsewhere must not be made stale (and then repaired from the corrupt bytes)."""
    from catalog.integrity import record_bad, settle
    from catalog.models import LocationFile, utcnow

    ingest(catalog_db, root, root / "items" / "data-1")
    item = FileStorage.get()
    s3 = StorageLocation.create(
        file_storage=item, connector_name="S3", url="items/data-1", status="OK"
    )
    a = ReferencedPath.get(ReferencedPath.path == "a.txt")
    local = StorageLocation.get(StorageLocation.connector_name == "local")
    (root / "items" / "data-1" / "a.txt").write_bytes(b"hellp\n")  # bit rot
    record_bad(local.id, [(a.id, "checksum differs")], now=utcnow())
    assert settle(local.id, now=utcnow()) == "DM"
    before = snapshot()
    with pytest.raises(InputError, match=r"a\.txt.*recorded bad|a\.txt.*not in the folder"):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert snapshot() == before
    assert StorageLocation.get_by_id(s3.id).status == "OK"
    assert not LocationFile.select().where(LocationFile.storage_location == s3.id).exists()


@pytest.mark.parametrize("change", ["rewritten", "removed", "added"])
def test_a_folder_that_changes_after_a_file_was_hashed_is_refused(
    catalog_db: pw.Database,
    root: Path,
    folder: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    change: str,
) -> None:
    """Hashing a folder may take hours: a file hashed early and rewritten or removed while a
    later one is hashed would be recorded good on a copy that no longer holds it, and one
    added meanwhile says the producer is still writing. Nothing is recorded."""
    import resolwe_storage.ingest as ingesting

    real = ingesting.hash_stream
    item = root / "items" / "data-1"

    def changing(stream: Any, **options: Any) -> Any:
        if Path(stream.name).name == "c":  # the last file: a.txt was hashed long ago
            if change == "rewritten":
                (item / "a.txt").write_bytes(b"HELLO\n")  # same size, other bytes
            elif change == "removed":
                (item / "a.txt").unlink()
            else:
                (item / "late.txt").write_bytes(b"late")
        return real(stream, **options)

    monkeypatch.setattr(ingesting, "hash_stream", changing)
    with pytest.raises(InputError, match="changed while"):
        ingest(catalog_db, root, item)
    assert empty()


def test_ingesting_under_the_key_of_a_removed_item_is_refused(
    catalog_db: pw.Database, root: Path, folder: dict[str, bytes]
) -> None:
    """A removed item's copies go after the grace, whatever is registered: bytes ingested
    under its key would go with them. Refused, naming ``restore``."""
    from catalog.models import utcnow
    from catalog.removal import remove_items

    ingest(catalog_db, root, root / "items" / "data-1")
    with catalog_db.atomic():
        remove_items(["data-1"], now=utcnow(), actor="test")
    (root / "items" / "data-1" / "new.txt").write_bytes(b"new")
    before = snapshot()
    with pytest.raises(InputError, match=r"item 'data-1' was removed .*restore"):
        ingest(catalog_db, root, root / "items" / "data-1")
    assert snapshot() == before


def test_a_copy_whose_delete_was_decided_while_it_was_hashed_is_refused(
    catalog_db: pw.Database,
    root: Path,
    folder: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Hashing may take hours; a delete decided meanwhile (``DE``) keeps going whatever an
    import says: the ingest would report bytes registered that are being removed."""
    import resolwe_storage.ingest as ingesting

    ingest(catalog_db, root, root / "items" / "data-1")
    real = ingesting.hash_stream

    def deleting(stream: Any, **options: Any) -> Any:
        StorageLocation.update(status="DE").execute()  # a worker decides the delete now
        return real(stream, **options)

    monkeypatch.setattr(ingesting, "hash_stream", deleting)
    with pytest.raises(InputError, match=r"is DE \(being written or deleted\)"):
        ingest(catalog_db, root, root / "items" / "data-1")
