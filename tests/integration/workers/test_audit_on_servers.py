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

import peewee as pw
import pytest

from catalog.models import FileStorage, LocationFile, ReferencedPath, StorageLocation
from connectors.base import Connector
from connectors.gcs import GCSConnector
from connectors.hashing import hash_stream
from connectors.s3 import S3Connector
from workers.audit import audit_connector

NOW = datetime(2026, 6, 1)


def catalogued(store: Connector, keys: list[str]) -> dict[str, bytes]:
    """Items of two files each, written to ``store`` and registered as copies there."""
    written = {}
    for key in keys:
        item = FileStorage.create(key=key, created=NOW - timedelta(days=3))
        StorageLocation.create(file_storage=item, connector_name=store.name, url=key, status="OK")
        for path in ("a.bam", "b/c.txt"):
            data = os.urandom(2_000)
            hashes = hash_stream(io.BytesIO(data))
            ReferencedPath.create(
                file_storage=item, path=path, size=len(data), md5=hashes.md5, crc32c=hashes.crc32c
            )
            store.write(f"{key}/{path}", io.BytesIO(data))
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


def test_the_audit_finds_what_changed_behind_the_stores_back(
    store: Connector, sqlite_db: pw.Database
) -> None:
    catalogued(store, ["one", "two", "three"])
    assert audit_connector(store, sqlite_db, now=NOW).ok
    behind_the_back(store)
    findings: list[dict[str, object]] = []
    report = audit_connector(store, sqlite_db, now=NOW, found=findings.append)
    assert (report.objects, report.expected) == (6, 6)
    assert (report.lost, report.mismatched, report.dark) == (1, 1, 1)
    assert sorted((f["kind"], f["key"]) for f in findings) == [
        ("dark", "orphans/x.part"),
        ("lost", "one/a.bam"),
        ("mismatched", "two/b/c.txt"),
    ]
    statuses = {loc.url: loc.status for loc in StorageLocation.select()}
    assert statuses == {"one": "DM", "two": "DM", "three": "OK"}
    problems = {row.referenced_path.path: row.problem for row in LocationFile.select()}
    assert problems["a.bam"].startswith("missing")
    assert "catalog says" in problems["b/c.txt"]
    assert store.stat("orphans/x.part") is not None  # reported, not removed
