"""Awkward object keys against real object stores: the audit and a delete's confirmation.

Items whose urls are prefixes of one another (``a/b``, ``a/bc``, ``a/b-c``),
that differ only in case or in Unicode normal form, and files whose names
carry characters that URLs, XML and shells treat apart: each object is
answered for by its own key, never by another item's, on S3
(moto_server) and GCS (fake-gcs-server), with listings of more than one page.
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timedelta

import peewee as pw
import pytest

from catalog.models import FileStorage, ReferencedPath, StorageLocation
from connectors.base import Connector
from connectors.gcs import GCSConnector
from connectors.hashing import hash_stream
from connectors.s3 import S3Connector
from workers.audit import audit_connector
from workers.confirm import confirm_copy

NOW = datetime(2026, 6, 1)

#: Urls of items, several a prefix of another (as strings, not as folders).
URLS = [
    "a/b",
    "a/bc",
    "a/b-c",
    "a/b.c",
    "a/b c",
    "a/b+c",
    "a/b%2Fc",
    "nfc \u00e9",
    "nfd e\u0301",
    "Case",
    "case",
    "trail ",
    "trail.",
    "q#x?y=z&w",
    "ctl\tx",
]
#: Files of each item.
PATHS = [
    "f",
    "d/x y.txt",
    "d/\u00e9",
    "d/e\u0301",
    "p+q",
    "%41",
    "t ",
    "t.",
    "r\rn",
    "\u65e5\u672c \U0001f600",
    "L" * 200,
]


@pytest.fixture(params=["s3", "gcs"])
def store(request: pytest.FixtureRequest) -> Connector:
    if request.param == "s3":
        bucket: S3Connector = request.getfixturevalue("s3_bucket")
        return bucket
    endpoint = request.getfixturevalue("fake_gcs_server")
    name = request.getfixturevalue("gcs_bucket")
    return GCSConnector("GCS", bucket=name, endpoint_url=endpoint)


def catalogued(store: Connector, urls: list[str], paths: list[str]) -> list[StorageLocation]:
    """An item per url, its files (distinct bytes each) written to ``store`` and recorded."""
    locations = []
    for url in urls:
        item = FileStorage.create(key=url, created=NOW - timedelta(days=3))
        locations.append(
            StorageLocation.create(
                file_storage=item, connector_name=store.name, url=url, status="OK"
            )
        )
        for path in paths:
            data = f"{url}|{path}".encode() + os.urandom(8)
            hashes = hash_stream(io.BytesIO(data))
            ReferencedPath.create(
                file_storage=item,
                path=path,
                size=len(data),
                md5=hashes.md5,
                crc32c=hashes.crc32c,
                awss3etag=hashes.awss3etag,
                chunk_size=hashes.chunk_size,
            )
            store.write(f"{url}/{path}", io.BytesIO(data))
    return locations


def files_of(location: StorageLocation) -> list[ReferencedPath]:
    return list(
        ReferencedPath.select().where(ReferencedPath.file_storage == location.file_storage_id)
    )


def test_each_awkward_key_answers_for_itself(store: Connector, catalog_db: pw.Database) -> None:
    locations = catalogued(store, URLS, PATHS)
    report = audit_connector(store, catalog_db, now=NOW)
    assert (report.objects, report.expected) == (len(URLS) * len(PATHS),) * 2
    assert (report.lost, report.mismatched, report.dark) == (0, 0, 0)
    for location in locations:
        assert confirm_copy(location, store, files_of(location)) == [], location.url

    # One object of "a/b" gone, one of its NFC twin replaced: only those copies are found wanting.
    store.delete("a/b/f")
    store.write("nfc \u00e9/d/e\u0301", io.BytesIO(b"other bytes of the same kind"))
    by_url = {location.url: location for location in locations}
    problems = confirm_copy(by_url["a/b"], store, files_of(by_url["a/b"]))
    assert [(p.path, p.problem) for p in problems] == [("f", "missing")]
    problems = confirm_copy(by_url["nfc \u00e9"], store, files_of(by_url["nfc \u00e9"]))
    assert [p.path for p in problems] == ["d/e\u0301"]
    for url in set(URLS) - {"a/b", "nfc \u00e9"}:
        assert confirm_copy(by_url[url], store, files_of(by_url[url])) == [], url
    findings: list[dict[str, object]] = []
    report = audit_connector(store, catalog_db, now=NOW, found=findings.append)
    assert sorted((f["kind"], f["key"]) for f in findings) == [
        ("lost", "a/b/f"),
        ("mismatched", "nfc \u00e9/d/e\u0301"),
    ]
    statuses = {loc.url: loc.status for loc in StorageLocation.select()}
    assert {url for url, status in statuses.items() if status != "OK"} == {"a/b", "nfc \u00e9"}


def test_listings_of_more_than_a_page(store: Connector, sqlite_db: pw.Database) -> None:
    """Over 1,000 objects under one item's url, beside a neighbour's: every page is read."""
    paths = [f"d{n % 3}/{n:04d} x+y" for n in range(1_010)]
    big = catalogued(store, ["big"], paths) + catalogued(store, ["big-", "bi"], paths[:3])
    report = audit_connector(store, sqlite_db, now=NOW)
    assert (report.objects, report.expected, report.dark) == (1_016, 1_016, 0)
    assert report.ok
    for location in big:
        assert confirm_copy(location, store, files_of(location)) == []
    store.delete("big/d2/1007 x+y")
    problems = confirm_copy(big[0], store, files_of(big[0]))
    assert [(p.path, p.problem) for p in problems] == [("d2/1007 x+y", "missing")]
    findings: list[dict[str, object]] = []
    audit_connector(store, sqlite_db, now=NOW, found=findings.append)
    assert [(f["kind"], f["key"]) for f in findings] == [("lost", "big/d2/1007 x+y")]
