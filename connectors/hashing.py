"""Computing every hash the catalog keeps, in one pass over the bytes.

md5, crc32c and the S3 etag (md5 of the part md5s, ``-N`` for N parts, or the
plain md5 for a single part, as S3 reports it) come out of one read.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import mmap
import os
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NamedTuple


def _crc32c_function() -> Callable[..., int]:
    """The ``crc32c`` package's C function, loaded without running the package's ``__init__``.

    That ``__init__`` looks its own version up through ``importlib.metadata``:
    25-40 ms of every start-up of ours (a CLI command, a benchmarked copy)
    for nothing we use. Anything unexpected about the package's layout falls
    back to the plain import.
    """
    try:
        spec = importlib.util.find_spec("crc32c")  # finds the package, runs nothing
        folder = spec.submodule_search_locations[0] if spec is not None else None  # type: ignore[index]
        for suffix in importlib.machinery.EXTENSION_SUFFIXES if folder else ():
            path = os.path.join(folder, f"_crc32c{suffix}")
            if os.path.exists(path):
                loader = importlib.machinery.ExtensionFileLoader("crc32c._crc32c", path)
                found = importlib.util.spec_from_file_location(
                    "crc32c._crc32c", path, loader=loader
                )
                module: Any = importlib.util.module_from_spec(found)  # type: ignore[arg-type]
                loader.exec_module(module)
                return module.crc32c  # type: ignore[no-any-return]
    except (ImportError, OSError, AttributeError, IndexError, TypeError):
        pass
    import crc32c as package

    return package.crc32c  # type: ignore[no-any-return]


#: ``crc32c(data, value=0)``: the CRC32C of ``data``, continuing from ``value``
#: (hardware-accelerated, about 10 GB/s here).
crc32c = _crc32c_function()

#: Bytes read per call; large enough that hashing, not the calls, dominates.
DEFAULT_READ_SIZE = 4 * 1024 * 1024
#: Bytes of the first read of a stream: a small file's whole. A buffer of
#: ``DEFAULT_READ_SIZE`` made for each file cost 79 us of the 113 us a
#: verification spent on a file of 1 KiB; a stream that fills this one goes
#: on with the large one.
DEFAULT_FIRST_READ_SIZE = 64 * 1024
#: Bytes of a file mapped at once when hashing it in place: bounds the memory.
DEFAULT_MAP_SIZE = 8 * 1024 * 1024
#: Part size of the S3 etag when nothing else is known (S3's and boto3's default).
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024


class FileHashes(NamedTuple):
    """Size and hashes of one file; hex digests, lowercase."""

    size: int
    md5: str
    crc32c: str
    awss3etag: str
    chunk_size: int


class MultiHasher:
    """Feed bytes once, get md5, crc32c and the S3 etag.

    The etag needs the md5 of each ``chunk_size`` part besides the md5 of the
    whole; a file of one part reuses the whole-file md5.
    """

    def __init__(self, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        self.chunk_size = chunk_size
        self.size = 0
        self._md5 = hashlib.md5()
        self._crc = 0
        self._part = hashlib.md5()
        self._part_filled = 0
        self._part_digests: list[bytes] = []

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next bytes of the stream."""
        view = memoryview(data)
        self.size += len(view)
        self._md5.update(view)
        self._crc = crc32c(view, self._crc)
        while len(view):
            room = self.chunk_size - self._part_filled
            piece, view = view[:room], view[room:]
            self._part.update(piece)
            self._part_filled += len(piece)
            if self._part_filled == self.chunk_size:
                self._part_digests.append(self._part.digest())
                self._part = hashlib.md5()
                self._part_filled = 0

    def result(self) -> FileHashes:
        """The hashes of everything fed so far."""
        digests = list(self._part_digests)
        if self._part_filled or not digests:
            digests.append(self._part.digest())
        md5 = self._md5.hexdigest()
        if len(digests) == 1:
            etag = md5
        else:
            etag = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
        return FileHashes(
            size=self.size,
            md5=md5,
            crc32c=f"{self._crc:08x}",
            awss3etag=etag,
            chunk_size=self.chunk_size,
        )


def read_blocks(stream: BinaryIO) -> Iterator[memoryview]:
    """The bytes of ``stream`` to its end, a block at a time, each valid until the next.

    Read into one buffer, ``DEFAULT_FIRST_READ_SIZE`` first and
    ``DEFAULT_READ_SIZE`` once a read fills that: a small file costs no
    large buffer, a large one few calls.
    """
    buffer = bytearray(DEFAULT_FIRST_READ_SIZE)
    view = memoryview(buffer)
    while count := stream.readinto(buffer):  # type: ignore[attr-defined]
        yield view[:count]
        if count == len(buffer) and len(buffer) < DEFAULT_READ_SIZE:
            buffer = bytearray(DEFAULT_READ_SIZE)
            view = memoryview(buffer)


def hash_stream(
    stream: BinaryIO, *, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: object = None
) -> FileHashes:
    """Hash ``stream`` to its end in one read; ``progress(n)`` is told of each block."""
    hasher = MultiHasher(chunk_size=chunk_size)
    for block in read_blocks(stream):
        hasher.update(block)
        if progress is not None:
            progress(len(block))  # type: ignore[operator]
    return hasher.result()


def etag_differs(hashes: FileHashes, etag: str) -> str | None:
    """The etag of the bytes ``hashes`` describe, where it is not ``etag``; None where it is.

    For bytes the catalog knows by their S3 etag alone: ``hashes`` must be
    computed with the part size the catalog's etag was (its
    ``chunk_size``). An etag of a single upload is the md5; one of a
    multipart upload is the md5 of its parts' md5s and their count, one
    part (``-1``) included.
    """
    wanted = etag.lower()
    if "-" not in wanted:
        found = hashes.md5
    elif wanted.endswith("-1"):
        found = f"{hashlib.md5(bytes.fromhex(hashes.md5)).hexdigest()}-1"
    else:
        found = hashes.awss3etag
    return None if found == wanted else found


def crc32c_stream(stream: BinaryIO) -> tuple[int, str]:
    """Size and crc32c (8 hex digits) of ``stream`` to its end: the cheap check, alone."""
    value = 0
    size = 0
    for block in read_blocks(stream):
        value = crc32c(block, value)
        size += len(block)
    return size, f"{value:08x}"


#: Files up to this size are read into memory to be hashed, not mapped.
DEFAULT_READ_LIMIT = 1024 * 1024


def crc32c_file(descriptor: int, size: int) -> str:
    """crc32c of the first ``size`` bytes of an open file, hashed where they lie.

    The file is mapped a window at a time, so nothing is copied into user
    space and memory stays bounded. The file must not shrink meanwhile (a
    mapped page past the end faults): use it on files of one's own.
    """
    if size <= DEFAULT_READ_LIMIT:
        # A small file is cheaper read than mapped: unmapping makes every
        # thread of the process flush its view of memory (a TLB shootdown).
        data = os.pread(descriptor, size, 0)
        if len(data) != size:
            raise OSError(f"the file is shorter than {size} bytes")
        return f"{crc32c(data):08x}"
    value = 0
    offset = 0
    while offset < size:
        length = min(DEFAULT_MAP_SIZE, size - offset)
        with (
            mmap.mmap(descriptor, length, access=mmap.ACCESS_READ, offset=offset) as mapped,
            memoryview(mapped) as view,
        ):
            value = crc32c(view, value)
        offset += length
    return f"{value:08x}"
