"""Confirming a copy before a delete: one listing, of the narrowest folder that holds the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee as pw

from catalog.models import FileStorage, ReferencedPath, StorageLocation
from connectors.local import LocalConnector
from workers.confirm import confirm_copy

FILES = {"a/x.txt": b"x", "a/y.txt": b"yy", "b/z.txt": b"zzz", "top.txt": b"t"}


class Listing(LocalConnector):
    """A local folder that notes what it was asked to list."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.listed: list[str] = []

    def list(self, prefix: str = "") -> Any:
        self.listed.append(prefix)
        return super().list(prefix)


def copy_of(tmp_path: Path) -> tuple[StorageLocation, Listing, dict[str, ReferencedPath]]:
    item = FileStorage.create(key="item")
    entries = {}
    for path, data in FILES.items():
        target = tmp_path / "copy" / "item" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entries[path] = ReferencedPath.create(file_storage=item, path=path, size=len(data))
    location = StorageLocation.create(
        file_storage=item, connector_name="copy", url="item", status="OK"
    )
    return location, Listing("copy", path=tmp_path / "copy"), entries


def test_files_of_one_folder_are_confirmed_by_listing_that_folder(
    catalog_db: pw.Database, tmp_path: Path
) -> None:
    location, connector, entries = copy_of(tmp_path)
    assert confirm_copy(location, connector, [entries["a/x.txt"], entries["a/y.txt"]]) == []
    assert connector.listed == ["item/a/"]
    (tmp_path / "copy" / "item" / "a" / "y.txt").write_bytes(b"y")  # damaged
    (tmp_path / "copy" / "item" / "a" / "x.txt").unlink()  # lost
    problems = confirm_copy(location, connector, [entries["a/x.txt"], entries["a/y.txt"]])
    assert [(p.path, p.problem) for p in problems] == [
        ("a/x.txt", "missing"),
        ("a/y.txt", "size 1, catalog says 2"),
    ]


def test_files_of_several_folders_are_confirmed_by_listing_the_copy(
    catalog_db: pw.Database, tmp_path: Path
) -> None:
    location, connector, entries = copy_of(tmp_path)
    assert confirm_copy(location, connector, [entries["a/x.txt"], entries["b/z.txt"]]) == []
    assert confirm_copy(location, connector, list(entries.values())) == []
    assert connector.listed == ["item/", "item/"]
    (tmp_path / "copy" / "item" / "b" / "z.txt").unlink()
    problems = confirm_copy(location, connector, list(entries.values()))
    assert [(p.path, p.problem) for p in problems] == [("b/z.txt", "missing")]


def test_a_folder_reached_through_a_link_is_still_confirmed(
    catalog_db: pw.Database, tmp_path: Path
) -> None:
    location, connector, entries = copy_of(tmp_path)
    folder = tmp_path / "copy" / "item" / "a"
    folder.rename(tmp_path / "copy" / "item" / "real-a")
    folder.symlink_to("real-a")
    assert confirm_copy(location, connector, [entries["a/x.txt"], entries["a/y.txt"]]) == []
