"""The transfer engine validates against the catalog's hashes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from connectors.errors import ChecksumMismatch
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from connectors.transfer import Expected, copy_file


def test_a_source_that_differs_from_the_catalogs_etag_is_not_copied_as_good(
    tmp_path: Path,
) -> None:
    """The catalog knows a file by its size and S3 etag (an import from an S3
    listing, say): a source whose bytes have the right size but another etag is
    not the catalog's file, and a copy of it must not be reported validated."""
    good = b"the catalog's bytes"
    rotten = b"the catalog's bytez"  # same size: one byte flipped on the source
    hashes = hash_stream(io.BytesIO(good))
    source = LocalConnector("source", path=tmp_path / "source")
    destination = LocalConnector("destination", path=tmp_path / "destination")
    source.write("item/x", io.BytesIO(rotten))
    expected = Expected(size=len(good), awss3etag=hashes.awss3etag, chunk_size=hashes.chunk_size)

    with pytest.raises(ChecksumMismatch):
        result = copy_file(source, "item/x", destination, "item/x", expected=expected)
        pytest.fail(f"copied as good ({result.validated_by}) bytes that are not the catalog's")


def test_bytes_known_by_a_multipart_etag_alone_are_copied_when_they_are_the_catalogs(
    tmp_path: Path,
) -> None:
    """The etag of 4 KiB parts, as the catalog has it, proves the source right."""
    data = os.urandom(10_000)
    hashes = hash_stream(io.BytesIO(data), chunk_size=4096)
    assert hashes.awss3etag.endswith("-3")
    source = LocalConnector("source", path=tmp_path / "source")
    destination = LocalConnector("destination", path=tmp_path / "destination")
    source.write("item/x", io.BytesIO(data))
    expected = Expected(awss3etag=hashes.awss3etag, chunk_size=4096)

    copy_file(source, "item/x", destination, "item/x", expected=expected)

    assert (tmp_path / "destination" / "item" / "x").read_bytes() == data


def test_bytes_known_by_an_etag_alone_already_there_are_not_copied_again(
    tmp_path: Path,
) -> None:
    """Step 1 (already there?) for a catalog that knows a file by its etag:
    the destination's bytes can be hashed with the catalog's part size, as
    the source's are; a good object is left alone (and a rotten source then
    cannot replace it)."""
    good = b"the catalog's bytes"
    rotten = b"the catalog's bytez"
    hashes = hash_stream(io.BytesIO(good), chunk_size=4)
    source = LocalConnector("source", path=tmp_path / "source")
    destination = LocalConnector("destination", path=tmp_path / "destination")
    source.write("item/x", io.BytesIO(rotten))
    destination.write("item/x", io.BytesIO(good))
    expected = Expected(size=len(good), awss3etag=hashes.awss3etag, chunk_size=4)

    result = copy_file(source, "item/x", destination, "item/x", expected=expected)

    assert result.how == "skipped"
    assert (tmp_path / "destination" / "item" / "x").read_bytes() == good
