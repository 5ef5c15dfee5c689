"""The S3 connector against a real S3 server (moto_server over HTTP).

What moto_server (5.2) does not do, and so is not proven here: it stores the
CRC32C of a single PutObject as sent, without checking it (S3 refuses a
mismatch); it does not enforce the expiry of presigned URLs.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.base import ETAG, delete_all
from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ChecksumMismatch,
    ConfigurationError,
    InvalidPath,
    ObjectNotFound,
    TransientError,
)
from connectors.hashing import MultiHasher
from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from connectors.s3_direct import Credentials, DirectPut
from connectors.transfer import copy_file
from tests.connector_conformance import (
    BAD_PATHS,
    ConformanceSuite,
    CorruptInTransit,
    FailingStream,
    hashes_of,
    read_all,
)
from tests.servers.moto import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    checking_credentials,
    count_calls,
)
from tests.servers.process import free_port, wait_until_answering

MIB = 1024 * 1024
#: S3's smallest part, so that a few MiB already make a multipart upload.
PART = 5 * MIB


def make(endpoint: str, bucket: str, credentials: Path | str, **settings: Any) -> S3Connector:
    return S3Connector(
        "S3",
        bucket=bucket,
        endpoint_url=endpoint,
        credentials=str(credentials),
        region_name=REGION,
        **settings,
    )


def small_parts(
    endpoint: str, bucket: S3Connector, credentials: Path, **settings: Any
) -> S3Connector:
    """A connector on ``bucket`` whose uploads of a few MiB are already multipart."""
    return make(
        endpoint,
        bucket.bucket,
        credentials,
        **{"multipart_threshold": PART, "multipart_chunksize": PART, **settings},
    )


@pytest.fixture
def connector(moto_server: str, s3_bucket: S3Connector, s3_credentials: Path) -> S3Connector:
    return small_parts(moto_server, s3_bucket, s3_credentials)


@pytest.fixture
def local_source(tmp_path: Path) -> LocalConnector:
    (tmp_path / "source").mkdir()
    return LocalConnector("source", path=tmp_path / "source")


def expected_hashes(data: bytes, part_size: int) -> Any:
    hasher = MultiHasher(chunk_size=part_size)
    hasher.update(data)
    return hasher.result()


def unfinished_uploads(connector: S3Connector) -> list[dict[str, Any]]:
    answer = connector.client.list_multipart_uploads(Bucket=connector.bucket)
    return list(answer.get("Uploads", []))


class Interrupted(BaseException):
    """As a worker's shutdown or time limit interrupts it (dramatiq's Interrupt)."""


class BreakingStream(io.RawIOBase):
    """Yields ``good`` bytes, then raises ``error``: a source that fails midway."""

    def __init__(self, good: bytes, error: BaseException) -> None:
        self._good = io.BytesIO(good)
        self._error = error

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        count = self._good.readinto(buffer)
        if not count:
            raise self._error
        return count


class TestS3Conformance(ConformanceSuite):
    pass


# -- what write stores and reports -------------------------------------------


def test_the_fixture_connector_round_trips(s3_bucket: S3Connector) -> None:
    info = s3_bucket.write("a/b.txt", io.BytesIO(b"hello"))
    assert info.hashes["etag"] == expected_hashes(b"hello", s3_bucket.part_size).md5
    with s3_bucket.open_read("a/b.txt") as stream:
        assert stream.read() == b"hello"


def test_a_small_object_is_one_put_with_its_crc32c(connector: S3Connector) -> None:
    data = os.urandom(PART)  # exactly the threshold: still one request
    puts = count_calls(connector, "PutObject")
    info = connector.write("small/object", io.BytesIO(data), size=len(data))
    assert len(puts) == 1 and puts[0]["ChecksumAlgorithm"] == "CRC32C"
    expected = expected_hashes(data, connector.part_size)
    assert info.hashes == {"etag": expected.md5, "crc32c": expected.crc32c}
    assert connector.stat("small/object") == info
    assert [entry.path for entry in connector.list("small/")] == ["small/object"]


def test_many_objects_are_deleted_a_thousand_a_request(connector: S3Connector) -> None:
    paths = [f"gone/{n:04d}" for n in range(2_001)]
    for path in paths[::500]:
        connector.write(path, io.BytesIO(b"x"))
    requests = count_calls(connector, "DeleteObjects", "DeleteObject")
    delete_all(connector, paths)
    assert [len(r["Delete"]["Objects"]) for r in requests] == [1_000, 1_000, 1]
    assert list(connector.list("gone/")) == []


def test_keys_that_xml_cannot_carry_are_deleted_one_by_one(connector: S3Connector) -> None:
    """A control character has no form in XML 1.0: DeleteObjects cannot name such a key.

    S3 refuses the whole request (MalformedXML), so a copy with one such
    file could never be deleted; those keys go in a DeleteObject each (whose
    key is in the URL), the rest in bulk. A carriage return botocore escapes.
    """
    odd = ["ctl/a\x01b", "ctl/esc\x1b[0m", "ctl/bell\x07"]
    plain = ["ctl/cr\rlf", "ctl/plain", "ctl/\u00e9 t"]
    for path in odd + plain:
        connector.write(path, io.BytesIO(path.encode()))
    assert [info.path for info in connector.list("ctl/")] == sorted(odd + plain)
    requests = count_calls(connector, "DeleteObjects", "DeleteObject")
    delete_all(connector, [*odd, *plain, "ctl/never-there\x02"])
    assert list(connector.list("ctl/")) == []
    bulk = [[o["Key"] for o in r["Delete"]["Objects"]] for r in requests if "Delete" in r]
    assert bulk == [plain]
    assert sorted(r["Key"] for r in requests if "Key" in r) == sorted([*odd, "ctl/never-there\x02"])


def test_small_objects_after_the_first_go_up_as_direct_puts(connector: S3Connector) -> None:
    puts = count_calls(connector, "PutObject")
    bodies = {f"direct/{index} é": os.urandom(1000 + index) for index in range(4)}
    reported = {path: connector.write(path, io.BytesIO(data)) for path, data in bodies.items()}
    # Only the first went through botocore; it showed where the others go.
    assert len(puts) == 1 and connector._direct.ready
    for path, data in bodies.items():
        expected = expected_hashes(data, connector.part_size)
        assert reported[path].hashes == {"etag": expected.md5, "crc32c": expected.crc32c}
        assert connector.stat(path) == reported[path]
        assert read_all(connector, path) == data


def test_a_large_object_is_a_multipart_upload_with_the_predicted_etag(
    connector: S3Connector,
) -> None:
    data = os.urandom(12 * MIB + 5)
    made = count_calls(connector, "CreateMultipartUpload")
    parts = count_calls(connector, "UploadPart")
    info = connector.write("big/object", io.BytesIO(data), size=len(data))
    assert sorted(len(part["Body"]) for part in parts) == [2 * MIB + 5, PART, PART]
    # Each part carries its CRC32C, checked by the server; the object's is their composite.
    assert [(call["ChecksumAlgorithm"], call["ChecksumType"]) for call in made] == [
        ("CRC32C", "COMPOSITE")
    ]
    assert all(part["ChecksumCRC32C"] for part in parts)
    expected = expected_hashes(data, connector.part_size)
    assert info.size == len(data)
    # A composite CRC32C is not the object's: only the ETag is stated.
    assert info.hashes == {"etag": expected.awss3etag} and info.hashes["etag"].endswith("-3")
    stat = connector.stat("big/object")
    assert stat is not None and stat.size == len(data)
    assert stat.hashes == {"etag": expected.awss3etag}
    with connector.open_read("big/object") as stream:
        assert stream.read() == data
    assert unfinished_uploads(connector) == []


def test_an_object_of_one_part_is_one_put_whatever_the_threshold(
    moto_server: str, s3_bucket: S3Connector, s3_credentials: Path
) -> None:
    # Above the threshold but within one part: a one-part multipart upload
    # would have an ETag ending in "-1", which no catalog predicts.
    connector = make(
        moto_server,
        s3_bucket.bucket,
        s3_credentials,
        multipart_threshold=PART,
        multipart_chunksize=PART + MIB,
    )
    data = os.urandom(PART + MIB // 2)
    info = connector.write("one-part", io.BytesIO(data))
    assert info.hashes["etag"] == expected_hashes(data, connector.part_size).awss3etag
    assert "-" not in info.hashes["etag"]


def test_open_read_is_a_binary_stream(connector: S3Connector) -> None:
    data = os.urandom(300_000)
    connector.write("r", io.BytesIO(data))
    with connector.open_read("r") as stream:
        buffer = bytearray(100_000)
        assert stream.readinto(buffer) == 100_000 and bytes(buffer) == data[:100_000]
        assert stream.read(10) == data[100_000:100_010]
        assert stream.read() == data[100_010:]
    assert stream.closed
    with pytest.raises(ObjectNotFound):
        connector.open_read("missing")


# -- failed uploads: aborted, or kept for the retry --------------------------


def test_a_failed_multipart_upload_is_aborted(connector: S3Connector) -> None:
    with pytest.raises(OSError, match="went away"):
        connector.write("broken", FailingStream(os.urandom(11 * MIB)))  # type: ignore[arg-type]
    assert unfinished_uploads(connector) == []
    assert connector.stat("broken") is None


def test_without_resume_a_transient_failure_is_aborted_too(connector: S3Connector) -> None:
    stream = BreakingStream(os.urandom(11 * MIB), BackendUnavailable("source timed out"))
    with pytest.raises(BackendUnavailable):
        connector.write("broken", stream, resume=False)  # type: ignore[arg-type]
    assert unfinished_uploads(connector) == []


@pytest.mark.parametrize(
    "error", [BackendUnavailable("source timed out"), Interrupted()], ids=["transient", "killed"]
)
def test_a_retried_upload_resumes_from_its_parts(
    connector: S3Connector, error: BaseException
) -> None:
    data = os.urandom(16 * MIB)
    # The first attempt dies while reading part 3: parts 1 and 2 are on S3.
    with pytest.raises(type(error)):
        connector.write("resumed", BreakingStream(data[: 2 * PART + 1000], error))  # type: ignore[arg-type]
    assert [upload["Key"] for upload in unfinished_uploads(connector)] == ["resumed"]

    sent = count_calls(connector, "UploadPart")
    read = io.BytesIO(data)
    info = connector.write("resumed", read)
    assert sorted(part["PartNumber"] for part in sent) == [3, 4]
    assert read.tell() == len(data)  # the skipped parts were read all the same
    assert info.hashes["etag"] == expected_hashes(data, PART).awss3etag
    with connector.open_read("resumed") as stream:
        assert stream.read() == data
    assert unfinished_uploads(connector) == []


def test_a_resumed_part_with_other_bytes_is_sent_again(connector: S3Connector) -> None:
    before = os.urandom(11 * MIB)
    with pytest.raises(BackendUnavailable):
        connector.write("changed", BreakingStream(before[: PART + 10], BackendUnavailable("x")))  # type: ignore[arg-type]
    data = before[:100] + b"!" + before[101:]  # part 1 differs by one byte
    sent = count_calls(connector, "UploadPart")
    connector.write("changed", io.BytesIO(data))
    assert sorted(part["PartNumber"] for part in sent) == [1, 2, 3]
    with connector.open_read("changed") as stream:
        assert stream.read() == data


def test_an_upload_made_otherwise_is_not_resumed(connector: S3Connector) -> None:
    data = os.urandom(11 * MIB)
    client = connector.client
    # Another tool's upload of the same key (no CRC32C): its parts cannot be
    # completed with ours, so it is left alone.
    foreign = client.create_multipart_upload(Bucket=connector.bucket, Key="other")
    client.upload_part(
        Bucket=connector.bucket,
        Key="other",
        UploadId=foreign["UploadId"],
        PartNumber=1,
        Body=data[:PART],
    )
    sent = count_calls(connector, "UploadPart")
    connector.write("other", io.BytesIO(data))
    assert sorted(part["PartNumber"] for part in sent) == [1, 2, 3]
    assert [upload["UploadId"] for upload in unfinished_uploads(connector)] == [foreign["UploadId"]]


def test_upload_checksums_off_sends_md5s_and_still_resumes(
    moto_server: str, s3_bucket: S3Connector, s3_credentials: Path
) -> None:
    """For S3-compatible stores that reject the x-amz-checksum headers."""
    connector = small_parts(moto_server, s3_bucket, s3_credentials, upload_checksums=False)
    calls = count_calls(connector, "PutObject", "CreateMultipartUpload", "UploadPart")
    small = os.urandom(1000)
    assert connector.write("small", io.BytesIO(small)).hashes == {
        "etag": expected_hashes(small, PART).md5
    }
    data = os.urandom(16 * MIB)
    with pytest.raises(BackendUnavailable):
        connector.write("big", BreakingStream(data[: PART + 10], BackendUnavailable("x")))  # type: ignore[arg-type]
    sent = count_calls(connector, "UploadPart")
    info = connector.write("big", io.BytesIO(data))
    assert sorted(part["PartNumber"] for part in sent) == [2, 3, 4]
    assert info.hashes == {"etag": expected_hashes(data, PART).awss3etag}
    assert calls and not any(key.startswith("Checksum") for call in calls for key in call)
    assert all(call["ContentMD5"] for call in calls if "Body" in call)
    with connector.open_read("big") as stream:
        assert stream.read() == data


def test_requests_under_way_are_bounded_by_max_pool_connections(
    moto_server: str, s3_bucket: S3Connector, s3_credentials: Path
) -> None:
    """However many threads write at once, one connector opens at most that many requests."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    connector = small_parts(moto_server, s3_bucket, s3_credentials, max_pool_connections=2)
    lock = threading.Lock()
    under_way = [0, 0]  # now, most

    def began(**_: Any) -> None:
        with lock:
            under_way[0] += 1
            under_way[1] = max(under_way)
        time.sleep(0.02)  # long enough for others to pile up, were they let through

    def ended(**_: Any) -> None:
        with lock:
            under_way[0] -= 1

    connector.client.meta.events.register("before-send.s3", began)
    connector.client.meta.events.register("after-call.s3", ended)
    data = os.urandom(3 * PART)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda n: connector.write(f"f{n}", io.BytesIO(data)), range(4)))
    assert under_way == [0, 2]


def test_resume_false_starts_afresh(connector: S3Connector) -> None:
    data = os.urandom(11 * MIB)
    with pytest.raises(BackendUnavailable):
        connector.write("fresh", BreakingStream(data[: PART + 10], BackendUnavailable("x")))  # type: ignore[arg-type]
    sent = count_calls(connector, "UploadPart")
    connector.write("fresh", io.BytesIO(data), resume=False)
    assert sorted(part["PartNumber"] for part in sent) == [1, 2, 3]


# -- the rest of the core ----------------------------------------------------


def test_stat_of_a_missing_object_is_none_and_delete_is_idempotent(
    connector: S3Connector,
) -> None:
    assert connector.stat("nothing/here") is None
    connector.write("gone", io.BytesIO(b"x"))
    connector.delete("gone")
    connector.delete("gone")
    assert connector.stat("gone") is None


def test_listing_pages(connector: S3Connector, monkeypatch: pytest.MonkeyPatch) -> None:
    import connectors.s3

    monkeypatch.setattr(connectors.s3, "DEFAULT_LIST_PAGE", 3)
    for number in range(8):
        connector.write(f"p/{number}", io.BytesIO(b"x" * number))
    connector.write("q/other", io.BytesIO(b"not listed"))
    pages = count_calls(connector, "ListObjectsV2")
    listed = list(connector.list("p/"))
    assert [(info.path, info.size) for info in listed] == [(f"p/{n}", n) for n in range(8)]
    assert len(pages) == 3 and all(page["MaxKeys"] == 3 for page in pages)
    assert listed[1].hashes == {"etag": expected_hashes(b"x", PART).md5}


# -- capabilities ------------------------------------------------------------


def test_presigned_url(connector: S3Connector) -> None:
    connector.write("shared/file.txt", io.BytesIO(b"for your eyes"))
    url = connector.presigned_url("shared/file.txt", expires=60)
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == b"for your eyes"
    assert "presigned_url" in connector.capabilities()


def test_presigned_urls_expire(connector: S3Connector) -> None:
    """A SigV4 URL states its lifetime; S3 enforces it (moto_server does not)."""
    connector.write("x", io.BytesIO(b"x"))
    query = urllib.parse.parse_qs(
        urllib.parse.urlsplit(connector.presigned_url("x", expires=90)).query
    )
    assert query["X-Amz-Expires"] == ["90"]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    for wrong in (0, -1, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError, match="expires"):
            connector.presigned_url("x", expires=wrong)


def test_server_side_copy_within_the_endpoint(
    connector: S3Connector, moto_server: str, s3_credentials: Path
) -> None:
    other_bucket = f"bucket-{uuid.uuid4().hex[:16]}"
    connector.client.create_bucket(Bucket=other_bucket)
    other = make(
        moto_server,
        other_bucket,
        s3_credentials,
        multipart_threshold=PART,
        multipart_chunksize=PART,
    )
    assert other.can_copy_from(connector)
    for name, size in (("small", 100_000), ("large", 12 * MIB)):
        data = os.urandom(size)
        connector.write(f"item/{name}", io.BytesIO(data))
        uploads = count_calls(other, "PutObject", "UploadPart")  # bytes through us
        expected = hashes_of(data, chunk_size=PART)
        result = copy_file(connector, f"item/{name}", other, f"item/{name}", expected=expected)
        assert result.how == "server-side" and uploads == []
        with other.open_read(f"item/{name}") as stream:
            assert stream.read() == data
    with pytest.raises(ObjectNotFound):
        other.copy_from(connector, "item/missing", "x")


def test_a_server_side_copy_of_one_part_is_one_copy_proven_by_its_etag(
    connector: S3Connector, moto_server: str, s3_credentials: Path
) -> None:
    """An object of exactly the part size is one part, copied as written: in one request.

    As a one-part multipart copy its ETag would end in "-1", which no
    catalog predicts: the copy, and every confirmation before a delete
    after it, would read its bytes back to prove them.
    """
    other_bucket = f"bucket-{uuid.uuid4().hex[:16]}"
    connector.client.create_bucket(Bucket=other_bucket)
    other = make(
        moto_server,
        other_bucket,
        s3_credentials,
        multipart_threshold=PART,
        multipart_chunksize=PART,
    )
    data = os.urandom(PART)
    written = connector.write("item/part", io.BytesIO(data))
    expected = hashes_of(data, chunk_size=PART)
    assert written.hashes[ETAG] == expected.md5  # one PutObject
    reads = count_calls(other, "GetObject")
    result = copy_file(connector, "item/part", other, "item/part", expected=expected)
    assert result.how == "server-side" and reads == []
    copied = other.stat("item/part")
    assert copied is not None and copied.hashes[ETAG] == expected.md5


@pytest.mark.parametrize("size", [1000, 2 * PART + 1], ids=["CopyObject", "UploadPartCopy"])
def test_a_store_without_server_side_copy_is_streamed_to_once_it_says_so(
    connector: S3Connector, moto_server: str, s3_credentials: Path, size: int
) -> None:
    """An S3-compatible store answering 501 NotImplemented: the bytes go through us.

    The declared fallback, found once: the next file is not asked of the
    store again. (Before, a 501 was a server error retried until given up.)
    """
    other_bucket = f"bucket-{uuid.uuid4().hex[:16]}"
    connector.client.create_bucket(Bucket=other_bucket)
    other = make(
        moto_server,
        other_bucket,
        s3_credentials,
        multipart_threshold=PART,
        multipart_chunksize=PART,
    )
    refused: list[str] = []

    def not_implemented(model: Any, **_: Any) -> tuple[Any, dict[str, Any]]:
        refused.append(model.name)
        error = {"Code": "NotImplemented", "Message": "A header you provided is not implemented"}
        answer = {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 501}}
        return (type("Answer", (), {"status_code": 501, "headers": {}})(), answer)

    for operation in ("CopyObject", "UploadPartCopy"):
        other.client.meta.events.register(f"before-call.s3.{operation}", not_implemented)
    data = [os.urandom(size), os.urandom(size)]
    for number, content in enumerate(data):
        connector.write(f"item/{number}", io.BytesIO(content))
    results = [
        copy_file(
            connector,
            f"item/{number}",
            other,
            f"item/{number}",
            expected=hashes_of(content, chunk_size=PART),
        )
        for number, content in enumerate(data)
    ]
    assert [result.how for result in results] == ["streamed", "streamed"]
    assert len(refused) == 1, refused  # asked once, then known
    for number, content in enumerate(data):
        with other.open_read(f"item/{number}") as stream:
            assert stream.read() == content
    assert unfinished_uploads(other) == []


def test_no_server_side_copy_across_identities(
    connector: S3Connector, moto_server: str, tmp_path: Path
) -> None:
    elsewhere = make(f"http://127.0.0.1:{free_port()}", connector.bucket, "/none")
    assert not connector.can_copy_from(elsewhere)
    assert not connector.can_copy_from(LocalConnector("local", path=tmp_path))


def test_an_assumed_role(moto_server: str, s3_bucket: S3Connector, s3_credentials: Path) -> None:
    from botocore.credentials import RefreshableCredentials

    connector = make(
        moto_server,
        s3_bucket.bucket,
        s3_credentials,
        role_arn="arn:aws:iam::123456789012:role/storage",
    )
    credentials = connector.client._request_signer._credentials
    assert isinstance(credentials, RefreshableCredentials)
    connector.write("by/role", io.BytesIO(b"x"))
    # moto's STS hands out temporary keys of its own, not the file's.
    assert credentials.get_frozen_credentials().access_key not in (ACCESS_KEY, None)
    assert credentials.get_frozen_credentials().token
    assert connector.stat("by/role") is not None


# -- errors ------------------------------------------------------------------


def test_an_unknown_key_id_is_access_denied_without_secrets(
    moto_server: str, s3_bucket: S3Connector, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"AccessKeyId": "AKIAWRONGKEYID000000", "SecretAccessKey": "wrong-secret"}')
    connector = make(moto_server, s3_bucket.bucket, wrong)
    with checking_credentials(moto_server), pytest.raises(AccessDenied) as caught:
        connector.write("x", io.BytesIO(b"data"))
    message = str(caught.value)
    assert "access denied for bucket" in message and "check the credentials" in message
    for secret in ("AKIAWRONGKEYID000000", "wrong-secret", ACCESS_KEY, SECRET_KEY):
        assert secret not in message


def test_a_wrong_secret_is_access_denied_without_secrets(
    moto_server: str, s3_bucket: S3Connector, tmp_path: Path
) -> None:
    import boto3

    iam = boto3.client(
        "iam",
        endpoint_url=moto_server,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
    )
    user = f"user-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    wrong = tmp_path / "wrong.json"
    wrong.write_text(
        f'{{"AccessKeyId": "{key["AccessKeyId"]}", "SecretAccessKey": "not-the-secret"}}'
    )
    connector = make(moto_server, s3_bucket.bucket, wrong)
    with checking_credentials(moto_server):
        with pytest.raises(AccessDenied) as written:
            connector.write("x", io.BytesIO(b"data"))  # SignatureDoesNotMatch
        with pytest.raises(AccessDenied) as stated:
            connector.stat("x")  # a bare 403: HEAD has no body
    for caught in (written, stated):
        message = str(caught.value)
        assert "check the credentials" in message
        for secret in (key["AccessKeyId"], key["SecretAccessKey"], "not-the-secret"):
            assert secret not in message


def test_unreachable_endpoint_is_transient(s3_credentials: Path) -> None:
    connector = make(f"http://127.0.0.1:{free_port()}", "bucket-b", s3_credentials)
    with pytest.raises(BackendUnavailable) as caught:
        connector.stat("x")
    assert isinstance(caught.value, TransientError) and caught.value.transient


@pytest.mark.parametrize("path", BAD_PATHS)
def test_bad_paths_are_refused_before_any_io(path: str) -> None:
    # Nothing listens there and no credentials file exists: any request, or
    # even making the client, would fail otherwise than with InvalidPath.
    endpoint = f"http://127.0.0.1:{free_port()}"
    connector = make(endpoint, "bucket-b", "/no/such/credentials.json")
    other = make(endpoint, "bucket-c", "/no/such/credentials.json")
    attempts = [
        lambda: connector.stat(path),
        lambda: connector.open_read(path),
        lambda: connector.write(path, io.BytesIO(b"x")),
        lambda: connector.delete(path),
        lambda: connector.presigned_url(path, expires=5),
        lambda: connector.copy_from(other, path, "fine"),
        lambda: connector.copy_from(other, "fine", path),
    ]
    if path:  # "" lists the whole bucket
        attempts.append(lambda: list(connector.list(path)))
    for attempt in attempts:
        with pytest.raises(InvalidPath):
            attempt()
    assert connector._client is None and other._client is None


def test_a_missing_bucket_is_a_configuration_error(moto_server: str, s3_credentials: Path) -> None:
    connector = make(moto_server, "no-such-bucket-here", s3_credentials)
    with pytest.raises(ConfigurationError, match="bucket does not exist"):
        connector.write("x", io.BytesIO(b"x"))


# -- through the transfer engine ---------------------------------------------


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
    assert result.hashes is not None  # hashed in passing
    corrupting = CorruptInTransit(connector, at=6 * MIB)
    with pytest.raises(ChecksumMismatch, match="removed"):
        copy_file(local_source, "m", corrupting, "m3", expected=same_parts)
    assert connector.stat("m3") is None
    # A retried copy finds the object in place and proves it without a write.
    again = copy_file(local_source, "m", connector, "m", expected=same_parts)
    assert again.how == "skipped"


@pytest.mark.parametrize("checksums", [True, False], ids=["crc32c", "md5"])
@pytest.mark.parametrize("size", [1000, 2 * PART + 3], ids=["one PUT", "multipart"])
def test_in_a_bucket_encrypting_with_a_kms_key_copies_are_proven_without_the_etag(
    moto_server: str,
    s3_bucket: S3Connector,
    s3_credentials: Path,
    local_source: LocalConnector,
    checksums: bool,
    size: int,
) -> None:
    # S3 says such an object's ETag is no md5 of its bytes (moto_server's is):
    # the stated CRC32C proves it, else its bytes read back.
    s3_bucket.client.put_bucket_encryption(
        Bucket=s3_bucket.bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]
        },
    )
    connector = small_parts(moto_server, s3_bucket, s3_credentials, upload_checksums=checksums)
    local_source.write("f", io.BytesIO(b"first"))  # shows the connector the direct PUT
    copy_file(local_source, "f", connector, "f", expected=hashes_of(b"first"))
    data = os.urandom(size)
    local_source.write("g", io.BytesIO(data))

    result = copy_file(local_source, "g", connector, "g", expected=hashes_of(data))

    stated = connector.stat("g")
    assert stated is not None and "etag" not in stated.hashes
    one_put_with_crc32c = checksums and size == 1000
    assert (result.validated_by == "crc32c") == one_put_with_crc32c
    assert one_put_with_crc32c or result.validated_by.endswith("read back")
    assert read_all(connector, "g") == data


# -- the hand-signed direct PUTs, against a server that checks signatures ------------


@pytest.fixture
def checking_moto(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], str]]:
    """A moto_server started with INITIAL_NO_AUTH_ACTION_COUNT: it checks every request after.

    The unchecked actions make an IAM user allowed to use S3, its keys and a
    bucket; returns the endpoint, the keys and the bucket.
    """
    binary = Path(sys.executable).parent / "moto_server"
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}
    with (tmp_path / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log, env=env
        )
    try:
        problem = wait_until_answering(f"{endpoint}/moto-api/", process, "moto_server")
        assert problem is None, problem
        import boto3

        setup = {
            "endpoint_url": endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "region_name": REGION,
        }
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="worker")
        iam.put_user_policy(
            UserName="worker",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="worker")["AccessKey"]
        keys = {"key": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=keys["key"],
            aws_secret_access_key=keys["secret"],
            region_name=REGION,
        ).create_bucket(Bucket="checked")
        yield endpoint, keys, "checked"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_direct_puts_are_signed_as_a_checking_server_accepts(
    checking_moto: tuple[str, dict[str, str], str], tmp_path: Path
) -> None:
    endpoint, keys, bucket = checking_moto
    credentials = tmp_path / "worker.json"
    credentials.write_text(
        json.dumps({"AccessKeyId": keys["key"], "SecretAccessKey": keys["secret"]})
    )
    connector = make(endpoint, bucket, credentials)
    puts = count_calls(connector, "PutObject")
    connector.write("first.txt", io.BytesIO(b"botocore shows the way"))
    assert connector._direct.ready
    names = ["with space/a b.txt", "unicode/été ü 日本.txt", "plus/a+b+c.txt", "tilde~/x=y&z.txt"]
    for name in names:
        data = name.encode() * 50
        connector.write(name, io.BytesIO(data))
        assert read_all(connector, name) == data
    assert len(puts) == 1  # the rest went up directly, each accepted as signed

    # Signed with a wrong secret, the server refuses a direct PUT (and we send it nowhere else).
    wrong = DirectPut(lambda: Credentials(keys["key"], "not-the-secret"), timeout=10, pool_size=1)
    target = f"{endpoint}/{bucket}/probe.txt"
    wrong.learn(
        target,
        "probe.txt",
        f"AWS4-HMAC-SHA256 Credential={keys['key']}/20260101/{REGION}/s3/aws4_request",
    )
    assert wrong.ready
    assert wrong.put("probe.txt", b"data", {}) is None
    right = DirectPut(lambda: Credentials(keys["key"], keys["secret"]), timeout=10, pool_size=1)
    right.learn(
        target,
        "probe.txt",
        f"AWS4-HMAC-SHA256 Credential={keys['key']}/20260101/{REGION}/s3/aws4_request",
    )
    assert right.put("probe.txt", b"data", {}) is not None
    assert connector.stat("probe.txt") is not None
    assert "not-the-secret" not in repr(Credentials(keys["key"], "not-the-secret"))


def test_a_missing_bucket_is_never_taken_for_a_missing_object(
    moto_server: str, s3_credentials: Path
) -> None:
    """HeadObject of a bucket that does not exist is a bare 404, as for a missing object.

    ``stat`` answering None for it tells the caller "no such object" on a
    misconfiguration (``confirm_copy`` asks ``stat`` of a file its listing
    did not show, ``copy_file`` of its destination).
    """
    connector = make(moto_server, "no-such-bucket-here", s3_credentials)
    with pytest.raises(ConfigurationError, match="bucket does not exist"):
        connector.stat("item/f")


def test_a_missing_object_of_an_existing_bucket_is_still_none(connector: S3Connector) -> None:
    assert connector.stat("item/none") is None
    assert connector.stat("item/none") is None
