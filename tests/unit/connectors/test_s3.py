"""The S3 connector without a server: settings, credentials file, errors, hashes.

Requests that must fail are answered by botocore's own ``Stubber`` (it stands
in for the network, not for our code); everything else here makes no request.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigurationError,
    ConnectorError,
    ObjectNotFound,
    PermanentError,
    Throttled,
)
from connectors.s3 import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MULTIPART_CHUNKSIZE,
    DEFAULT_MULTIPART_THRESHOLD,
    DEFAULT_READ_TIMEOUT,
    S3Connector,
    _crc32c_base64,
    _hashes,
    _StoredPart,
)

KEY_ID = "AKIAUNITTESTKEYID000"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
MIB = 1024 * 1024


def closed_port() -> int:
    """A port nothing listens on: a request there would fail, not hang."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def credentials(tmp_path: Path) -> Path:
    path = tmp_path / "credentials_s3.json"
    path.write_text(json.dumps({"AccessKeyId": KEY_ID, "SecretAccessKey": SECRET}))
    return path


@pytest.fixture
def offline(credentials: Path) -> S3Connector:
    """A connector whose endpoint refuses connections."""
    return S3Connector(
        "S3",
        bucket="bucket-b",
        region_name="eu-central-1",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        credentials=str(credentials),
    )


@pytest.fixture
def stubbed(offline: S3Connector) -> Iterator[object]:
    from botocore.stub import Stubber

    with Stubber(offline.client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


# -- settings ----------------------------------------------------------------


def test_defaults_and_nothing_touched_at_construction(tmp_path: Path) -> None:
    connector = S3Connector(
        "S3",
        bucket="bucket-b",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        credentials=str(tmp_path / "not-there.json"),
        role_arn="arn:aws:iam::123456789012:role/r",
    )
    assert connector.part_size == DEFAULT_MULTIPART_CHUNKSIZE == 8 * MIB
    assert connector.multipart_threshold == DEFAULT_MULTIPART_THRESHOLD == 8 * MIB
    assert connector._client is None
    assert connector.capabilities() == {"presigned_url", "server_side_copy", "bulk_delete"}


@pytest.mark.parametrize("chunk", [5 * MIB - 1, 5 * 1024 * MIB + 1])
def test_a_part_size_outside_s3s_limits_is_refused(chunk: int) -> None:
    with pytest.raises(ConfigurationError, match="multipart_chunksize"):
        S3Connector("S3", bucket="b", multipart_chunksize=chunk)


def test_the_client_is_configured_modestly(offline: S3Connector) -> None:
    config = offline.client.meta.config
    assert config.retries == {"total_max_attempts": DEFAULT_MAX_ATTEMPTS, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (
        DEFAULT_CONNECT_TIMEOUT,
        DEFAULT_READ_TIMEOUT,
    )
    # We send our own CRC32C: no second checksum computed by botocore.
    assert config.request_checksum_calculation == "when_required"
    assert config.signature_version == "s3v4"


def test_the_credentials_file_is_used(offline: S3Connector) -> None:
    frozen = offline.client._request_signer._credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key) == (KEY_ID, SECRET)


def test_a_role_is_assumed_only_when_first_needed(credentials: Path) -> None:
    from botocore.credentials import RefreshableCredentials

    connector = S3Connector(
        "S3",
        bucket="bucket-b",
        endpoint_url=f"http://127.0.0.1:{closed_port()}",
        credentials=str(credentials),
        role_arn="arn:aws:iam::123456789012:role/r",
    )
    # Making the client asks STS nothing (there is nothing to ask)...
    assert isinstance(connector.client._request_signer._credentials, RefreshableCredentials)
    # ...the first request does, and its failure is typed.
    with pytest.raises(BackendUnavailable, match="assuming role"):
        connector.stat("x")


# -- the credentials file ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "AccessKeyId = hunter2-secret",
        json.dumps({"AccessKeyId": "AKIAVISIBLE", "Secret": "hunter2-secret"}),
        json.dumps(["AKIAVISIBLE", "hunter2-secret"]),
        "",
    ],
    ids=["not-json", "missing-key", "not-an-object", "empty"],
)
def test_a_malformed_credentials_file_names_the_file_not_its_contents(
    tmp_path: Path, text: str
) -> None:
    bad = tmp_path / "creds.json"
    bad.write_text(text)
    connector = S3Connector("S3", bucket="b", credentials=str(bad))
    with pytest.raises(ConfigurationError) as caught:
        connector.stat("x")
    message = str(caught.value)
    assert str(bad) in message and "AccessKeyId and SecretAccessKey" in message
    assert "hunter2" not in message and "AKIAVISIBLE" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_missing_credentials_file_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "creds.json"
    connector = S3Connector("S3", bucket="b", credentials=str(missing))
    with pytest.raises(ConfigurationError, match="not found") as caught:
        connector.write("x", io.BytesIO(b"x"))
    assert str(missing) in str(caught.value)


# -- error translation -------------------------------------------------------


def client_error(code: str, status: int, operation: str = "PutObject") -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": f"key {KEY_ID} secret {SECRET} refused"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchKey", 404, ObjectNotFound),
        ("404", 404, ObjectNotFound),
        ("NotFound", 404, ObjectNotFound),
        ("NoSuchBucket", 404, ConfigurationError),
        ("AccessDenied", 403, AccessDenied),
        ("InvalidAccessKeyId", 403, AccessDenied),
        ("SignatureDoesNotMatch", 403, AccessDenied),
        ("ExpiredToken", 400, AccessDenied),
        ("403", 403, AccessDenied),
        ("SlowDown", 503, Throttled),
        ("503", 503, Throttled),
        ("Throttling", 400, Throttled),
        ("TooManyRequests", 429, Throttled),
        ("InternalError", 500, BackendUnavailable),
        ("502", 502, BackendUnavailable),
        ("EntityTooSmall", 400, PermanentError),
        ("ServiceUnavailable", 503, Throttled),
        ("BadDigest", 400, PermanentError),
        # S3's "your socket was not read from or written to in time": botocore
        # retries it as transient; when its attempts run out it is still one.
        ("RequestTimeout", 400, BackendUnavailable),
        ("PriorRequestNotComplete", 400, BackendUnavailable),
    ],
)
def test_client_errors(code: str, status: int, kind: type[ConnectorError]) -> None:
    connector = S3Connector("S3", bucket="bucket-b")
    error = connector._translate(client_error(code, status), "writing 'x'")
    assert type(error) is kind
    assert error.transient == issubclass(kind, BackendUnavailable | Throttled)
    message = str(error)
    assert message.startswith("S3 'S3'") and "bucket-b" in message
    assert KEY_ID not in message and SECRET not in message


def test_access_denied_says_what_to_check() -> None:
    connector = S3Connector("S3", bucket="bucket-b")
    error = connector._translate(client_error("InvalidAccessKeyId", 403), "writing 'x'")
    assert str(error).startswith("S3 'S3': access denied for bucket 'bucket-b'")
    assert "check the credentials" in str(error)


def test_connection_failures_are_transient() -> None:
    from botocore.exceptions import (
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )

    connector = S3Connector("S3", bucket="bucket-b")
    for exc in (
        EndpointConnectionError(endpoint_url="http://x"),
        ConnectTimeoutError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        ConnectionClosedError(endpoint_url="http://x"),
        ResponseStreamingError(error="reset"),
        ConnectionResetError(),
        TimeoutError(),
    ):
        error = connector._translate(exc, "reading 'x'")
        assert isinstance(error, BackendUnavailable), exc


def test_no_credentials_at_all_is_access_denied() -> None:
    from botocore.exceptions import NoCredentialsError

    connector = S3Connector("S3", bucket="bucket-b")
    assert isinstance(connector._translate(NoCredentialsError(), "reading"), AccessDenied)


def test_errors_are_raised_from_the_library_error(offline: S3Connector, stubbed: object) -> None:
    stubbed.add_client_error("head_object", "404", http_status_code=404)  # type: ignore[attr-defined]
    # A bare 404 is a missing object only in a bucket that exists: asked once.
    stubbed.add_response(  # type: ignore[attr-defined]
        "list_objects_v2",
        {"IsTruncated": False, "KeyCount": 0},
        {"Bucket": "bucket-b", "Prefix": "missing", "MaxKeys": 1},
    )
    stubbed.add_client_error("get_object", "NoSuchKey", http_status_code=404)  # type: ignore[attr-defined]
    stubbed.add_client_error(  # type: ignore[attr-defined]
        "put_object", "SignatureDoesNotMatch", SECRET, http_status_code=403
    )
    stubbed.add_client_error("delete_object", "SlowDown", http_status_code=503)  # type: ignore[attr-defined]
    assert offline.stat("missing") is None
    with pytest.raises(ObjectNotFound) as missing:
        offline.open_read("missing")
    with pytest.raises(AccessDenied) as denied:
        offline.write("x", io.BytesIO(b"x"))
    with pytest.raises(Throttled):
        offline.delete("x")
    from botocore.exceptions import ClientError

    assert isinstance(missing.value.__cause__, ClientError)
    assert isinstance(denied.value.__cause__, ClientError) and SECRET not in str(denied.value)


# -- hashes as S3 states them ------------------------------------------------


def test_crc32c_is_base64_of_the_big_endian_bytes() -> None:
    import crc32c

    assert _crc32c_base64(crc32c.crc32c(b"hello world")) == "yZRlqg=="
    assert _hashes({"ETag": '"ABC123"', "ChecksumCRC32C": "yZRlqg=="}) == {
        "etag": "abc123",
        "crc32c": "c99465aa",
    }


@pytest.mark.parametrize(
    "answer",
    [
        {"ChecksumCRC32C": "yZRlqg==-3"},
        {"ChecksumCRC32C": "yZRlqg==", "ChecksumType": "COMPOSITE"},
        {"ChecksumCRC32C": "not base64!"},
        {"ChecksumCRC32C": "AAAAAAAA"},
        {},
    ],
)
def test_only_a_full_object_crc32c_is_reported(answer: dict[str, str]) -> None:
    assert _hashes({"ETag": '"d41d8cd98f00b204e9800998ecf8427e-3"', **answer}) == {
        "etag": "d41d8cd98f00b204e9800998ecf8427e-3"
    }


@pytest.mark.parametrize(
    "encryption",
    [
        {"ServerSideEncryption": "aws:kms"},
        {"ServerSideEncryption": "aws:kms:dsse"},
        {"ServerSideEncryption": "AES256", "SSECustomerAlgorithm": "AES256"},
    ],
    ids=["SSE-KMS", "DSSE-KMS", "SSE-C"],
)
def test_the_etag_of_an_object_encrypted_with_a_key_is_no_hash(
    encryption: dict[str, str],
) -> None:
    # Its ETag is no md5 of the bytes: were it reported, it would belie the
    # CRC32C beside it, and every copy would be read back to be proven.
    answer = {"ETag": '"0123456789abcdef0123456789abcdef"', "ChecksumCRC32C": "yZRlqg=="}
    assert _hashes({**answer, **encryption}) == {"crc32c": "c99465aa"}
    assert _hashes({**answer, "ServerSideEncryption": "AES256"}) == {
        "etag": "0123456789abcdef0123456789abcdef",
        "crc32c": "c99465aa",
    }


def test_a_stored_part_is_reused_only_for_the_same_bytes(offline: S3Connector) -> None:
    import hashlib

    import crc32c

    data = b"part bytes"
    crc = _crc32c_base64(crc32c.crc32c(data))
    md5 = hashlib.md5(data).hexdigest()
    reused = offline._reused
    assert reused(_StoredPart(len(data), md5, None), 7, data) == {
        "PartNumber": 7,
        "ETag": f'"{md5}"',
        "ChecksumCRC32C": crc,
    }
    assert reused(_StoredPart(len(data), md5, crc), 7, data) is not None
    assert reused(None, 7, data) is None
    assert reused(_StoredPart(len(data) + 1, md5, None), 7, data) is None
    assert reused(_StoredPart(len(data), "0" * 32, None), 7, data) is None
    assert reused(_StoredPart(len(data), md5, "AAAAAA=="), 7, data) is None


def test_without_upload_checksums_parts_are_listed_without_one(credentials: Path) -> None:
    import hashlib

    connector = S3Connector("S3", bucket="b", credentials=str(credentials), upload_checksums=False)
    data = b"part bytes"
    md5 = hashlib.md5(data).hexdigest()
    assert connector._reused(_StoredPart(len(data), md5, None), 2, data) == {
        "PartNumber": 2,
        "ETag": f'"{md5}"',
    }
    assert connector._checksum_of(data) == {
        "ContentMD5": base64.b64encode(hashlib.md5(data).digest()).decode()
    }


# -- refused before any request ----------------------------------------------


# An object larger than S3 takes: tests/unit/connectors/test_s3_part_size.py.


def test_presigning_is_local_and_bounded(offline: S3Connector) -> None:
    url = offline.presigned_url("a/b c.txt", expires=600)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Credential"][0].startswith(f"{KEY_ID}/")  # the id, by design
    assert SECRET not in url and urllib.parse.quote(SECRET, safe="") not in url
    with pytest.raises(ValueError, match="expires"):
        offline.presigned_url("a", expires=8 * 24 * 3600)


@pytest.mark.parametrize(
    ("body", "asks"),
    [(io.BytesIO(b"x" * 1000), False), (b"small", False), (io.BytesIO(b"x" * (2 * MIB)), True)],
)
def test_only_large_bodies_ask_before_they_are_sent(body: object, asks: bool) -> None:
    from connectors.s3 import _no_expect_for_small_bodies

    params = {"body": body, "headers": {"Expect": "100-continue"}}
    _no_expect_for_small_bodies(params)
    assert ("Expect" in params["headers"]) is asks
