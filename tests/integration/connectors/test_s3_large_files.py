"""A file too large for 10,000 parts of the configured size goes up in larger parts.

A sparse file of 90 GiB on a local connector, sent to a real S3 server
(moto_server): with the default 8 MiB parts it would need 11,520 of them,
more than S3 allows, and used to be refused outright. The test lets three
parts of the chosen size go up, then the source fails (a transient error),
so it uploads 48 MiB, not 90 GiB: the unfinished upload, kept for the retry
to resume, shows the parts' size.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import peewee as pw
import pytest

from catalog.models import FileStorage, ReferencedPath, StorageLocation
from connectors import s3 as s3_module
from connectors.errors import BackendUnavailable
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from connectors.transfer import part_size_of
from tests.servers.moto import raw_client
from workers.operations import copy_item_file

MIB = 1024**2
BIG = 90 * 1024**3


class StopsAfter(io.RawIOBase):
    """``inner``'s bytes up to ``limit``, then a transient failure (the source went away)."""

    def __init__(self, inner: io.RawIOBase, limit: int) -> None:
        self.inner = inner
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.left <= 0:
            raise BackendUnavailable("the source went away")
        view = memoryview(buffer)[: self.left]
        count = self.inner.readinto(view) or 0
        self.left -= count
        return count


def test_a_90_gib_file_goes_up_in_parts_of_16_mib(
    tmp_path: Path, s3_bucket: S3Connector, moto_server: str
) -> None:
    folder = tmp_path / "local" / "item"
    folder.mkdir(parents=True)
    with open(folder / "huge.bam", "wb") as sparse:
        sparse.truncate(BIG)  # no blocks on disk
    source = LocalConnector("local", path=tmp_path / "local")
    assert source.stat("item/huge.bam").size == BIG
    part = s3_bucket.part_size_for(BIG)
    assert part == 16 * MIB and part_size_of(s3_bucket, BIG) == part

    stream = StopsAfter(source.open_read("item/huge.bam"), 3 * part)  # type: ignore[arg-type]
    with pytest.raises(BackendUnavailable):
        s3_bucket.write("item/huge.bam", stream, size=BIG)

    client = raw_client(moto_server)
    [upload] = client.list_multipart_uploads(Bucket=s3_bucket.bucket)["Uploads"]  # type: ignore[attr-defined]
    assert upload["Key"] == "item/huge.bam"
    parts = client.list_parts(  # type: ignore[attr-defined]
        Bucket=s3_bucket.bucket, Key="item/huge.bam", UploadId=upload["UploadId"]
    )["Parts"]
    assert [p["Size"] for p in parts] == [part, part, part]
    client.abort_multipart_upload(  # type: ignore[attr-defined]
        Bucket=s3_bucket.bucket, Key="item/huge.bam", UploadId=upload["UploadId"]
    )


def test_a_copy_in_larger_parts_records_their_etag_and_part_size(
    tmp_path: Path,
    s3_bucket: S3Connector,
    sqlite_db: pw.Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As a 90 GiB file would: here S3 allows 4 parts, so 30 MiB go up in parts of 10 MiB."""
    monkeypatch.setattr(s3_module, "S3_MAX_PARTS", 4)
    s3 = S3Connector(
        "S3",
        bucket=s3_bucket.bucket,
        endpoint_url=s3_bucket.endpoint_url,
        credentials=s3_bucket.credentials,
        region_name=s3_bucket.region_name,
        multipart_chunksize=5 * MIB,
        multipart_threshold=5 * MIB,
    )
    data = os.urandom(30 * MIB)
    source = LocalConnector("local", path=tmp_path / "local")
    source.write("item/big.bam", io.BytesIO(data))
    hashes = hash_stream(io.BytesIO(data))  # as ingest does: 8 MiB parts
    item = FileStorage.create(key="item")
    entry = ReferencedPath.create(
        file_storage=item,
        path="big.bam",
        size=len(data),
        md5=hashes.md5,
        crc32c=hashes.crc32c,
        awss3etag=hashes.awss3etag,
        chunk_size=hashes.chunk_size,
    )
    StorageLocation.create(file_storage=item, connector_name="local", url="item", status="OK")
    StorageLocation.create(file_storage=item, connector_name="S3", url="item", status="PR")
    places = {"local": source, "S3": s3}
    copy_item_file(
        item.id, "S3", "big.bam", connectors=places.__getitem__, preference=("local", "S3")
    )

    entry = ReferencedPath.get_by_id(entry.id)
    assert entry.chunk_size == 10 * MIB
    stored = s3.stat("item/big.bam")
    assert stored is not None and stored.hashes["etag"] == entry.awss3etag  # the store's ETag
    assert entry.awss3etag.endswith("-3")
    assert StorageLocation.get(StorageLocation.connector_name == "S3").status == "OK"
