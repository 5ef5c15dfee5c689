"""Copying one object between connectors, verified: written once for every backend.

``copy_file`` streams the source to the destination in bounded memory,
computing in that same pass every hash the validation needs (the source is
never read twice), and reports success only when the destination provably
holds the same bytes:

1. *Already there?* When the destination holds an object of the expected
   size whose hash matches the catalog's, nothing is copied: a retried job
   is cheap and idempotent. It is made durable where it may not be yet
   (``connectors.base.make_durable``: left by a writer that died).
2. *Server-side*, when the destination can copy from the source without
   moving the bytes through us (same S3 endpoint, both on GCS, two local
   folders through the kernel's ``copy_file_range``) and the catalog's
   hashes can judge the result, which is then validated against them.
3. *Streamed* otherwise, through a reader that hashes what passes.
4. *Validated*: what was read must match what the catalog expects, and what
   was written must match what was read, by the best hash both sides have:
   crc32c (about 10 GB/s here), else the S3 etag or md5; a destination that
   keeps no hashes (a folder) is re-read with crc32c, and so is one whose
   stated CRC32C the ETag beside it belies (a store that keeps the checksum
   it was sent unchecked: ``_belied``). On a mismatch the destination
   object is removed and ``ChecksumMismatch`` raised.
"""

from __future__ import annotations

import logging
import time
from typing import BinaryIO, NamedTuple

from connectors.base import (
    CRC32C,
    ETAG,
    MD5,
    Connector,
    ObjectInfo,
    ServerSideCopy,
    check_path,
    make_durable,
    make_root,
)
from connectors.errors import ChecksumMismatch, ObjectNotFound, Unsupported
from connectors.hashing import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_READ_SIZE,
    FileHashes,
    MultiHasher,
    crc32c,
    crc32c_stream,
    etag_differs,
    hash_stream,
)

logger = logging.getLogger(__name__)


class Expected(NamedTuple):
    """What the catalog knows of a file; any hash may be missing."""

    size: int | None = None
    md5: str | None = None
    crc32c: str | None = None
    awss3etag: str | None = None
    chunk_size: int | None = None

    @classmethod
    def of(cls, hashes: FileHashes) -> Expected:
        return cls(hashes.size, hashes.md5, hashes.crc32c, hashes.awss3etag, hashes.chunk_size)


class TransferResult(NamedTuple):
    """How one copy went."""

    path: str
    size: int
    #: "skipped" (already there), "server-side" (the destination copied it
    #: without the bytes passing through us) or "streamed".
    how: str
    #: The hash kind that proved the destination right.
    validated_by: str
    #: The hashes computed while streaming (None when nothing was streamed).
    hashes: FileHashes | None
    seconds: float


class _Unknown:
    """Marks "not known yet: ask the destination"."""


UNKNOWN = _Unknown()


class HashingReader:
    """Wraps a binary stream; hashes every byte that is read through it.

    crc32c always; md5 (and the S3 etag parts) only when asked, as md5 costs
    about fifteen times more.
    """

    def __init__(self, stream: BinaryIO, *, md5: bool, chunk_size: int) -> None:
        self._stream = stream
        self._hasher = MultiHasher(chunk_size=chunk_size) if md5 else None
        self._crc = 0
        self.size = 0

    def _feed(self, view: memoryview) -> None:
        self.size += len(view)
        if self._hasher is not None:
            self._hasher.update(view)
        else:
            self._crc = crc32c(view, self._crc)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        reader = getattr(self._stream, "readinto", None)
        if reader is not None:
            count = reader(buffer) or 0
        else:
            data = self._stream.read(len(buffer))
            count = len(data)
            memoryview(buffer)[:count] = data
        if count:
            self._feed(memoryview(buffer)[:count])
        return count

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while data := self.read(DEFAULT_READ_SIZE):
                chunks.append(data)
            return b"".join(chunks)
        data = self._stream.read(size)
        if data:
            self._feed(memoryview(data))
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stream.close()

    def result(self) -> FileHashes:
        """Size and hashes of what was read; md5 and etag empty when not computed."""
        if self._hasher is not None:
            return self._hasher.result()
        return FileHashes(
            size=self.size, md5="", crc32c=f"{self._crc:08x}", awss3etag="", chunk_size=0
        )


def copy_file(
    source: Connector,
    source_path: str,
    destination: Connector,
    destination_path: str,
    *,
    expected: Expected | None = None,
    present: ObjectInfo | _Unknown | None = UNKNOWN,
) -> TransferResult:
    """Copy one object so that the destination provably holds the source's bytes.

    Idempotent: a destination that already holds the expected bytes is left
    alone. ``present`` is what the destination holds at the path, when the
    caller already knows it from a listing (None: nothing), which saves a
    request per file. Raises ``ObjectNotFound`` for a missing source and
    ``ChecksumMismatch`` (after removing the bad destination object) when the
    bytes read differ from ``expected`` or the bytes written from those read.
    A destination root never made is made before it is looked at
    (``connectors.base.make_root``); a caller that passes ``present`` from a
    listing has made it before listing.
    """
    check_path(source_path)
    check_path(destination_path)
    began = time.monotonic()
    expected = expected or Expected()

    if isinstance(present, _Unknown):
        # On the write path, and only here, a root never made is made first:
        # elsewhere its absence is no answer about bytes (``make_root``).
        make_root(destination)
        present = destination.stat(destination_path)
    if present is not None:
        proof = _matches_expected(destination, destination_path, present, expected)
        if proof is not None:
            make_durable(destination, destination_path)  # recorded good next: durable first
            return TransferResult(
                destination_path, present.size, "skipped", proof, None, time.monotonic() - began
            )

    if (
        destination.can(ServerSideCopy)
        and destination.can_copy_from(source)  # type: ignore[attr-defined]
        and _judgeable(expected)
    ):
        try:
            info = destination.copy_from(source, source_path, destination_path)  # type: ignore[attr-defined]
        except Unsupported as exc:
            # The declared fallback: the bytes go through us, and this
            # destination is not asked again (capabilities are found once).
            logger.info("%s; streamed instead", exc)
            destination.lacks(ServerSideCopy)
        else:
            proof = _matches_expected(destination, destination_path, info, expected)
            if proof is None:
                destination.delete(destination_path)
                raise ChecksumMismatch(
                    f"{destination.name}: server-side copy of {source_path!r} to "
                    f"{destination_path!r} does not match the catalog's hashes; removed it"
                )
            return TransferResult(
                destination_path, info.size, "server-side", proof, None, time.monotonic() - began
            )

    # Hash in passing only what the proof needs: a destination that reports
    # the crc32c of what it stored, checked against the catalog's, needs
    # nothing from us; otherwise crc32c, and md5 only for an etag or md5.
    proof_by_destination = _provable_by_destination(destination, expected)
    by_etag = _etag_only(expected)
    wants_md5 = (
        (bool({ETAG, MD5} & destination.write_hashes) and CRC32C not in destination.write_hashes)
        or (not expected.crc32c and bool(expected.md5))
        or by_etag
    )
    # Bytes known by their etag alone are hashed with the catalog's part
    # size, to be compared with it; others with the destination's, whose
    # ETag then proves them.
    chunk_size = (
        expected.chunk_size
        if by_etag
        else part_size_of(destination, expected.size) or expected.chunk_size
    )
    stream = _open(source, source_path)
    reader: BinaryIO | HashingReader = stream
    if not proof_by_destination:
        reader = HashingReader(stream, md5=wants_md5, chunk_size=chunk_size or DEFAULT_CHUNK_SIZE)
    try:
        info = destination.write(destination_path, reader, size=expected.size)  # type: ignore[arg-type]
    finally:
        stream.close()
    computed = reader.result() if isinstance(reader, HashingReader) else None

    problem = _check_written(destination, destination_path, info, computed, expected)
    if problem is not None:
        destination.delete(destination_path)
        raise ChecksumMismatch(
            f"{destination.name}: {destination_path!r} copied from {source.name} {problem}; "
            "removed it"
        )
    if computed is None:
        if CRC32C in info.hashes and expected.crc32c:
            proof = CRC32C
        elif ETAG in info.hashes:
            proof = ETAG
        else:
            proof = f"{CRC32C if expected.crc32c else MD5}, read back"
    else:
        proof = _proof(info, computed) or "crc32c, read back"
    return TransferResult(
        destination_path, info.size, "streamed", proof, computed, time.monotonic() - began
    )


def part_size_of(destination: Connector, size: int | None) -> int | None:
    """The part size ``destination`` uploads ``size`` bytes with (None: it has no parts).

    A multipart ETag is the md5 of the md5s of parts of that size: hashing
    in passing with it lets the ETag S3 returns prove the bytes.
    """
    choose = getattr(destination, "part_size_for", None)
    if choose is not None:
        return int(choose(size))
    return getattr(destination, "part_size", None)


def _etag_only(expected: Expected) -> bool:
    """Whether the catalog knows the bytes by their S3 etag alone (no crc32c, no md5)."""
    return not expected.crc32c and not expected.md5 and bool(expected.awss3etag)


def _judgeable(expected: Expected) -> bool:
    """Whether the catalog knows enough to judge a copy made out of our sight.

    Without a size and a hash, a server-side copy could not be proven, so
    the bytes are streamed and hashed in passing instead.
    """
    return expected.size is not None and bool(expected.crc32c or expected.md5)


def _open(source: Connector, path: str) -> BinaryIO:
    try:
        return source.open_read(path)
    except ObjectNotFound:
        raise
    except FileNotFoundError as exc:  # a backend that forgot to translate
        raise ObjectNotFound(f"{source.name}: {path!r} does not exist") from exc


def _check_written(
    destination: Connector,
    path: str,
    info: ObjectInfo,
    computed: FileHashes | None,
    expected: Expected,
) -> str | None:
    """What is wrong with the object just written, or None when it is proven right."""
    if expected.size is not None and info.size != expected.size:
        return f"has {info.size} bytes, the catalog {expected.size}"
    stored = info.hashes
    if computed is None:
        # The destination hashed what it received; the catalog says what it must be.
        if expected.crc32c and CRC32C in stored:
            if stored[CRC32C] == expected.crc32c.lower():
                if not _belied(stored, expected.md5):
                    return None
                if _read_crc32c(destination, path) == expected.crc32c.lower():
                    return None
                return "does not hold the catalog's bytes (read back; its ETag said so)"
            found = f"crc32c {stored[CRC32C]}, the catalog {expected.crc32c}"
        elif stored.get(ETAG) and stored[ETAG] in _expected_etags(destination, expected):
            return None
        elif not stored.get(ETAG) and CRC32C not in stored:
            # The store stated no hash of what it got (its ETag is none, under
            # SSE-KMS say): the bytes tell.
            if expected.crc32c:
                same = _read_crc32c(destination, path) == expected.crc32c.lower()
            else:
                same = _read_md5(destination, path) == (expected.md5 or "").lower()
            return None if same else "does not hold the catalog's bytes (read back)"
        else:
            found = f"etag {stored.get(ETAG)}, the catalog's md5 {expected.md5}"
        return (
            f"has {found} (the source differs from the catalog, or bytes were corrupted in transit)"
        )
    if expected.crc32c and computed.crc32c != expected.crc32c.lower():
        return f"was read with crc32c {computed.crc32c}, not the catalog's {expected.crc32c}"
    if expected.md5 and computed.md5 and computed.md5 != expected.md5.lower():
        return f"was read with md5 {computed.md5}, not the catalog's {expected.md5}"
    if _etag_only(expected) and (found := etag_differs(computed, expected.awss3etag or "")):
        return f"was read with etag {found}, not the catalog's {expected.awss3etag}"
    if info.size != computed.size:
        return f"has {info.size} bytes, {computed.size} were sent"
    if not stored:
        # A backend that reports no hash: read the destination back (never the source).
        if _read_crc32c(destination, path) != computed.crc32c:
            return "does not hold the bytes that were sent (read back)"
    elif _proof(info, computed) is None:
        if not _etag_of_other_parts(destination, info, computed, expected):
            return "does not hold the bytes that were sent (corrupted in transit)"
        # Hashed with the catalog's part size, uploaded in the destination's:
        # its multipart ETag proves nothing either way; read it back.
        if _read_crc32c(destination, path) != computed.crc32c:
            return "does not hold the bytes that were sent (read back)"
    elif _belied(stored, computed.md5) and _read_crc32c(destination, path) != computed.crc32c:
        return "does not hold the bytes that were sent (read back; its ETag said so)"
    return None


def _belied(stored: dict[str, str], md5: str | None) -> bool:
    """Whether a stated CRC32C is belied by the ETag beside it: the md5 of other bytes.

    A store states the CRC32C of an upload as it was sent (moto_server, and
    stores that do not check checksum headers, store it unchecked); its ETag
    of a single upload is its own md5 of what it got (an ETag that is not
    an md5, under SSE-KMS say, the connector does not report). Where the two
    disagree, only the bytes can tell.
    """
    etag = stored.get(ETAG)
    return (
        CRC32C in stored
        and bool(md5)
        and etag is not None
        and "-" not in etag
        and etag != (md5 or "").lower()
    )


def _etag_of_other_parts(
    destination: Connector, info: ObjectInfo, computed: FileHashes, expected: Expected
) -> bool:
    """Whether ``info``'s only hash is a multipart ETag of other parts than ``computed``'s."""
    etag = info.hashes.get(ETAG, "")
    return (
        CRC32C not in info.hashes
        and "-" in etag
        and computed.chunk_size != part_size_of(destination, expected.size)
    )


def _expected_etags(destination: Connector, expected: Expected) -> set[str]:
    """The ETags the catalog's hashes predict: the md5 (one part), or its part-wise etag.

    The part-wise one only when the catalog computed it with the part size
    the destination uploads with.
    """
    etags = set()
    if expected.md5:
        etags.add(expected.md5.lower())
    part_size = part_size_of(destination, expected.size)
    if expected.awss3etag and part_size and expected.chunk_size == part_size:
        etags.add(expected.awss3etag.lower())
    return etags


def _provable_by_destination(destination: Connector, expected: Expected) -> bool:
    """Whether what the destination reports of its write, with the catalog, proves it."""
    if expected.crc32c and CRC32C in destination.write_hashes:
        return True
    if ETAG not in destination.write_hashes or expected.size is None or not expected.md5:
        return False
    # An object of one part gets the md5 as its ETag; a larger one needs the
    # catalog's part-wise etag at the destination's part size.
    part_size = part_size_of(destination, expected.size)
    single = part_size is not None and expected.size <= part_size
    return single or len(_expected_etags(destination, expected)) == 2


def _proof(info: ObjectInfo, computed: FileHashes) -> str | None:
    """The hash kind by which ``info`` holds the bytes of ``computed``, or None."""
    stored = info.hashes
    if CRC32C in stored:
        return CRC32C if stored[CRC32C] == computed.crc32c else None
    if ETAG in stored and computed.md5:
        # A single upload's etag is the md5; a multipart one's the part-wise etag.
        return ETAG if stored[ETAG] in (computed.md5, computed.awss3etag) else None
    if MD5 in stored and computed.md5:
        return MD5 if stored[MD5] == computed.md5 else None
    return None


def _matches_expected(
    destination: Connector, path: str, info: ObjectInfo, expected: Expected
) -> str | None:
    """The hash kind showing ``info`` already holds the expected bytes, or None."""
    if expected.size is None or info.size != expected.size:
        return None
    hashes = info.hashes
    if expected.crc32c and CRC32C in hashes and not _belied(hashes, expected.md5):
        return CRC32C if hashes[CRC32C] == expected.crc32c.lower() else None
    if expected.md5 and MD5 in hashes:
        return MD5 if hashes[MD5] == expected.md5.lower() else None
    if ETAG in hashes and hashes[ETAG] in {expected.md5, expected.awss3etag} - {None}:
        return ETAG
    # An etag of another part size proves nothing either way: read the object back.
    if expected.crc32c:
        return CRC32C if _read_crc32c(destination, path) == expected.crc32c.lower() else None
    if expected.md5:
        return MD5 if _read_md5(destination, path) == expected.md5.lower() else None
    if expected.awss3etag and expected.chunk_size:
        # Known by its etag alone: hash the object with the catalog's part size.
        with destination.open_read(path) as stream:
            found = hash_stream(stream, chunk_size=expected.chunk_size)
        return ETAG if etag_differs(found, expected.awss3etag) is None else None
    return None


def _read_crc32c(connector: Connector, path: str) -> str:
    with connector.open_read(path) as stream:
        return crc32c_stream(stream)[1]


def _read_md5(connector: Connector, path: str) -> str:
    with connector.open_read(path) as stream:
        return hash_stream(stream).md5
