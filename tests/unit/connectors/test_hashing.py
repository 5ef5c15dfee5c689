"""md5, crc32c and the S3 etag from one pass, checked against independent computations."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import crc32c
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.hashing import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_FIRST_READ_SIZE,
    DEFAULT_READ_LIMIT,
    DEFAULT_READ_SIZE,
    FileHashes,
    MultiHasher,
    crc32c_file,
    crc32c_stream,
    etag_differs,
    hash_stream,
    read_blocks,
)

EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
ABC_MD5 = "900150983cd24fb0d6963f7d28e17f72"


def reference_etag(data: bytes, chunk_size: int) -> str:
    """The S3 etag as S3 computes it, written independently of the code under test."""
    parts = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""]
    if len(parts) == 1:
        return hashlib.md5(data).hexdigest()
    joined = b"".join(hashlib.md5(part).digest() for part in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


def reference(data: bytes, chunk_size: int) -> FileHashes:
    return FileHashes(
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        crc32c=f"{crc32c.crc32c(data):08x}",
        awss3etag=reference_etag(data, chunk_size),
        chunk_size=chunk_size,
    )


def hashed(data: bytes, *, chunk_size: int, pieces: int | None = None) -> FileHashes:
    """Feed ``data`` to a MultiHasher ``pieces`` bytes at a time (all at once if None)."""
    hasher = MultiHasher(chunk_size=chunk_size)
    step = pieces or max(len(data), 1)
    for start in range(0, len(data), step):
        hasher.update(data[start : start + step])
    return hasher.result()


def test_known_values_of_the_empty_input() -> None:
    result = hashed(b"", chunk_size=DEFAULT_CHUNK_SIZE)
    assert result == FileHashes(
        size=0,
        md5=EMPTY_MD5,
        crc32c="00000000",
        awss3etag=EMPTY_MD5,
        chunk_size=DEFAULT_CHUNK_SIZE,
    )


def test_known_values_of_abc() -> None:
    """crc32c is stored as 8 lowercase hex digits, as the import document carries it."""
    result = hashed(b"abc", chunk_size=DEFAULT_CHUNK_SIZE)
    assert result.md5 == ABC_MD5
    assert result.crc32c == "364b3fb7"
    assert result.awss3etag == ABC_MD5
    assert result.size == 3


def test_known_crc32c_check_value() -> None:
    """The CRC-32C check value of the standard test vector."""
    assert hashed(b"123456789", chunk_size=4).crc32c == "e3069283"


CHUNK = 1024


@pytest.mark.parametrize(
    ("size", "parts"),
    [
        (0, None),
        (1, None),
        (CHUNK - 1, None),
        (CHUNK, None),
        (CHUNK + 1, 2),
        (2 * CHUNK, 2),
        (2 * CHUNK + 1, 3),
        (5 * CHUNK, 5),
    ],
)
def test_s3_etag(size: int, parts: int | None) -> None:
    """One part: the plain md5; N parts: md5 of the part md5s and '-N'."""
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert len(data) == size
    result = hashed(data, chunk_size=CHUNK)
    md5 = hashlib.md5(data).hexdigest()
    if parts is None:
        assert result.awss3etag == md5
    else:
        digests = b"".join(hashlib.md5(data[i : i + CHUNK]).digest() for i in range(0, size, CHUNK))
        assert result.awss3etag == f"{hashlib.md5(digests).hexdigest()}-{parts}"
    assert result == reference(data, CHUNK)


def test_two_default_chunks_exactly() -> None:
    """The default part size: exactly two parts, no empty third part."""
    data = b"\x00" * DEFAULT_CHUNK_SIZE + b"\x01" * DEFAULT_CHUNK_SIZE
    result = hash_stream(io.BytesIO(data))
    halves = data[:DEFAULT_CHUNK_SIZE], data[DEFAULT_CHUNK_SIZE:]
    joined = b"".join(hashlib.md5(half).digest() for half in halves)
    assert result.awss3etag == f"{hashlib.md5(joined).hexdigest()}-2"
    assert result.chunk_size == DEFAULT_CHUNK_SIZE
    assert result.size == 2 * DEFAULT_CHUNK_SIZE
    more = hash_stream(io.BytesIO(data + b"\x02"))
    assert more.awss3etag.endswith("-3")
    assert more == reference(data + b"\x02", DEFAULT_CHUNK_SIZE)


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=600),
    chunk_size=st.integers(min_value=1, max_value=130),
    pieces=st.lists(st.integers(min_value=0, max_value=200), max_size=30),
)
def test_split_of_the_input_does_not_matter(
    data: bytes, chunk_size: int, pieces: list[int]
) -> None:
    """Any split of the bytes (empty updates included) gives the same hashes as one update."""
    hasher = MultiHasher(chunk_size=chunk_size)
    start = 0
    for length in pieces:
        hasher.update(data[start : start + length])
        start = min(start + length, len(data))
    hasher.update(data[start:])
    assert hasher.result() == reference(data, chunk_size)
    assert hashed(data, chunk_size=chunk_size) == reference(data, chunk_size)


class TrickleStream(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read, like a slow socket."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = min(len(buffer), self._step, len(self._data))
        buffer[:count] = self._data[:count]
        self._data = self._data[count:]
        return count


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=2000),
    step=st.integers(min_value=1, max_value=700),
    chunk_size=st.integers(min_value=1, max_value=300),
)
def test_hash_stream_is_independent_of_read_sizes(data: bytes, step: int, chunk_size: int) -> None:
    calls: list[int] = []
    result = hash_stream(TrickleStream(data, step), chunk_size=chunk_size, progress=calls.append)
    assert result == reference(data, chunk_size)
    assert result == hash_stream(io.BytesIO(data), chunk_size=chunk_size)
    assert sum(calls) == len(data)
    assert all(0 < count <= step for count in calls)


def test_accepts_bytes_bytearray_and_memoryview() -> None:
    results = set()
    for kind in (bytes, bytearray, memoryview):
        hasher = MultiHasher(chunk_size=2)
        hasher.update(kind(b"hello"))
        results.add(hasher.result())
    assert results == {reference(b"hello", 2)}


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_refuses_a_part_size_below_one(chunk_size: int) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        MultiHasher(chunk_size=chunk_size)


def test_crc32c_stream_alone() -> None:
    import io

    from connectors.hashing import crc32c_stream

    assert crc32c_stream(io.BytesIO(b"abc")) == (3, "364b3fb7")
    assert crc32c_stream(io.BytesIO(b"")) == (0, "00000000")


@pytest.mark.parametrize("size", [0, 1, 16 * 1024, DEFAULT_READ_LIMIT, DEFAULT_READ_LIMIT + 7])
def test_crc32c_file_reads_small_files_and_maps_large_ones_alike(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data + b"tail not hashed")
    with open(path, "rb") as handle:
        assert crc32c_file(handle.fileno(), size) == f"{crc32c.crc32c(data):08x}"


def test_crc32c_file_refuses_a_file_shorter_than_said(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"short")
    with open(path, "rb") as handle, pytest.raises(OSError, match="shorter"):
        crc32c_file(handle.fileno(), 100)


def test_the_crc32c_function_is_the_packages_own_loaded_without_its_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connectors import hashing

    assert hashing.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert hashing.crc32c(b"6789", hashing.crc32c(b"12345")) == 0xE3069283
    assert hashing.crc32c.__module__ == "crc32c._crc32c"
    # A package laid out otherwise: the plain import.
    monkeypatch.setattr(hashing.importlib.util, "find_spec", lambda name: None)
    assert hashing._crc32c_function()(b"123456789") == 0xE3069283


@pytest.mark.parametrize(
    "size",
    [
        0,
        DEFAULT_FIRST_READ_SIZE - 1,
        DEFAULT_FIRST_READ_SIZE,
        DEFAULT_FIRST_READ_SIZE + 1,
        DEFAULT_READ_SIZE + DEFAULT_FIRST_READ_SIZE + 7,
    ],
)
def test_blocks_around_the_first_read_and_the_larger_after(size: int) -> None:
    data = os.urandom(size)
    blocks = [bytes(block) for block in read_blocks(io.BytesIO(data))]
    assert b"".join(blocks) == data
    # A small file in one read of the small buffer; a larger one goes on in large reads.
    assert all(len(block) <= DEFAULT_READ_SIZE for block in blocks)
    if 0 < size <= DEFAULT_FIRST_READ_SIZE:
        assert len(blocks) == 1
    if size > DEFAULT_FIRST_READ_SIZE + DEFAULT_READ_SIZE:
        assert [len(block) for block in blocks[:2]] == [DEFAULT_FIRST_READ_SIZE, DEFAULT_READ_SIZE]
    assert crc32c_stream(io.BytesIO(data)) == (size, f"{crc32c.crc32c(data):08x}")
    assert hash_stream(io.BytesIO(data)) == reference(data, DEFAULT_CHUNK_SIZE)


def test_an_etag_is_judged_as_s3_makes_it_single_multipart_and_multipart_of_one_part() -> None:
    """``etag_differs``: a single upload's etag is the md5; a multipart one is the md5 of
    the parts' md5s and their count, a multipart upload of one part (``-1``) included;
    bytes that are another's are told apart in each form."""
    data = bytes(range(256)) * 40  # 10,240 bytes: 3 parts of 4 KiB
    whole = MultiHasher(chunk_size=4096)
    whole.update(data)
    parts = whole.result()
    md5 = hashlib.md5(data).hexdigest()
    digests = b"".join(hashlib.md5(data[i : i + 4096]).digest() for i in range(0, len(data), 4096))
    three = f"{hashlib.md5(digests).hexdigest()}-3"
    one = f"{hashlib.md5(hashlib.md5(data).digest()).hexdigest()}-1"
    assert parts.awss3etag == three
    single = MultiHasher(chunk_size=1 << 20)
    single.update(data)
    for etag, hashes in ((md5, single.result()), (three, parts), (one, single.result())):
        assert etag_differs(hashes, etag.upper()) is None
    other = MultiHasher(chunk_size=4096)
    other.update(data[:-1] + b"!")
    for etag in (md5, three, one):
        assert etag_differs(other.result(), etag) is not None
