"""Importing an item again while its copies change."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import peewee as pw

from catalog.models import (
    STATUS_DELETING,
    ReferencedPath,
    StorageLocation,
)
from catalog.queries import forget_files, mark_files_to_delete, ok_locations
from catalog.streaming import import_document

CONNECTORS = frozenset({"local", "S3"})
MD5 = "0123456789abcdef0123456789abcdef"


def document(**overrides: Any) -> dict[str, Any]:
    """An item with two files and a copy on ``local`` and on ``S3``."""
    item: dict[str, Any] = {
        "key": "a",
        "data_slug": "slug",
        "created": "2026-01-01T00:00:00Z",
        "locations": [
            {"connector": "local", "url": "a", "status": "OK"},
            {"connector": "S3", "url": "a", "status": "OK"},
        ],
        "files": [
            {"path": "one", "size": 3, "md5": MD5, "crc32c": "364b3fb7"},
            {"path": "two", "size": 3, "md5": "f" * 32, "crc32c": "ffffffff"},
        ],
    }
    item.update(overrides)
    return {"items": [item]}


def test_a_reimport_does_not_make_a_copy_being_deleted_count_again(
    catalog_db: pw.Database,
) -> None:
    """A delete of the copy on S3 is under way: ``one`` is removed already. The
    producer's document, imported again (its data_slug changed), still lists the
    copy as OK. The catalog knows better: that copy lacks ``one`` and must not count
    (a copy on DM stays DM whatever the document says; a DE one should not become
    a healthy copy either)."""
    import_document(document(), connectors=CONNECTORS, database=catalog_db)
    s3 = StorageLocation.get(StorageLocation.connector_name == "S3")
    one = ReferencedPath.get(ReferencedPath.path == "one")
    # The delete decided (as workers.operations._decide does), then removed ``one``.
    StorageLocation.update(status=STATUS_DELETING, files_recorded=False).where(
        StorageLocation.id == s3.id
    ).execute()
    mark_files_to_delete(s3.id, s3.file_storage_id, now=datetime(2026, 6, 1))
    assert not forget_files(s3.id, [one.id])  # ``two`` is left to remove

    import_document(
        copy.deepcopy(document(data_slug="renamed")), connectors=CONNECTORS, database=catalog_db
    )

    s3 = StorageLocation.get(StorageLocation.connector_name == "S3")
    counting = {loc.connector_name for loc in ok_locations(s3.file_storage_id)}
    assert "S3" not in counting, (
        f"a copy half deleted is {s3.status} and counts as a copy: {sorted(counting)}"
    )


def test_an_etag_of_another_part_size_keeps_the_size_and_hashes_of_the_same_bytes(
    catalog_db: pw.Database,
) -> None:
    """A producer that uploaded with 16 MiB parts knows the file by that etag alone.
    An etag of another part size is another etag of the same bytes (the import says
    so: the file did not change, the copies stay good), so the size, md5 and crc32c
    that prove those bytes must stay: without them no copy or verification of the
    file compares anything but an etag they never look at."""
    import_document(document(), connectors=CONNECTORS, database=catalog_db)
    other_parts = document(
        files=[{"path": "one", "awss3etag": "a" * 32 + "-2", "chunk_size": 16 * 1024 * 1024}]
    )
    import_document(other_parts, connectors=CONNECTORS, database=catalog_db)

    one = ReferencedPath.get(ReferencedPath.path == "one")
    assert all(loc.status == "OK" for loc in StorageLocation.select())  # the same bytes
    assert (one.size, one.md5, one.crc32c) == (3, MD5, "364b3fb7"), (
        "the hashes of bytes the import says are unchanged were cleared"
    )


def test_an_etag_of_another_part_size_alone_is_taken_as_a_new_version(
    catalog_db: pw.Database,
) -> None:
    """The catalog knows ``one`` by its size, hashes and an etag of 8 MiB parts;
    the document asserts ``local`` holds it, and gives only an etag of 16 MiB
    parts. Nothing says whether those are the same bytes, so the file is taken as
    changed: the copy the document does not assert (S3) stops counting and is
    copied again, and the old bytes' size and hashes are not kept for new ones."""
    first = document(
        files=[
            {"path": "one", "size": 3, "md5": MD5, "crc32c": "364b3fb7", "awss3etag": MD5},
            {"path": "two", "size": 3, "md5": "f" * 32, "crc32c": "ffffffff"},
        ]
    )
    import_document(first, connectors=CONNECTORS, database=catalog_db)
    etag = "b" * 32 + "-2"
    again = document(
        locations=[{"connector": "local", "url": "a", "status": "OK"}],
        files=[{"path": "one", "awss3etag": etag, "chunk_size": 16 * 1024 * 1024}],
    )
    import_document(again, connectors=CONNECTORS, database=catalog_db)

    one = ReferencedPath.get(ReferencedPath.path == "one")
    assert (one.size, one.md5, one.crc32c, one.awss3etag) == (None, None, None, etag)
    status = {loc.connector_name: loc.status for loc in StorageLocation.select()}
    assert status == {"local": "OK", "S3": "DM"}
