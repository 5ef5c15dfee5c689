"""copy_file between real servers: what proves a copy, pair by pair (moto_server)."""

from __future__ import annotations

import io
import os
from pathlib import Path

from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from connectors.transfer import Expected, copy_file
from tests.servers.moto import REGION

MIB = 1024 * 1024


def s3(endpoint: str, bucket: S3Connector, credentials: Path, part: int) -> S3Connector:
    return S3Connector(
        "S3",
        bucket=bucket.bucket,
        endpoint_url=endpoint,
        credentials=str(credentials),
        region_name=REGION,
        multipart_threshold=part,
        multipart_chunksize=part,
    )


def test_bytes_known_by_an_etag_of_other_parts_than_the_destinations_are_copied(
    moto_server: str, s3_bucket: S3Connector, s3_credentials: Path, tmp_path: Path
) -> None:
    """The catalog knows a file by its etag of 8 MiB parts; the destination
    uploads 5 MiB parts. The source's bytes match the catalog and S3 received
    them intact: the copy is good, not a ChecksumMismatch (which says the
    bytes are bad, and fails every retry the same way)."""
    data = os.urandom(12 * MIB)
    hashes = hash_stream(io.BytesIO(data), chunk_size=8 * MIB)
    source = LocalConnector("source", path=tmp_path / "source")
    source.write("item/x", io.BytesIO(data))
    destination = s3(moto_server, s3_bucket, s3_credentials, 5 * MIB)
    expected = Expected(size=len(data), awss3etag=hashes.awss3etag, chunk_size=8 * MIB)

    result = copy_file(source, "item/x", destination, "item/x", expected=expected)

    assert result.how == "streamed"
    with destination.open_read("item/x") as stream:
        assert stream.read() == data
