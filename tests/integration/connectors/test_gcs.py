"""The GCS connector against a real GCS server (fake-gcs-server over HTTP)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from connectors.errors import BackendUnavailable, ConfigurationError, InvalidPath, Unsupported
from connectors.gcs import GCSConnector
from connectors.hashing import MultiHasher
from connectors.local import LocalConnector
from connectors.transfer import copy_file
from tests.connector_conformance import BAD_PATHS, ConformanceSuite, hashes_of
from tests.servers.process import free_port

MIB = 1024 * 1024


@pytest.fixture
def connector(fake_gcs_server: str, gcs_bucket: str) -> GCSConnector:
    # A small chunk, so that a few MiB already make a resumable upload.
    return GCSConnector("GCS", bucket=gcs_bucket, endpoint_url=fake_gcs_server, chunk_size=MIB)


@pytest.fixture
def local_source(tmp_path: Path) -> LocalConnector:
    (tmp_path / "source").mkdir()
    return LocalConnector("source", path=tmp_path / "source")


class TestGCSConformance(ConformanceSuite):
    pass


def test_the_server_reports_crc32c_and_md5(connector: GCSConnector) -> None:
    for size in (10, 9 * MIB + 3):  # one request, and a resumable upload
        data = os.urandom(size)
        info = connector.write(f"o{size}", io.BytesIO(data))
        hasher = MultiHasher()
        hasher.update(data)
        expected = hasher.result()
        assert info.hashes["crc32c"] == expected.crc32c
        assert info.size == size
        stat = connector.stat(f"o{size}")
        assert stat is not None and stat.hashes["crc32c"] == expected.crc32c


def test_a_copy_is_proven_by_the_servers_crc32c(
    connector: GCSConnector, local_source: LocalConnector
) -> None:
    data = os.urandom(3 * MIB)
    local_source.write("x", io.BytesIO(data))
    result = copy_file(local_source, "x", connector, "x", expected=hashes_of(data))
    assert (result.validated_by, result.hashes) == ("crc32c", None)


def test_server_side_rewrite(
    connector: GCSConnector, fake_gcs_server: str, gcs_bucket: str
) -> None:
    import uuid

    other_name = f"bucket-{uuid.uuid4().hex[:16]}"
    connector.client.create_bucket(other_name)
    other = GCSConnector("GCS2", bucket=other_name, endpoint_url=fake_gcs_server)
    data = os.urandom(100_000)
    connector.write("item/x", io.BytesIO(data))
    result = copy_file(connector, "item/x", other, "item/x", expected=hashes_of(data))
    assert result.how == "server-side"
    with other.open_read("item/x") as stream:
        assert stream.read() == data


def test_anonymous_credentials_cannot_sign(connector: GCSConnector) -> None:
    with pytest.raises(Unsupported, match="service-account"):
        connector.presigned_url("x", expires=60)


def test_unreachable_endpoint_is_transient() -> None:
    connector = GCSConnector(
        "GCS", bucket="b", endpoint_url=f"http://127.0.0.1:{free_port()}", retry_seconds=1
    )
    with pytest.raises(BackendUnavailable) as caught:
        connector.stat("x")
    assert caught.value.transient


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_refused_before_any_io(path: str) -> None:
    connector = GCSConnector("GCS", bucket="b", endpoint_url=f"http://127.0.0.1:{free_port()}")
    for attempt in (
        lambda: connector.stat(path),
        lambda: connector.write(path, io.BytesIO(b"x")),
        lambda: connector.delete(path),
    ):
        with pytest.raises(InvalidPath):
            attempt()


def test_a_missing_bucket_is_a_configuration_error(fake_gcs_server: str) -> None:
    connector = GCSConnector("GCS", bucket="no-such-bucket-here", endpoint_url=fake_gcs_server)
    with pytest.raises(ConfigurationError, match="bucket does not exist"):
        connector.write("x", io.BytesIO(b"x"))


def test_a_bad_credentials_file_names_the_file_not_its_contents(tmp_path: Path) -> None:
    bad = tmp_path / "key.json"
    bad.write_text('{"type": "service_account", "private_key": "-----SECRET-----"}')
    connector = GCSConnector("GCS", bucket="b", credentials=str(bad))
    with pytest.raises(ConfigurationError) as caught:
        connector.stat("x")
    assert str(bad) in str(caught.value) and "SECRET" not in str(caught.value)


def test_a_resumable_upload_that_fails_midway_stores_nothing(connector: GCSConnector) -> None:
    from tests.connector_conformance import FailingStream

    with pytest.raises(OSError, match="went away"):
        connector.write("half", FailingStream(os.urandom(12 * MIB)))  # type: ignore[arg-type]
    assert connector.stat("half") is None


def test_a_missing_bucket_is_never_taken_for_missing_objects(fake_gcs_server: str) -> None:
    """GCS answers 404 for an object of a bucket that does not exist, as for a missing object.

    A typo in ``bucket`` (or a bucket removed) is a misconfiguration: taken for
    "no such object", a verification would record every file of every copy on
    the connector as missing (``read_and_compare`` says "missing" on
    ObjectNotFound), and a listing-based confirmation would see nothing there.
    """
    from types import SimpleNamespace

    from workers.verify import read_and_compare

    connector = GCSConnector("GCS", bucket="no-such-bucket-here", endpoint_url=fake_gcs_server)
    with pytest.raises(ConfigurationError, match="bucket does not exist"):
        connector.stat("item/f")
    with pytest.raises(ConfigurationError, match="bucket does not exist"):
        connector.open_read("item/f")
    with pytest.raises(ConfigurationError, match="bucket does not exist"):
        list(connector.list("item/"))
    entry = SimpleNamespace(size=1, md5=None, crc32c="00000000", awss3etag=None, chunk_size=None)
    with pytest.raises(ConfigurationError):
        read_and_compare(connector, "item/f", entry)  # type: ignore[arg-type]


def test_a_missing_object_of_an_existing_bucket_is_still_missing(
    connector: GCSConnector,
) -> None:
    from connectors.errors import ObjectNotFound

    assert connector.stat("item/none") is None
    with pytest.raises(ObjectNotFound):
        connector.open_read("item/none")
    assert list(connector.list("item/none/")) == []
