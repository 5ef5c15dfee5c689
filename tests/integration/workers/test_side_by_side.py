"""A copy job's small files go to a store side by side, and a failure among them loses nothing.

Against moto_server through a proxy that holds or damages chosen uploads.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import peewee as pw
import pytest

from catalog.integrity import ASSERTED
from catalog.models import Action, FileStorage, LocationFile, ReferencedPath, StorageLocation
from catalog.queries import reserve_location
from connectors.base import Connector
from connectors.errors import ChecksumMismatch
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from tests.processes import wait_for
from tests.servers.faulty import Fault, FaultyProxy, faulty_proxy
from tests.servers.moto import REGION, raw_client
from workers.operations import copy_items

NOW = datetime(2026, 6, 1)
FILES = {f"f-{n:02}.txt": os.urandom(1000 + n) for n in range(12)}


def item_on_local(folder: LocalConnector) -> FileStorage:
    """An item of FILES, OK on ``folder``, with a copy reserved on S3."""
    item = FileStorage.create(key="item", created=NOW - timedelta(days=3))
    for path, data in FILES.items():
        hashes = hash_stream(io.BytesIO(data))
        ReferencedPath.create(
            file_storage=item, path=path, size=len(data), md5=hashes.md5, crc32c=hashes.crc32c
        )
        folder.write(f"item/{path}", io.BytesIO(data))
    StorageLocation.create(file_storage=item, connector_name="local", url="item", status="OK")
    reserve_location(item.id, "S3", url="item")
    return item


def recorded() -> set[str]:
    rows = LocationFile.select(LocationFile, ReferencedPath).join(ReferencedPath)
    return {row.referenced_path.path for row in rows.where(LocationFile.validated_by != ASSERTED)}


def on_server(endpoint: str, bucket: str) -> set[str]:
    listed = raw_client(endpoint).list_objects_v2(Bucket=bucket, Prefix="item/")  # type: ignore[attr-defined]
    return {entry["Key"].removeprefix("item/") for entry in listed.get("Contents", [])}


@pytest.fixture
def proxy(s3_bucket: S3Connector) -> Iterator[FaultyProxy]:
    """A ``FaultyProxy`` to the server of ``s3_bucket``."""
    with faulty_proxy(s3_bucket.endpoint_url) as proxy:  # type: ignore[arg-type]
        yield proxy


def through(proxy: FaultyProxy, s3_bucket: S3Connector, **settings: bool) -> S3Connector:
    """An ``S3Connector`` on the bucket of ``s3_bucket``, reached through ``proxy``."""
    return S3Connector(
        "S3",
        bucket=s3_bucket.bucket,
        endpoint_url=proxy.url,
        credentials=s3_bucket.credentials,
        region_name=REGION,
        **settings,
    )


def test_the_other_files_land_while_one_upload_is_held(
    catalog_db: pw.Database,
    proxy: FaultyProxy,
    s3_bucket: S3Connector,
    tmp_path: Path,
    moto_server: str,
) -> None:
    s3 = through(proxy, s3_bucket)
    folder = LocalConnector("local", path=tmp_path / "local")
    item = item_on_local(folder)
    held = proxy.fail(Fault("PUT", r"f-04", hang=5.0))
    connectors: dict[str, Connector] = {"local": folder, "S3": s3}
    done = threading.Event()

    def job() -> None:
        copy_items(
            "S3", [(item.id, list(FILES))], connectors=connectors.__getitem__, preference=["local"]
        )
        done.set()

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    try:
        # One after another, nothing after f-04 could be sent while it is held.
        # (Its request may reach the proxy after the others land: on a loaded
        # machine its thread can start last.)
        wait_for(
            lambda: (
                held.hits == 1 and on_server(moto_server, s3.bucket) == set(FILES) - {"f-04.txt"}
            ),
            what="f-04 held and every other file on the server",
        )
        assert not done.is_set()
    finally:
        # Ended here either way: a job left running would write into the next
        # test's catalog (the models are bound to one database at a time).
        thread.join(60)
    assert done.is_set() and recorded() == set(FILES)
    assert StorageLocation.get(StorageLocation.connector_name == "S3").status == "OK"


def test_a_failure_beside_others_keeps_them_and_the_retry_sends_only_the_rest(
    catalog_db: pw.Database, proxy: FaultyProxy, s3_bucket: S3Connector, tmp_path: Path
) -> None:
    # With checksums sent along S3 itself refuses damaged bytes (and the
    # connector sends them again); moto does not, so its ETag catches them.
    s3 = through(proxy, s3_bucket, upload_checksums=False)
    folder = LocalConnector("local", path=tmp_path / "local")
    item = item_on_local(folder)
    proxy.fail(Fault("PUT", r"f-07", flip=5, times=1))
    lookup = {"local": folder, "S3": s3}.__getitem__

    with pytest.raises(ChecksumMismatch):
        copy_items("S3", [(item.id, list(FILES))], connectors=lookup, preference=["local"])
    first = recorded()
    assert "f-07.txt" not in first and first  # what was proven beside it is kept
    [failed] = Action.select().where(Action.result == "failed")
    assert failed.path == "f-07.txt" and "removed it" in failed.error
    location = StorageLocation.get(StorageLocation.connector_name == "S3")
    assert location.status == "UP"

    sent_before = len(proxy.requests("PUT", r"/item/"))
    report = copy_items("S3", [(item.id, list(FILES))], connectors=lookup, preference=["local"])
    again = {target.rsplit("/", 1)[-1] for target in proxy.requests("PUT", r"/item/")[sent_before:]}
    assert again == set(FILES) - first and report.copied == len(again)
    assert recorded() == set(FILES)
    assert StorageLocation.get_by_id(location.id).status == "OK"
    for path, data in FILES.items():
        with s3.open_read(f"item/{path}") as stream:
            assert stream.read() == data
