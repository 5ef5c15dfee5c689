"""Confirming a copy before a delete: listings of the few folders that hold the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from catalog.models import FileStorage, ReferencedPath, StorageLocation
from connectors.local import LocalConnector
from workers import confirm as confirm_module
from workers.confirm import DEFAULT_LISTED_FOLDERS, confirm_copy

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


def test_a_small_item_s_few_folders_are_confirmed_by_one_listing(
    catalog_db: pw.Database, tmp_path: Path
) -> None:
    """One page holds the whole copy: one request, not one a folder."""
    location, connector, entries = copy_of(tmp_path)
    assert confirm_copy(location, connector, [entries["a/x.txt"], entries["b/z.txt"]]) == []
    assert connector.listed == ["item/"]


def test_files_of_a_few_folders_of_a_large_item_are_confirmed_by_listing_each_folder(
    catalog_db: pw.Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A page of one object: the copy takes 4 pages, folders a and b 2 and 1.
    monkeypatch.setattr(confirm_module, "DEFAULT_LISTING_PAGE", 1)
    location, connector, entries = copy_of(tmp_path)
    assert confirm_copy(location, connector, [entries["a/x.txt"], entries["b/z.txt"]]) == []
    assert connector.listed == ["item/a/", "item/b/"]
    (tmp_path / "copy" / "item" / "b" / "z.txt").unlink()
    problems = confirm_copy(location, connector, [entries["a/x.txt"], entries["b/z.txt"]])
    assert [(p.path, p.problem) for p in problems] == [("b/z.txt", "missing")]


def test_a_folder_inside_another_is_listed_with_it(catalog_db: pw.Database, tmp_path: Path) -> None:
    location, connector, entries = copy_of(tmp_path)
    inner = tmp_path / "copy" / "item" / "a" / "deep" / "w.txt"
    inner.parent.mkdir()
    inner.write_bytes(b"w")
    entry = ReferencedPath.create(file_storage=location.file_storage, path="a/deep/w.txt", size=1)
    assert confirm_copy(location, connector, [entry, entries["a/x.txt"]]) == []
    assert connector.listed == ["item/a/"]


def test_files_of_many_folders_are_confirmed_by_one_listing_of_their_parent(
    catalog_db: pw.Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(confirm_module, "DEFAULT_LISTING_PAGE", 1)
    location, connector, _ = copy_of(tmp_path)
    many = []
    for number in range(DEFAULT_LISTED_FOLDERS + 1):
        target = tmp_path / "copy" / "item" / "many" / f"f{number}" / "v.txt"
        target.parent.mkdir(parents=True)
        target.write_bytes(b"v")
        path = f"many/f{number}/v.txt"
        many.append(ReferencedPath.create(file_storage=location.file_storage, path=path, size=1))
    assert confirm_copy(location, connector, many) == []
    assert connector.listed == ["item/many/"]
    many[3].size = 2
    problems = confirm_copy(location, connector, many)
    assert [(p.path, p.problem) for p in problems] == [("many/f3/v.txt", "size 1, catalog says 2")]


def test_files_of_the_copy_s_own_folder_are_confirmed_by_listing_the_copy(
    catalog_db: pw.Database, tmp_path: Path
) -> None:
    location, connector, entries = copy_of(tmp_path)
    assert confirm_copy(location, connector, list(entries.values())) == []
    assert connector.listed == ["item/"]
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


def test_the_files_under_a_folder_are_counted_by_their_path_s_bytes(
    catalog_db: pw.Database,
) -> None:
    item = FileStorage.create(key="counted")
    for path in ("a/x", "a/b/y", "a-b/z", "a0", "ab/w", "A/q", "a.txt", "b/a/v"):
        ReferencedPath.create(file_storage=item, path=path, size=1)
    assert confirm_module._files_under(item.id, "a") == 2
    assert confirm_module._files_under(item.id, "a/b") == 1
    assert confirm_module._files_under(item.id, "") == 8
