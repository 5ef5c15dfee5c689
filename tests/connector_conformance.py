"""One conformance suite for every connector, and the transfer engine over it.

A backend's test module subclasses ``ConformanceSuite`` and provides two
fixtures: ``connector`` (a connector at a fresh, empty root) and
``local_source`` (a local connector to copy from). The suite then holds the
backend to the contract of ``connectors.base.Connector`` and checks that
``connectors.transfer.copy_file`` into it validates, skips, and removes what
is corrupt.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

import pytest

from connectors.base import Connector, ObjectInfo, delete_all
from connectors.errors import ChecksumMismatch, InvalidPath, ObjectNotFound
from connectors.hashing import MultiHasher
from connectors.transfer import Expected, copy_file

BAD_PATHS = ["", "/abs", "../up", "a/../../b", "a/./b", "a//b", "a\\b", "nul\x00"]
#: Names a backend keeps as given: characters that URLs, shells and filesystems treat
#: apart, Unicode in both normal forms, names differing only in case.
UNUSUAL_NAMES = [
    "u/a b.txt",
    "u/a+b",
    "u/a%b",
    "u/a%20b",
    "u/a#b",
    "u/a?b",
    "u/a&b=c;d",
    "u/a:b@c",
    "u/!$'()*,~",
    "u/日本 😀",
    "u/nfc é",
    "u/nfd e\u0301",
    "u/Case",
    "u/case",
    "u/-dash",
    "u/.dot",
    "u/trailing ",
    "u/trailing.",
    "u/1:x",
]


def hashes_of(data: bytes, chunk_size: int = 8 * 1024 * 1024) -> Expected:
    hasher = MultiHasher(chunk_size=chunk_size)
    hasher.update(data)
    return Expected.of(hasher.result())


def read_all(connector: Connector, path: str) -> bytes:
    with connector.open_read(path) as stream:
        return stream.read()


class FailingStream(io.RawIOBase):
    """Yields ``good`` bytes, then raises: a source that dies midway."""

    def __init__(self, good: bytes) -> None:
        self._good = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._good.readinto(buffer)
        if not count:
            raise OSError("the source went away")
        return count


class CorruptInTransit(Connector):
    """Passes everything to ``inner``, but flips one byte of what ``write`` sends."""

    def __init__(self, inner: Connector, *, at: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.native_hashes = inner.native_hashes
        self.write_hashes = inner.write_hashes
        self.at = at
        part_size = getattr(inner, "part_size", None)
        if part_size is not None:
            self.part_size = part_size

    def stat(self, path: str) -> ObjectInfo | None:
        return self.inner.stat(path)

    def open_read(self, path: str) -> BinaryIO:
        return self.inner.open_read(path)

    def write(self, path: str, stream: BinaryIO, *, size: int | None = None) -> ObjectInfo:
        data = bytearray(stream.read())
        data[self.at] ^= 0x01
        return self.inner.write(path, io.BytesIO(bytes(data)), size=size)

    def delete(self, path: str, *, within: str = "") -> None:
        self.inner.delete(path)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)


class ConformanceSuite:
    """The contract every connector keeps; subclass it with the two fixtures."""

    # -- the core ---------------------------------------------------------

    def test_round_trip(self, connector: Connector) -> None:
        data = os.urandom(100_000)
        info = connector.write("item/reads.fastq.gz", io.BytesIO(data), size=len(data))
        assert (info.path, info.size) == ("item/reads.fastq.gz", len(data))
        assert read_all(connector, "item/reads.fastq.gz") == data
        stat = connector.stat("item/reads.fastq.gz")
        assert stat is not None and stat.size == len(data)

    def test_empty_object(self, connector: Connector) -> None:
        connector.write("empty", io.BytesIO(b""), size=0)
        assert read_all(connector, "empty") == b""
        stat = connector.stat("empty")
        assert stat is not None and stat.size == 0

    def test_write_replaces(self, connector: Connector) -> None:
        connector.write("x/y", io.BytesIO(b"first version"))
        connector.write("x/y", io.BytesIO(b"second"))
        assert read_all(connector, "x/y") == b"second"

    def test_missing(self, connector: Connector) -> None:
        assert connector.stat("no/such/object") is None
        with pytest.raises(ObjectNotFound):
            connector.open_read("no/such/object")

    def test_delete_is_idempotent(self, connector: Connector) -> None:
        connector.write("d/one", io.BytesIO(b"1"))
        connector.delete("d/one")
        assert connector.stat("d/one") is None
        connector.delete("d/one")
        connector.delete("never/there")

    def test_delete_all_removes_many_at_once(self, connector: Connector) -> None:
        paths = [f"many/{n:04d}" for n in range(1_005)]  # more than one S3 request
        for path in paths[:7] + paths[-3:]:
            connector.write(path, io.BytesIO(path.encode()))
        connector.write("many-kept", io.BytesIO(b"k"))
        delete_all(connector, paths)  # most were never there: fine
        assert [info.path for info in connector.list("many")] == ["many-kept"]
        delete_all(connector, [])

    def test_list_under_a_prefix(self, connector: Connector) -> None:
        for path in ["a/1", "a/2", "a/sub/3", "ab/4", "b/5"]:
            connector.write(path, io.BytesIO(path.encode()))
        listed = [(info.path, info.size) for info in connector.list("a/")]
        assert listed == [("a/1", 3), ("a/2", 3), ("a/sub/3", 7)]
        assert [info.path for info in connector.list("a")] == ["a/1", "a/2", "a/sub/3", "ab/4"]
        assert [info.path for info in connector.list("")] == [
            "a/1",
            "a/2",
            "a/sub/3",
            "ab/4",
            "b/5",
        ]
        assert list(connector.list("nothing/")) == []

    def test_a_listing_comes_in_path_order_with_times(self, connector: Connector) -> None:
        """As strings compare (S3's order): a listing merges with the catalog in one pass."""
        paths = ["t/a/x", "t/a-b/x", "t/a.txt", "t/a/b/c", "t/Z", "t/é", "t/a0", "t/a!"]
        began = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=5)
        for path in paths:
            connector.write(path, io.BytesIO(b"1"))
        listed = list(connector.list("t/"))
        assert [info.path for info in listed] == sorted(paths)
        assert all(info.modified is not None and info.modified > began for info in listed)

    def test_names_with_unusual_characters_are_kept_as_given(self, connector: Connector) -> None:
        """Each name is its own object: written, read, stated, listed in order, deleted."""
        names = [*UNUSUAL_NAMES, "u/" + "n" * 255, "u/" + "é" * 127]  # 255 and 254 bytes
        for name in names:
            connector.write(name, io.BytesIO(name.encode()), size=len(name.encode()))
        for name in names:
            assert read_all(connector, name) == name.encode(), name
            info = connector.stat(name)
            assert info is not None and info.size == len(name.encode()), name
        assert [info.path for info in connector.list("u/")] == sorted(names)
        assert [info.path for info in connector.list("u/nf")] == ["u/nfc é", "u/nfd e\u0301"]
        delete_all(connector, names[::2])
        for name in names[1::2]:
            connector.delete(name)
        assert list(connector.list("u/")) == []

    def test_a_failed_write_leaves_nothing(self, connector: Connector) -> None:
        with pytest.raises(OSError, match="went away"):
            connector.write("half/written", FailingStream(b"x" * 70_000))  # type: ignore[arg-type]
        assert connector.stat("half/written") is None
        assert list(connector.list("half/")) == []

    def test_a_failed_write_keeps_the_old_object(self, connector: Connector) -> None:
        connector.write("keep", io.BytesIO(b"the old bytes"))
        with pytest.raises(OSError):
            connector.write("keep", FailingStream(b"new" * 10_000))  # type: ignore[arg-type]
        assert read_all(connector, "keep") == b"the old bytes"

    @pytest.mark.parametrize("path", BAD_PATHS)
    def test_bad_paths_are_refused(self, connector: Connector, path: str) -> None:
        with pytest.raises(InvalidPath):
            connector.stat(path)
        with pytest.raises(InvalidPath):
            connector.open_read(path)
        with pytest.raises(InvalidPath):
            connector.write(path, io.BytesIO(b"x"))
        with pytest.raises(InvalidPath):
            connector.delete(path)

    # -- the transfer engine into this backend ----------------------------

    def test_copy_validates_then_skips(self, connector: Connector, local_source: Connector) -> None:
        data = os.urandom(3 * 1024 * 1024 + 17)
        local_source.write("item/big.bin", io.BytesIO(data))
        expected = hashes_of(data)
        first = copy_file(
            local_source, "item/big.bin", connector, "item/big.bin", expected=expected
        )
        assert first.how in ("streamed", "server-side")
        assert first.validated_by
        assert read_all(connector, "item/big.bin") == data
        again = copy_file(
            local_source, "item/big.bin", connector, "item/big.bin", expected=expected
        )
        assert again.how == "skipped"

    def test_copy_replaces_a_wrong_object(
        self, connector: Connector, local_source: Connector
    ) -> None:
        local_source.write("f", io.BytesIO(b"the right bytes"))
        connector.write("f", io.BytesIO(b"the wrong bytes"))
        right = hashes_of(b"the right bytes")
        result = copy_file(local_source, "f", connector, "f", expected=right)
        assert result.how in ("streamed", "server-side")
        assert read_all(connector, "f") == b"the right bytes"

    def test_corruption_in_transit_is_caught_and_removed(
        self, connector: Connector, local_source: Connector
    ) -> None:
        data = os.urandom(200_000)
        local_source.write("c", io.BytesIO(data))
        corrupting = CorruptInTransit(connector, at=123_456)
        with pytest.raises(ChecksumMismatch, match="removed"):
            copy_file(local_source, "c", corrupting, "c", expected=hashes_of(data))
        assert connector.stat("c") is None

    def test_corruption_in_transit_is_caught_without_catalog_hashes(
        self, connector: Connector, local_source: Connector
    ) -> None:
        """New data: the catalog knows no hash yet, so the bytes are hashed in passing."""
        data = os.urandom(200_000)
        local_source.write("n", io.BytesIO(data))
        with pytest.raises(ChecksumMismatch, match="removed"):
            copy_file(local_source, "n", CorruptInTransit(connector, at=7), "n")
        assert connector.stat("n") is None

    def test_source_differing_from_the_catalog_is_caught(
        self, connector: Connector, local_source: Connector
    ) -> None:
        local_source.write("s", io.BytesIO(b"bit rot happened"))
        with pytest.raises(ChecksumMismatch, match="catalog"):
            copy_file(local_source, "s", connector, "s", expected=hashes_of(b"bit rot happen3d"))
        assert connector.stat("s") is None

    def test_missing_source_is_permanent(
        self, connector: Connector, local_source: Connector
    ) -> None:
        with pytest.raises(ObjectNotFound) as caught:
            copy_file(local_source, "gone", connector, "gone", expected=hashes_of(b""))
        assert not caught.value.transient
        assert connector.stat("gone") is None
