"""Server errors, throttling, timeouts and dropped connections, against real servers.

A ``FaultyProxy`` sits between the connector and moto_server or
fake-gcs-server and fails chosen requests; everything else is the real
server answering. What must hold: a passing fault is retried and the copy
completes, proven; a lasting one ends in a transient error (the job is then
retried), with nothing half-written at the destination and no secret in
the message; a retried multipart upload resumes from the parts that made it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ChecksumMismatch,
    ConnectorError,
    PermanentError,
    TransientError,
)
from connectors.gcs import GCSConnector
from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from connectors.transfer import copy_file
from tests.connector_conformance import hashes_of, read_all
from tests.servers.faulty import Fault, FaultyProxy, faulty_proxy
from tests.servers.moto import REGION, SECRET_KEY, count_calls

MIB = 1024 * 1024
PART = 5 * MIB
#: Seconds a client waits for an answer here; a hang lasts longer.
SHORT_TIMEOUT = 1.0


@pytest.fixture
def source(tmp_path: Path) -> LocalConnector:
    return LocalConnector("source", path=tmp_path / "source")


@pytest.fixture
def s3_proxy(moto_server: str) -> Iterator[FaultyProxy]:
    with faulty_proxy(moto_server) as proxy:
        yield proxy


@pytest.fixture
def s3(s3_proxy: FaultyProxy, s3_bucket: S3Connector, s3_credentials: Path) -> S3Connector:
    """The connector, through the proxy, with short timeouts."""
    return S3Connector(
        "S3",
        bucket=s3_bucket.bucket,
        endpoint_url=s3_proxy.url,
        credentials=str(s3_credentials),
        region_name=REGION,
        multipart_threshold=PART,
        multipart_chunksize=PART,
        read_timeout=SHORT_TIMEOUT,
        connect_timeout=SHORT_TIMEOUT,
    )


def put(source: LocalConnector, path: str, size: int) -> bytes:
    data = os.urandom(size)
    source.write(path, io.BytesIO(data))
    return data


# -- S3 ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503], ids=["server error", "slow down"])
def test_s3_a_passing_server_error_is_retried(
    s3: S3Connector,
    s3_bucket: S3Connector,
    s3_proxy: FaultyProxy,
    source: LocalConnector,
    status: int,
) -> None:
    data = put(source, "item/f", 1000)
    s3_proxy.fail(Fault("PUT", r"/item/f$", status=status, times=1))
    result = copy_file(source, "item/f", s3, "item/f", expected=hashes_of(data))
    assert result.how == "streamed"
    assert len(s3_proxy.requests("PUT", r"/item/f$")) == 2
    assert read_all(s3_bucket, "item/f") == data


def test_s3_a_lasting_server_error_is_transient_and_leaves_nothing(
    s3: S3Connector, s3_bucket: S3Connector, s3_proxy: FaultyProxy, source: LocalConnector
) -> None:
    data = put(source, "item/f", 1000)
    s3_proxy.fail(Fault("PUT", r"/item/f$", status=500, times=None))
    with pytest.raises(BackendUnavailable) as caught:
        copy_file(source, "item/f", s3, "item/f", expected=hashes_of(data))
    assert caught.value.transient
    assert SECRET_KEY not in str(caught.value) and "\n" not in str(caught.value)
    assert len(s3_proxy.requests("PUT", r"/item/f$")) == 3  # every attempt botocore makes
    assert s3_bucket.stat("item/f") is None


@pytest.mark.parametrize(
    "fault",
    [Fault("PUT", r"/item/g$", status=503), Fault("PUT", r"/item/g$", drop=True)],
    ids=["server error", "dropped connection"],
)
def test_s3_a_failed_direct_put_is_sent_again_through_botocore(
    s3: S3Connector,
    s3_bucket: S3Connector,
    s3_proxy: FaultyProxy,
    source: LocalConnector,
    fault: Fault,
) -> None:
    # The first small upload shows the connector how to send direct PUTs.
    copy_file(source, "item/f", s3, "item/f", expected=hashes_of(put(source, "item/f", 100)))
    puts = count_calls(s3, "PutObject")
    data = put(source, "item/g", 1000)
    s3_proxy.fail(fault)
    result = copy_file(source, "item/g", s3, "item/g", expected=hashes_of(data))
    assert result.how == "streamed" and result.validated_by == "crc32c"
    # The direct PUT failed; botocore sent the same upload once more.
    assert len(s3_proxy.requests("PUT", r"/item/g$")) == 2 and len(puts) == 1
    assert read_all(s3_bucket, "item/g") == data


def test_s3_a_direct_put_damaged_in_transit_is_caught_and_removed(
    s3_proxy: FaultyProxy,
    s3_bucket: S3Connector,
    s3_credentials: Path,
    source: LocalConnector,
) -> None:
    # S3 refuses a body that does not match the checksum headers sent with
    # it; moto_server stores it anyway and echoes the CRC32C it was sent. So
    # here the proof is the ETag, the md5 moto_server computes of what it got:
    # the kind of proof used when upload checksums are off.
    s3 = S3Connector(
        "S3",
        bucket=s3_bucket.bucket,
        endpoint_url=s3_proxy.url,
        credentials=str(s3_credentials),
        region_name=REGION,
        upload_checksums=False,
    )
    copy_file(source, "item/f", s3, "item/f", expected=hashes_of(put(source, "item/f", 100)))
    assert s3._direct.ready
    data = put(source, "item/g", 1000)
    s3_proxy.fail(Fault("PUT", r"/item/g$", flip=500))
    with pytest.raises(ChecksumMismatch, match="removed"):
        copy_file(source, "item/g", s3, "item/g", expected=hashes_of(data))
    assert s3_bucket.stat("item/g") is None
    assert copy_file(source, "item/g", s3, "item/g", expected=hashes_of(data)).how == "streamed"
    assert read_all(s3_bucket, "item/g") == data


@pytest.mark.parametrize("size", [1000, 2 * MIB], ids=["direct PUT", "botocore PUT"])
def test_s3_a_body_damaged_in_transit_is_caught_though_the_store_states_the_crc32c_sent(
    s3: S3Connector,
    s3_bucket: S3Connector,
    s3_proxy: FaultyProxy,
    source: LocalConnector,
    size: int,
) -> None:
    # moto_server, like a store that does not check checksum headers, keeps
    # the damaged body and answers with the CRC32C it was sent: our own
    # claim, not what it holds. Its ETag, the md5 of what it got, says other.
    copy_file(source, "item/f", s3, "item/f", expected=hashes_of(put(source, "item/f", 100)))
    assert s3._direct.ready
    data = put(source, "item/g", size)
    s3_proxy.fail(Fault("PUT", r"/item/g$", flip=500))
    with pytest.raises(ChecksumMismatch, match="removed"):
        result = copy_file(source, "item/g", s3, "item/g", expected=hashes_of(data))
        pytest.fail(f"damaged bytes proven by {result.validated_by}")
    assert s3_bucket.stat("item/g") is None
    assert copy_file(source, "item/g", s3, "item/g", expected=hashes_of(data)).how == "streamed"
    assert read_all(s3_bucket, "item/g") == data


def test_s3_an_object_whose_etag_belies_its_stated_crc32c_is_not_kept_as_already_there(
    s3: S3Connector,
    s3_bucket: S3Connector,
    s3_proxy: FaultyProxy,
    source: LocalConnector,
) -> None:
    # Left by an earlier write damaged on the way (whose removal failed, say):
    # the store states the catalog's CRC32C, its ETag says other bytes.
    data = put(source, "item/g", 1000)
    s3_proxy.fail(Fault("PUT", r"/item/g$", flip=500))
    s3.write("item/g", io.BytesIO(data))
    assert read_all(s3_bucket, "item/g") != data

    result = copy_file(source, "item/g", s3, "item/g", expected=hashes_of(data))

    assert result.how == "streamed"
    assert read_all(s3_bucket, "item/g") == data


@pytest.mark.parametrize(
    "fault",
    [
        Fault("GET", r"/item/f$", hang=SHORT_TIMEOUT * 3, times=None),
        Fault("GET", r"/item/f$", drop=True, times=None),
    ],
    ids=["timeout", "dropped connection"],
)
def test_s3_timeouts_and_dropped_connections_are_transient(
    s3: S3Connector, s3_bucket: S3Connector, s3_proxy: FaultyProxy, fault: Fault
) -> None:
    s3_bucket.write("item/f", io.BytesIO(b"stored"))
    s3_proxy.fail(fault)
    with pytest.raises(TransientError), s3.open_read("item/f") as stream:
        stream.read()
    s3_proxy.heal()
    with s3.open_read("item/f") as stream:
        assert stream.read() == b"stored"


def test_s3_a_part_failing_for_good_resumes_on_the_retried_job(
    s3: S3Connector, s3_bucket: S3Connector, s3_proxy: FaultyProxy, source: LocalConnector
) -> None:
    data = put(source, "big", 4 * PART + 123)
    expected = hashes_of(data, chunk_size=PART)
    s3_proxy.fail(Fault("PUT", r"/big\?.*partNumber=3", status=500, times=None))
    with pytest.raises(BackendUnavailable):
        copy_file(source, "big", s3, "big", expected=expected)
    assert s3_bucket.stat("big") is None
    sent_before = s3_proxy.requests("PUT", r"/big\?.*partNumber=")

    s3_proxy.heal()
    result = copy_file(source, "big", s3, "big", expected=expected)
    sent_after = s3_proxy.requests("PUT", r"/big\?.*partNumber=")[len(sent_before) :]
    # Only what had not made it goes up again.
    resent = sorted(int(target.split("partNumber=")[1].split("&")[0]) for target in sent_after)
    assert 3 in resent and len(resent) < 5
    assert result.validated_by == "etag"
    assert read_all(s3_bucket, "big") == data
    uploads = s3_bucket.client.list_multipart_uploads(Bucket=s3_bucket.bucket)
    assert uploads.get("Uploads", []) == []


# -- GCS -----------------------------------------------------------------------


@pytest.fixture
def gcs_proxy(fake_gcs_server: str) -> Iterator[FaultyProxy]:
    with faulty_proxy(fake_gcs_server) as proxy:
        yield proxy


@pytest.fixture
def gcs(gcs_proxy: FaultyProxy, gcs_bucket: str) -> GCSConnector:
    return GCSConnector(
        "GCS",
        bucket=gcs_bucket,
        endpoint_url=gcs_proxy.url,
        chunk_size=MIB,
        retry_seconds=5,
        timeout=SHORT_TIMEOUT,
    )


@pytest.fixture
def gcs_direct(fake_gcs_server: str, gcs_bucket: str) -> GCSConnector:
    return GCSConnector("GCS", bucket=gcs_bucket, endpoint_url=fake_gcs_server)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_gcs_a_passing_server_error_is_retried(
    gcs: GCSConnector,
    gcs_direct: GCSConnector,
    gcs_proxy: FaultyProxy,
    source: LocalConnector,
    status: int,
) -> None:
    data = put(source, "item/f", 1000)
    gcs_proxy.fail(Fault("POST", r"/upload/storage/v1/b/.*/o", status=status, times=1))
    result = copy_file(source, "item/f", gcs, "item/f", expected=hashes_of(data))
    assert result.validated_by == "crc32c"
    assert len(gcs_proxy.requests("POST", r"/upload/storage/v1/b/")) == 2
    assert read_all(gcs_direct, "item/f") == data


def test_gcs_a_resumable_chunk_failing_once_is_sent_again(
    gcs: GCSConnector, gcs_direct: GCSConnector, gcs_proxy: FaultyProxy, source: LocalConnector
) -> None:
    data = put(source, "big", 10 * MIB + 7)
    gcs_proxy.fail(Fault("PUT", r"upload_id=", status=503, times=1))
    result = copy_file(source, "big", gcs, "big", expected=hashes_of(data))
    assert result.validated_by == "crc32c"
    assert read_all(gcs_direct, "big") == data


def test_gcs_a_chunk_the_server_kept_only_part_of_is_completed(
    gcs: GCSConnector, gcs_direct: GCSConnector, gcs_proxy: FaultyProxy, source: LocalConnector
) -> None:
    """GCS may persist less than a chunk; its 308 answer says how much, and the rest follows."""
    data = put(source, "big", 10 * MIB + 7)
    gcs_proxy.fail(Fault("PUT", r"upload_id=", truncate=MIB // 3, times=1))
    result = copy_file(source, "big", gcs, "big", expected=hashes_of(data))
    assert result.validated_by == "crc32c"
    assert read_all(gcs_direct, "big") == data
    assert len(gcs_proxy.requests("PUT", r"upload_id=")) == 12  # 11 chunks, one sent in two


def test_gcs_a_server_that_keeps_none_of_a_chunk_is_given_up_on(
    gcs: GCSConnector, gcs_direct: GCSConnector, gcs_proxy: FaultyProxy, source: LocalConnector
) -> None:
    """A 308 without progress, again and again, ends in a transient error, not a loop."""
    data = put(source, "big", 10 * MIB)  # above the single-request limit: resumable
    gcs_proxy.fail(Fault("PUT", r"upload_id=", truncate=0, times=None))
    with pytest.raises(BackendUnavailable, match="keeps none"):
        copy_file(source, "big", gcs, "big", expected=hashes_of(data))
    assert gcs_direct.stat("big") is None


def test_gcs_a_lasting_server_error_is_transient_and_leaves_nothing(
    gcs: GCSConnector, gcs_direct: GCSConnector, gcs_proxy: FaultyProxy, source: LocalConnector
) -> None:
    for path, size in (("small", 1000), ("big", 10 * MIB)):
        data = put(source, path, size)
        gcs_proxy.fail(Fault("POST", r"/upload/", status=500, times=None))
        gcs_proxy.fail(Fault("PUT", r"upload_id=", status=500, times=None))
        with pytest.raises(TransientError) as caught:
            copy_file(source, path, gcs, path, expected=hashes_of(data))
        assert "\n" not in str(caught.value)
        gcs_proxy.heal()
        assert gcs_direct.stat(path) is None


@pytest.mark.parametrize(
    "fault",
    [
        Fault("GET", r"/o/item%2Ff", hang=SHORT_TIMEOUT * 3, times=None),
        Fault("GET", r"/o/item%2Ff", drop=True, times=None),
    ],
    ids=["timeout", "dropped connection"],
)
def test_gcs_timeouts_and_dropped_connections_are_transient(
    gcs: GCSConnector, gcs_direct: GCSConnector, gcs_proxy: FaultyProxy, fault: Fault
) -> None:
    gcs_direct.write("item/f", io.BytesIO(b"stored"))
    gcs_proxy.fail(fault)
    with pytest.raises(ConnectorError) as caught:
        gcs.stat("item/f")
    assert caught.value.transient
    gcs_proxy.heal()
    assert gcs.stat("item/f") is not None


def test_gcs_refused_service_account_credentials_are_access_denied_without_secrets(
    gcs_proxy: FaultyProxy, gcs_bucket: str, tmp_path: Path
) -> None:
    """The key is well formed, but the token server refuses it (revoked, wrong project)."""
    import json

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from connectors.errors import AccessDenied

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    credentials = tmp_path / "service-account.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "test",
                "private_key_id": "0123456789abcdef",
                "private_key": pem,
                "client_email": "storage@test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": f"{gcs_proxy.url}/token",
            }
        )
    )
    gcs_proxy.fail(Fault("POST", r"^/token", status=401, times=None))
    connector = GCSConnector(
        "GCS", bucket=gcs_bucket, credentials=str(credentials), endpoint_url=gcs_proxy.url
    )
    with pytest.raises(AccessDenied) as caught:
        connector.stat("x")
    message = str(caught.value)
    assert "check the credentials" in message and "\n" not in message
    assert "PRIVATE KEY" not in message and "0123456789abcdef" not in message
    assert gcs_proxy.requests("POST", r"^/token")


# -- a download broken in the middle, on either store --------------------------


@pytest.mark.parametrize("store", ["s3", "gcs"])
def test_a_download_broken_in_the_middle_is_transient_and_no_evidence(
    store: str, request: pytest.FixtureRequest
) -> None:
    """The connection closes after part of the body (its length stated whole): a read
    fails with a transient error, and a verification of the copy concludes nothing
    about its bytes (it raises; no size or checksum problem is reported)."""
    from catalog.models import ReferencedPath
    from workers.verify import read_and_compare

    if store == "s3":
        through: S3Connector | GCSConnector = request.getfixturevalue("s3")
        direct: S3Connector | GCSConnector = request.getfixturevalue("s3_bucket")
        proxy: FaultyProxy = request.getfixturevalue("s3_proxy")
        pattern = r"/item/f$"
    else:
        through = request.getfixturevalue("gcs")
        direct = request.getfixturevalue("gcs_direct")
        proxy = request.getfixturevalue("gcs_proxy")
        pattern = r"item%2Ff.*alt=media"
    data = os.urandom(3 * MIB)
    direct.write("item/f", io.BytesIO(data))
    expected = hashes_of(data)
    entry = ReferencedPath(path="f", size=len(data), crc32c=expected.crc32c, md5=expected.md5)

    proxy.fail(Fault("GET", pattern, cut=1000, times=None))
    with pytest.raises(ConnectorError) as caught, through.open_read("item/f") as stream:
        stream.read()
    assert caught.value.transient, caught.value
    with pytest.raises(ConnectorError) as caught:
        read_and_compare(through, "item/f", entry)
    assert caught.value.transient, caught.value
    assert proxy.requests("GET", pattern)  # the fault was met, not passed by

    proxy.heal()
    assert read_and_compare(through, "item/f", entry) == (None, "crc32c")


@pytest.mark.parametrize(
    ("status", "kind", "after"),
    [
        (403, AccessDenied, 10),
        (400, PermanentError, 10),
        (403, AccessDenied, 4),
        (404, BackendUnavailable, 10),
        (410, BackendUnavailable, 4),
    ],
    ids=["403 last", "400 last", "403 middle", "404 last", "410 middle"],
)
def test_gcs_a_refused_chunk_of_a_resumable_upload_ends_it_with_its_own_error(
    gcs: GCSConnector,
    gcs_direct: GCSConnector,
    gcs_proxy: FaultyProxy,
    source: LocalConnector,
    status: int,
    kind: type[ConnectorError],
    after: int,
) -> None:
    """A chunk the server refuses (the last one, or one in the middle) ends the upload
    at once with what the answer means (a refusal is permanent; a session gone, 404 or
    410, is worth a new one), nothing stored; a refused chunk is never taken as sent."""
    data = put(source, "big", 10 * MIB + 7)  # 11 chunks of 1 MiB
    gcs_proxy.fail(Fault("PUT", r"upload_id=", status=status, after=after, times=None))
    with pytest.raises(ConnectorError) as caught:
        copy_file(source, "big", gcs, "big", expected=hashes_of(data))
    assert type(caught.value) is kind, caught.value
    assert len(gcs_proxy.requests("PUT", r"upload_id=")) == after + 1  # not sent again
    gcs_proxy.heal()
    assert gcs_direct.stat("big") is None
