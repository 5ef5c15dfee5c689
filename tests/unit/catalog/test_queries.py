"""Named catalog queries: what each writes, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime

import peewee as pw

from catalog.models import FileStorage, LocationFile, ReferencedPath, StorageLocation
from catalog.queries import mark_files_to_delete

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
