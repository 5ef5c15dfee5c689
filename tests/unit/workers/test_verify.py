"""Verifications and repairs racing a new version of the item, and bytes known by an etag alone."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from catalog.integrity import STALE, lost_files
from catalog.models import LocationFile, ReferencedPath
from catalog.streaming import import_document
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from tests.unit.workers.test_operations import (
    NOW,
    location,
    make_item,
)
from tests.unit.workers.test_operations import folders as folders  # the fixture
from workers.operations import verify_item_files

CONNECTORS = frozenset({"local", "backup", "archive", "cold"})


def new_version_on_local(database: pw.Database, data: bytes) -> None:
    """The producer registers a new version of ``a``: only ``local`` holds it."""
    hashes = hash_stream(io.BytesIO(data))
    import_document(
        {
            "items": [
                {
                    "key": "item-1",
                    "created": "2026-05-02T00:00:00Z",
                    "locations": [{"connector": "local", "url": "item-1", "status": "OK"}],
                    "files": [
                        {
                            "path": "a",
                            "size": len(data),
                            "md5": hashes.md5,
                            "crc32c": hashes.crc32c,
                        }
                    ],
                }
            ]
        },
        connectors=CONNECTORS,
        database=database,
    )


def test_a_verification_that_read_the_old_version_does_not_make_a_stale_copy_good(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path
) -> None:
    """A verification job reads the catalog's hashes, then the bytes; an import in
    between makes the copy on ``backup`` stale (it holds the old version). What the
    job found of the old version must not make the stale file good again."""
    item = make_item(folders, files={"a": b"version 1", "b": b"bravo"}, on=("local", "backup"))
    new = b"version 2, longer"

    class Reingesting(LocalConnector):
        """The producer registers a new version while the verification reads."""

        fired = False

        def open_read(self, path: str) -> Any:
            if not Reingesting.fired:
                Reingesting.fired = True
                (folders["local"].root / "item-1" / "a").write_bytes(new)
                new_version_on_local(catalog_db, new)
                backup = location(item, "backup")
                assert backup is not None and backup.status == "DM"  # stale, as it should
            return super().open_read(path)

    racing = {**folders, "backup": Reingesting("backup", path=folders["backup"].root)}
    verify_item_files(item.id, "backup", None, connectors=racing.__getitem__, now=NOW)

    backup = location(item, "backup")
    path_a = ReferencedPath.get(path="a")
    row = LocationFile.get(
        (LocationFile.storage_location == backup) & (LocationFile.referenced_path == path_a)
    )
    # backup holds "version 1" of a: the catalog's file is "version 2".
    assert (folders["backup"].root / "item-1" / "a").read_bytes() == b"version 1"
    assert row.problem == STALE, "the old version of a is recorded good for the new one"
    assert backup.status == "DM"
    assert lost_files([item.id]) == {}


def test_a_stale_copy_is_not_found_good_against_a_new_version_known_by_its_etag(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """The producer registers a new version of ``a`` known by its S3 etag alone
    (the import clears the old size and hashes: they were the old bytes'). The
    copy on ``backup`` still holds the old bytes: stale. A verification of it
    compares nothing it can (no size, crc32c or md5) and must not call it good."""
    item = make_item(folders, files={"a": b"version 1", "b": b"bravo"}, on=("local", "backup"))
    new = b"version 2"  # the same size, other bytes
    (folders["local"].root / "item-1" / "a").write_bytes(new)
    import_document(
        {
            "items": [
                {
                    "key": "item-1",
                    "created": "2026-05-02T00:00:00Z",
                    "locations": [{"connector": "local", "url": "item-1", "status": "OK"}],
                    "files": [{"path": "a", "awss3etag": hash_stream(io.BytesIO(new)).awss3etag}],
                }
            ]
        },
        connectors=CONNECTORS,
        database=catalog_db,
    )
    assert location(item, "backup").status == "DM"  # stale, as it should

    report = verify_item_files(item.id, "backup", None, connectors=folders.__getitem__, now=NOW)

    assert (folders["backup"].root / "item-1" / "a").read_bytes() == b"version 1"
    assert report is not None
    assert location(item, "backup").status == "DM", (
        "the old bytes of a were verified good against the new version's etag"
    )


def test_a_repair_that_read_the_old_version_does_not_damage_the_new_versions_copy(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """A repair of ``backup`` reads ``a`` from ``local`` with the catalog's hashes of
    the time; an import registers a new version of ``a`` on ``local`` meanwhile. The
    new bytes differ from the old hashes: that is no evidence that ``local`` is bad,
    and its copy (the new version's only one) must not be marked damaged (lost)."""
    from tests.unit.workers.test_operations import PREFERENCE, damage
    from workers.operations import repair_location

    item = make_item(folders, files={"a": b"version 1", "b": b"bravo"}, on=("local", "backup"))
    (folders["backup"].root / "item-1" / "a").unlink()
    damage(item, "backup", "a", "missing")
    new = b"version 2, longer"

    class Reingesting(LocalConnector):
        fired = False

        def _open_object(self, path: str) -> Any:
            if not Reingesting.fired and path == "item-1/a":
                Reingesting.fired = True
                (folders["local"].root / "item-1" / "a").write_bytes(new)
                new_version_on_local(catalog_db, new)
            return super()._open_object(path)

    racing = {**folders, "local": Reingesting("local", path=folders["local"].root)}
    Reingesting.fired = False
    # It may fail (retried later): what matters is what it recorded.
    with contextlib.suppress(Exception):
        repair_location(item.id, "backup", connectors=racing.__getitem__, preference=PREFERENCE)

    assert location(item, "local").status == "OK", (
        "the copy holding the new version was marked damaged against the old hashes"
    )
    assert lost_files([item.id]) == {}


def test_a_copy_on_a_folder_whose_root_is_not_there_is_not_found_missing(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path
) -> None:
    """The volume that holds ``backup``'s root is not mounted: every path under it
    is "no such file". That is the backend out of reach, not an answer about the
    copy's bytes: the verification concludes nothing and is retried."""
    from connectors.errors import BackendUnavailable

    item = make_item(folders, files={"a": b"alpha", "b": b"bravo"}, on=("local", "backup"))
    folders["backup"].root.rename(tmp_path / "unmounted")

    with pytest.raises(BackendUnavailable, match="root"):
        verify_item_files(item.id, "backup", None, connectors=folders.__getitem__, now=NOW)

    assert location(item, "backup").status == "OK"
    assert LocationFile.select().where(LocationFile.problem.is_null(False)).count() == 0
    assert lost_files([item.id]) == {}
