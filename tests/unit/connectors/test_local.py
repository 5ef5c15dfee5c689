"""The local connector: the conformance suite, plus what only a folder has."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from connectors.base import Connector, ObjectInfo
from connectors.errors import ChecksumMismatch, InvalidPath, Unsupported
from connectors.local import PARTIAL_SUFFIX, LocalConnector
from connectors.transfer import copy_file
from tests.connector_conformance import ConformanceSuite, CorruptInTransit, hashes_of


@pytest.fixture
def connector(tmp_path: Path) -> LocalConnector:
    return LocalConnector("local", path=tmp_path / "root", public_url="/local_data/")


@pytest.fixture
def local_source(tmp_path: Path) -> LocalConnector:
    return LocalConnector("source", path=tmp_path / "source")


class TestLocalConformance(ConformanceSuite):
    pass


def test_symlink_out_of_the_root_is_refused_before_io(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "item").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "item" / "escape").symlink_to(outside)
    (root / "item" / "file-link").symlink_to(outside / "secret")
    connector = LocalConnector("local", path=root)
    for path in ["item/escape/secret", "item/file-link", "item/escape/new"]:
        with pytest.raises(InvalidPath, match="outside the root"):
            connector.stat(path)
        with pytest.raises(InvalidPath):
            connector.write(path, io.BytesIO(b"overwrite"))
        with pytest.raises(InvalidPath):
            connector.delete(path)
    assert (outside / "secret").read_bytes() == b"secret"
    assert sorted(os.listdir(outside)) == ["secret"]


def test_a_symlink_within_the_root_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    connector = LocalConnector("local", path=root)
    connector.write("real/file", io.BytesIO(b"data"))
    (root / "alias").symlink_to(root / "real")
    assert connector.stat("alias/file") is not None


def test_partial_files_are_never_listed(connector: LocalConnector) -> None:
    connector.write("a/done", io.BytesIO(b"x"))
    (connector.root / "a" / f".b.1234{PARTIAL_SUFFIX}").write_bytes(b"half")
    assert [info.path for info in connector.list()] == ["a/done"]


def test_delete_prunes_empty_folders_but_not_the_root(connector: LocalConnector) -> None:
    connector.write("item/sub/file", io.BytesIO(b"x"))
    connector.write("other/file", io.BytesIO(b"y"))
    connector.delete("item/sub/file")
    assert not (connector.root / "item").exists()
    assert (connector.root / "other" / "file").exists()
    connector.delete("other/file")
    assert connector.root.is_dir() and list(connector.root.iterdir()) == []


def test_public_url(connector: LocalConnector, tmp_path: Path) -> None:
    assert connector.public_url("item 1/a#b.txt") == "/local_data/item%201/a%23b.txt"
    assert "public_url" in connector.capabilities()
    bare = LocalConnector("bare", path=tmp_path)
    with pytest.raises(Unsupported):
        bare.public_url("x")


def test_a_copy_with_catalog_hashes_is_proven_by_what_was_written(
    connector: Connector, local_source: Connector
) -> None:
    """The destination's crc32c of what it wrote, against the catalog: no hashing in passing."""
    local_source.write("x", io.BytesIO(b"payload"))
    result = copy_file(local_source, "x", connector, "x", expected=hashes_of(b"payload"))
    assert (result.how, result.validated_by, result.hashes) == ("streamed", "crc32c", None)


def test_a_copy_without_catalog_hashes_hashes_in_passing(
    connector: Connector, local_source: Connector
) -> None:
    local_source.write("x", io.BytesIO(b"payload"))
    result = copy_file(local_source, "x", connector, "x")
    assert result.hashes is not None and result.hashes.crc32c == hashes_of(b"payload").crc32c
    assert result.validated_by == "crc32c"


class HashlessLocal(LocalConnector):
    """A backend that reports no hash of what it stored."""

    write_hashes = frozenset()

    def write(self, path: str, stream: BinaryIO, *, size: int | None = None) -> ObjectInfo:
        info = super().write(path, stream, size=size)
        return ObjectInfo(info.path, info.size, {})


def test_a_backend_without_hashes_is_read_back(tmp_path: Path, local_source: Connector) -> None:
    destination = HashlessLocal("plain", path=tmp_path / "plain")
    local_source.write("x", io.BytesIO(b"payload"))
    reads: list[str] = []
    original = destination.open_read

    def counting_open_read(path: str) -> BinaryIO:
        reads.append(path)
        return original(path)

    destination.open_read = counting_open_read  # type: ignore[method-assign]
    result = copy_file(local_source, "x", destination, "x", expected=hashes_of(b"payload"))
    assert result.validated_by == "crc32c, read back" and reads == ["x"]
    corrupting = CorruptInTransit(destination, at=3)
    with pytest.raises(ChecksumMismatch, match="read back"):
        copy_file(local_source, "x", corrupting, "y", expected=hashes_of(b"payload"))
    assert destination.stat("y") is None


def test_a_known_listing_saves_the_stat(connector: LocalConnector, local_source: Connector) -> None:
    local_source.write("x", io.BytesIO(b"payload"))
    calls: list[str] = []
    original = connector.stat

    def counting_stat(path: str) -> ObjectInfo | None:
        calls.append(path)
        return original(path)

    connector.stat = counting_stat  # type: ignore[method-assign]
    copy_file(local_source, "x", connector, "x", expected=hashes_of(b"payload"), present=None)
    assert calls == []
    listed = {info.path: info for info in connector.list()}
    again = copy_file(
        local_source, "x", connector, "x", expected=hashes_of(b"payload"), present=listed["x"]
    )
    assert again.how == "skipped" and calls == []
