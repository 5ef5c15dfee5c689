"""The S3 connector against a real S3 server (moto_server over HTTP)."""

from __future__ import annotations

import io
import os
import urllib.request
from pathlib import Path

import pytest

from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ChecksumMismatch,
    ConfigurationError,
    InvalidPath,
)
from connectors.hashing import MultiHasher
from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from connectors.transfer import copy_file
from tests.connector_conformance import (
    BAD_PATHS,
    ConformanceSuite,
    CorruptInTransit,
    FailingStream,
    hashes_of,
)
from tests.servers.moto import ACCESS_KEY, SECRET_KEY, free_port

MIB = 1024 * 1024


def make(moto_server: str, bucket: str, credentials: Path, **settings: object) -> S3Connector:
    return S3Connector(
        "S3",
        bucket=bucket,
        endpoint_url=moto_server,
        credentials=str(credentials),
        region_name="us-east-1",
        **settings,  # type: ignore[arg-type]
    )


@pytest.fixture
def connector(moto_server: str, s3_bucket: str, s3_credentials: Path) -> S3Connector:
    # Small parts, so that a few MiB already make a multipart upload.
    return make(
        moto_server,
        s3_bucket,
        s3_credentials,
        multipart_threshold=5 * MIB,
        multipart_chunksize=5 * MIB,
    )


@pytest.fixture
def local_source(tmp_path: Path) -> LocalConnector:
    return LocalConnector("source", path=tmp_path / "source")


class TestS3Conformance(ConformanceSuite):
    pass


def test_multipart_etag_is_the_s3_etag(connector: S3Connector) -> None:
    data = os.urandom(12 * MIB + 5)
    info = connector.write("big/object", io.BytesIO(data))
    hasher = MultiHasher(chunk_size=connector.part_size)
    hasher.update(data)
    assert info.hashes["etag"] == hasher.result().awss3etag
    assert info.hashes["etag"].endswith("-3")
    stat = connector.stat("big/object")
    assert stat is not None and stat.hashes["etag"] == info.hashes["etag"]


def test_a_failed_multipart_upload_is_aborted(connector: S3Connector) -> None:
    with pytest.raises(OSError, match="went away"):
        connector.write("broken", FailingStream(os.urandom(11 * MIB)))  # type: ignore[arg-type]
    uploads = connector.client.list_multipart_uploads(Bucket=connector.bucket)
    assert uploads.get("Uploads", []) == []
    assert connector.stat("broken") is None


def test_a_retried_upload_resumes_from_its_parts(connector: S3Connector) -> None:
    data = os.urandom(16 * MIB)
    # A worker killed after two parts: an unfinished upload is left behind.
    client = connector.client
    upload = client.create_multipart_upload(Bucket=connector.bucket, Key="resumed")
    for number in (1, 2):
        part = data[(number - 1) * 5 * MIB : number * 5 * MIB]
        client.upload_part(
            Bucket=connector.bucket,
            Key="resumed",
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=part,
        )
    sent: list[int] = []
    client.meta.events.register(
        "provide-client-params.s3.UploadPart", lambda params, **_: sent.append(params["PartNumber"])
    )
    info = connector.write("resumed", io.BytesIO(data))
    assert sorted(sent) == [3, 4]
    hasher = MultiHasher(chunk_size=5 * MIB)
    hasher.update(data)
    assert info.hashes["etag"] == hasher.result().awss3etag
    assert client.get_object(Bucket=connector.bucket, Key="resumed")["Body"].read() == data


def test_a_resumed_part_with_other_bytes_is_sent_again(connector: S3Connector) -> None:
    data = os.urandom(11 * MIB)
    client = connector.client
    upload = client.create_multipart_upload(Bucket=connector.bucket, Key="changed")
    client.upload_part(
        Bucket=connector.bucket,
        Key="changed",
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=os.urandom(5 * MIB),  # not the bytes of part 1
    )
    connector.write("changed", io.BytesIO(data))
    assert client.get_object(Bucket=connector.bucket, Key="changed")["Body"].read() == data


def test_presigned_url(connector: S3Connector) -> None:
    connector.write("shared/file.txt", io.BytesIO(b"for your eyes"))
    url = connector.presigned_url("shared/file.txt", expires=60)
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"for your eyes"
    assert "presigned_url" in connector.capabilities()


def test_server_side_copy_within_the_endpoint(
    connector: S3Connector, moto_server: str, s3_credentials: Path
) -> None:
    import uuid

    other_bucket = f"bucket-{uuid.uuid4().hex[:16]}"
    connector.client.create_bucket(Bucket=other_bucket)
    other = make(moto_server, other_bucket, s3_credentials)
    data = os.urandom(100_000)
    connector.write("item/x", io.BytesIO(data))
    result = copy_file(connector, "item/x", other, "item/x", expected=hashes_of(data))
    assert result.how == "server-side"
    with other.open_read("item/x") as stream:
        assert stream.read() == data


def test_listing_pages(connector: S3Connector, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.s3

    monkeypatch.setattr(connectors.s3, "DEFAULT_LIST_PAGE", 3)
    for number in range(8):
        connector.write(f"p/{number}", io.BytesIO(b"x"))
    assert [info.path for info in connector.list("p/")] == [f"p/{n}" for n in range(8)]


def test_wrong_credentials_say_so_without_the_secret(
    moto_server: str, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto_server checks identities once told to (its reset-auth switch), as S3 always does."""
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"AccessKeyId": "AKIAWRONGKEYID000000", "SecretAccessKey": "wrong-secret"}')
    connector = make(moto_server, s3_bucket, wrong)
    import urllib.request as request

    def authenticate_after(actions: bytes) -> None:
        url = f"{moto_server}/moto-api/reset-auth"
        headers = {"Content-Type": "text/plain"}  # a form type would hide the body
        answer = request.Request(url, data=actions, headers=headers, method="POST")
        request.urlopen(answer, timeout=5).close()

    authenticate_after(b"0")
    try:
        with pytest.raises(AccessDenied) as caught:
            connector.write("x", io.BytesIO(b"data"))
    finally:
        authenticate_after(b"inf")
    message = str(caught.value)
    assert "check the credentials" in message
    for secret in ("AKIAWRONGKEYID000000", "wrong-secret", ACCESS_KEY, SECRET_KEY):
        assert secret not in message


def test_unreachable_endpoint_is_transient(s3_credentials: Path) -> None:
    connector = S3Connector(
        "S3",
        bucket="b",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        credentials=str(s3_credentials),
        region_name="us-east-1",
    )
    with pytest.raises(BackendUnavailable) as caught:
        connector.stat("x")
    assert caught.value.transient


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_refused_before_any_io(s3_credentials: Path, path: str) -> None:
    # Nothing listens there: a request would fail as BackendUnavailable.
    connector = S3Connector(
        "S3", bucket="b", endpoint_url=f"http://127.0.0.1:{free_port()}", credentials="/none"
    )
    for attempt in (
        lambda: connector.stat(path),
        lambda: connector.write(path, io.BytesIO(b"x")),
        lambda: connector.delete(path),
        lambda: connector.presigned_url(path, expires=5),
    ):
        with pytest.raises(InvalidPath):
            attempt()


def test_a_missing_bucket_is_a_configuration_error(moto_server: str, s3_credentials: Path) -> None:
    connector = make(moto_server, "no-such-bucket-here", s3_credentials)
    with pytest.raises(ConfigurationError, match="bucket does not exist"):
        connector.write("x", io.BytesIO(b"x"))


def test_a_bad_credentials_file_names_the_file_not_its_contents(tmp_path: Path) -> None:
    bad = tmp_path / "creds.json"
    bad.write_text('{"AccessKeyId": "AKIAVISIBLE", "Secret": "hunter2"}')
    connector = S3Connector("S3", bucket="b", credentials=str(bad))
    with pytest.raises(ConfigurationError) as caught:
        connector.stat("x")
    assert str(bad) in str(caught.value)
    assert "hunter2" not in str(caught.value) and "AKIAVISIBLE" not in str(caught.value)


def test_a_multipart_copy_is_proven_by_the_etag_the_catalog_predicts(
    connector: S3Connector, local_source: LocalConnector
) -> None:
    data = os.urandom(11 * MIB)
    local_source.write("m", io.BytesIO(data))
    same_parts = hashes_of(data, chunk_size=connector.part_size)
    result = copy_file(local_source, "m", connector, "m", expected=same_parts)
    assert (result.validated_by, result.hashes) == ("etag", None)  # nothing hashed in passing
    other_parts = hashes_of(data, chunk_size=8 * MIB)
    result = copy_file(local_source, "m", connector, "m2", expected=other_parts)
    assert result.validated_by == "etag" and result.hashes is not None  # hashed in passing
    corrupting = CorruptInTransit(connector, at=6 * MIB)
    with pytest.raises(ChecksumMismatch, match="removed"):
        copy_file(local_source, "m", corrupting, "m3", expected=same_parts)
    assert connector.stat("m3") is None
