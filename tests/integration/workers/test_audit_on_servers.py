"""The audit against real object stores: moto_server (S3) and fake-gcs-server (GCS).

Objects are deleted, replaced with others of the same size, and added
behind the system's back with the stores' own clients; the audit finds
each from the listing (S3's ETag, GCS's checksums), asks the store again,
and records only what it confirms.
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timedelta
from pathlib import Path

import peewee as pw
import pytest

from catalog.models import FileStorage, LocationFile, ReferencedPath, StorageLocation
from connectors.base import Connector
from connectors.gcs import GCSConnector
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from workers.audit import audit_connector
from workers.operations import repair_location

NOW = datetime(2026, 6, 1)


def catalogued(store: Connector, local: Connector, keys: list[str]) -> dict[str, bytes]:
    """Items of two files each, written to ``store`` and to ``local``, copies on both."""
    written = {}
    for key in keys:
        item = FileStorage.create(key=key, created=NOW - timedelta(days=3))
        for place in (local, store):
            StorageLocation.create(
                file_storage=item, connector_name=place.name, url=key, status="OK"
            )
        for path in ("a.bam", "b/c.txt"):
            data = os.urandom(2_000)
            hashes = hash_stream(io.BytesIO(data))
            ReferencedPath.create(
                file_storage=item, path=path, size=len(data), md5=hashes.md5, crc32c=hashes.crc32c
            )
            for place in (local, store):
                place.write(f"{key}/{path}", io.BytesIO(data))
            written[f"{key}/{path}"] = data
    return written


def behind_the_back(store: Connector) -> None:
    """One object gone, one replaced (same size, other bytes), one that nothing accounts for."""
    store.delete("one/a.bam")
    store.write("two/b/c.txt", io.BytesIO(os.urandom(2_000)))
    store.write("orphans/x.part", io.BytesIO(b"123"))


@pytest.fixture(params=["s3", "gcs"])
def store(request: pytest.FixtureRequest) -> Connector:
    if request.param == "s3":
        bucket: S3Connector = request.getfixturevalue("s3_bucket")
        return bucket
    endpoint = request.getfixturevalue("fake_gcs_server")
    name = request.getfixturevalue("gcs_bucket")
    return GCSConnector("GCS", bucket=name, endpoint_url=endpoint)


def test_the_audit_finds_what_changed_behind_the_stores_back_and_repair_mends_it(
    store: Connector, sqlite_db: pw.Database, tmp_path: Path
) -> None:
    local = LocalConnector("local", path=tmp_path / "local")
    written = catalogued(store, local, ["one", "two", "three"])
    assert audit_connector(store, sqlite_db, now=NOW).ok
    behind_the_back(store)
    findings: list[dict[str, object]] = []
    report = audit_connector(store, sqlite_db, now=NOW, found=findings.append)
    assert (report.objects, report.expected) == (6, 6)  # local's own copies are not its
    assert (report.lost, report.mismatched, report.dark) == (1, 1, 1)
    assert sorted((f["kind"], f["key"]) for f in findings) == [
        ("dark", "orphans/x.part"),
        ("lost", "one/a.bam"),
        ("mismatched", "two/b/c.txt"),
    ]
    statuses = {
        loc.url: loc.status
        for loc in StorageLocation.select().where(StorageLocation.connector_name == store.name)
    }
    assert statuses == {"one": "DM", "two": "DM", "three": "OK"}
    problems = {row.referenced_path.path: row.problem for row in LocationFile.select()}
    assert problems["a.bam"].startswith("missing")
    assert "catalog says" in problems["b/c.txt"]
    assert store.stat("orphans/x.part") is not None  # reported, not removed

    # The repair the scan plans for a damaged copy brings the files back from local.
    places = {"local": local, store.name: store}
    for key in ("one", "two"):
        item = FileStorage.get(FileStorage.key == key)
        report = repair_location(
            item.id, store.name, connectors=places.__getitem__, preference=("local", store.name)
        )
        assert report.status == "OK"
    for key, data in written.items():
        with store.open_read(key) as stream:
            assert stream.read() == data
    again = audit_connector(store, sqlite_db, now=NOW)
    assert (again.lost, again.mismatched, again.dark) == (0, 0, 1)
