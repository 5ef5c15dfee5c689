"""Amazon S3 and S3-compatible stores as a connector (boto3).

The original Resolwe settings keep their meaning: ``bucket``, ``region_name``,
``endpoint_url``, ``credentials`` (a JSON file with ``AccessKeyId`` and
``SecretAccessKey``; omitted: the standard AWS credential chain),
``role_arn`` (assume that role, refreshing its credentials),
``multipart_threshold``, ``multipart_chunksize``, ``max_pool_connections``.

Objects up to the threshold go up in one PutObject; larger ones as a
multipart upload with parts of exactly ``multipart_chunksize``, a few in
flight at once, so memory stays bounded. ``write`` reports the ETag S3
computed of what it received (the md5, or for a multipart upload the md5 of
the part md5s with ``-N``) and, where the server echoes it, the CRC32C it
validated; the transfer engine compares those with what it read.

A multipart upload that fails for good is aborted. One that fails for a
transient reason (or whose worker is killed) is left in place, and the next
``write`` of the same key resumes it: parts already on S3 whose size and ETag
match the md5 of the same bytes read again are not sent again. Incomplete
uploads that are never resumed are the bucket's lifecycle rule's business
(``AbortIncompleteMultipartUpload``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from hashlib import md5 as md5_hash
from pathlib import Path
from typing import Any, BinaryIO

import crc32c as crc32c_module

from connectors.base import CRC32C, ETAG, Connector, ObjectInfo, check_path
from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigurationError,
    ConnectorError,
    ObjectNotFound,
    PermanentError,
    Throttled,
)
from connectors.streams import Prefixed, read_full

MIB = 1024 * 1024
#: Objects larger than this go up as multipart uploads (boto3's default).
DEFAULT_MULTIPART_THRESHOLD = 8 * MIB
#: Size of every part but the last (boto3's default; S3's minimum is 5 MiB).
DEFAULT_MULTIPART_CHUNKSIZE = 8 * MIB
#: HTTP connections per connector (botocore's default).
DEFAULT_MAX_POOL_CONNECTIONS = 10
#: Parts uploaded at once by one write; memory is about (this + 1) parts.
DEFAULT_PARTS_IN_FLIGHT = 4
#: Seconds to open a connection, and to wait for a read.
DEFAULT_CONNECT_TIMEOUT = 10
DEFAULT_READ_TIMEOUT = 60
#: Attempts per request inside botocore; the workers retry whole jobs too.
DEFAULT_MAX_ATTEMPTS = 3
#: Objects per ListObjectsV2 page (S3's maximum).
DEFAULT_LIST_PAGE = 1000

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "Forbidden",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AllAccessDisabled",
}
_THROTTLED = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "429"}
_MISSING_BUCKET = {"NoSuchBucket"}


class S3Connector(Connector):
    """One bucket; object keys are the relative paths, with no prefix."""

    native_hashes = frozenset({ETAG})
    write_hashes = frozenset({ETAG})

    def __init__(
        self,
        name: str,
        *,
        bucket: str,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        credentials: str | None = None,
        role_arn: str | None = None,
        multipart_threshold: int | None = None,
        multipart_chunksize: int | None = None,
        max_pool_connections: int | None = None,
    ) -> None:
        self.name = name
        self.bucket = bucket
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.credentials = credentials
        self.role_arn = role_arn
        self.multipart_threshold = multipart_threshold or DEFAULT_MULTIPART_THRESHOLD
        #: The part size of multipart uploads: the transfer engine computes
        #: the expected ETag with it.
        self.part_size = multipart_chunksize or DEFAULT_MULTIPART_CHUNKSIZE
        self.max_pool_connections = max_pool_connections or DEFAULT_MAX_POOL_CONNECTIONS
        self._client_lock = threading.Lock()
        self._client: Any = None

    # -- the client, made on first use ------------------------------------

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _static_credentials(self) -> dict[str, str]:
        if self.credentials is None:
            return {}
        path = Path(self.credentials)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            return {
                "aws_access_key_id": str(document["AccessKeyId"]),
                "aws_secret_access_key": str(document["SecretAccessKey"]),
            }
        except FileNotFoundError:
            raise ConfigurationError(
                f"S3 {self.name!r}: credentials file {path} not found"
            ) from None
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigurationError(
                f"S3 {self.name!r}: credentials file {path} is not a JSON object with "
                "AccessKeyId and SecretAccessKey"
            ) from None

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            region_name=self.region_name,
            max_pool_connections=self.max_pool_connections,
            connect_timeout=DEFAULT_CONNECT_TIMEOUT,
            read_timeout=DEFAULT_READ_TIMEOUT,
            retries={"max_attempts": DEFAULT_MAX_ATTEMPTS, "mode": "standard"},
            # We hash every byte ourselves (crc32c, md5 for the ETag); a third
            # checksum computed by botocore on every request would only cost.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        session = boto3.Session(**self._static_credentials(), region_name=self.region_name)
        if self.role_arn is not None:
            session = self._assumed(session)
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    def _assumed(self, base: Any) -> Any:
        """A session whose credentials come from assuming ``role_arn``, refreshed as they expire."""
        import boto3
        import botocore.session
        from botocore.credentials import RefreshableCredentials

        sts = base.client("sts", endpoint_url=self.endpoint_url, region_name=self.region_name)

        def refresh() -> dict[str, str]:
            try:
                answer = sts.assume_role(RoleArn=self.role_arn, RoleSessionName="resolwe-storage")
            except Exception as exc:
                raise self._translate(exc, f"assuming role {self.role_arn}") from exc
            found = answer["Credentials"]
            return {
                "access_key": found["AccessKeyId"],
                "secret_key": found["SecretAccessKey"],
                "token": found["SessionToken"],
                "expiry_time": found["Expiration"].isoformat(),
            }

        credentials = RefreshableCredentials.create_from_metadata(
            metadata=refresh(), refresh_using=refresh, method="sts-assume-role"
        )
        core = botocore.session.get_session()
        core._credentials = credentials
        return boto3.Session(botocore_session=core, region_name=self.region_name)

    # -- errors -----------------------------------------------------------

    def _translate(self, exc: BaseException, what: str) -> ConnectorError:
        """A typed, secret-free error for ``exc`` raised while doing ``what``."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            EndpointConnectionError,
            NoCredentialsError,
            ReadTimeoutError,
        )
        from botocore.exceptions import ConnectTimeoutError as BotoConnectTimeout

        if isinstance(exc, ConnectorError):
            return exc
        where = f"S3 {self.name!r} (bucket {self.bucket!r})"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING_BUCKET:
                return ConfigurationError(f"{where}: the bucket does not exist")
            if code in _NOT_FOUND:
                return ObjectNotFound(f"{where}: {what}: no such object")
            if code in _DENIED or status == 403:
                return AccessDenied(f"{where}: access denied {what} (check the credentials)")
            if code in _THROTTLED or status in (429, 503):
                return Throttled(f"{where}: throttled {what} ({code or status})")
            if isinstance(status, int) and status >= 500:
                return BackendUnavailable(f"{where}: server error {what} ({code or status})")
            return PermanentError(f"{where}: {what} failed ({code or status})")
        if isinstance(exc, NoCredentialsError):
            return AccessDenied(f"{where}: no credentials found {what}")
        if isinstance(
            exc,
            EndpointConnectionError
            | ConnectionClosedError
            | ReadTimeoutError
            | BotoConnectTimeout
            | ConnectionError
            | TimeoutError,
        ):
            return BackendUnavailable(f"{where}: cannot reach the endpoint {what}")
        if isinstance(exc, BotoCoreError):
            return BackendUnavailable(f"{where}: {what} failed ({type(exc).__name__})")
        return PermanentError(f"{where}: {what} failed ({type(exc).__name__})")

    def _call(self, what: str, operation: str, **arguments: Any) -> Any:
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **arguments)
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    # -- the core ---------------------------------------------------------

    def stat(self, path: str) -> ObjectInfo | None:
        check_path(path)
        try:
            head = self._call(f"reading {path!r}", "head_object", Key=path)
        except ObjectNotFound:
            return None
        return ObjectInfo(path, int(head["ContentLength"]), _hashes(head))

    def open_read(self, path: str) -> BinaryIO:
        check_path(path)
        answer = self._call(f"reading {path!r}", "get_object", Key=path)
        return _Body(answer["Body"], self, path)  # type: ignore[return-value]

    def write(
        self, path: str, stream: BinaryIO, *, size: int | None = None, resume: bool = True
    ) -> ObjectInfo:
        check_path(path)
        head = read_full(stream, self.multipart_threshold + 1)
        if len(head) <= self.multipart_threshold:
            answer = self._call(
                f"writing {path!r}",
                "put_object",
                Key=path,
                Body=head,
                ContentMD5=base64.b64encode(md5_hash(head).digest()).decode(),
                ChecksumCRC32C=_crc32c_base64(head),
            )
            return ObjectInfo(path, len(head), _hashes(answer))
        return self._multipart(path, Prefixed(head, stream), resume=resume)

    def _multipart(self, path: str, stream: BinaryIO, *, resume: bool) -> ObjectInfo:
        what = f"writing {path!r}"
        upload_id, done = self._resumable(path) if resume else (None, {})
        if upload_id is None:
            upload_id = self._call(what, "create_multipart_upload", Key=path)["UploadId"]
        parts: list[dict[str, Any]] = []
        total = 0
        try:
            with ThreadPoolExecutor(DEFAULT_PARTS_IN_FLIGHT) as pool:
                pending: set[Future[dict[str, Any]]] = set()
                number = 0
                while True:
                    data = read_full(stream, self.part_size)
                    if not data and number:
                        break
                    number += 1
                    total += len(data)
                    previous = done.get(number)
                    if previous is not None and previous == (len(data), md5_hash(data).hexdigest()):
                        parts.append({"PartNumber": number, "ETag": f'"{previous[1]}"'})
                    else:
                        if len(pending) >= DEFAULT_PARTS_IN_FLIGHT:
                            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                            parts.extend(future.result() for future in finished)
                        pending.add(pool.submit(self._part, path, upload_id, number, data))
                    if len(data) < self.part_size:
                        break
                parts.extend(future.result() for future in pending)
            parts.sort(key=lambda part: part["PartNumber"])
            answer = self._call(
                what,
                "complete_multipart_upload",
                Key=path,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException as exc:
            error = exc if isinstance(exc, ConnectorError) else None
            if error is None or not error.transient:
                # For good: take the parts away. A transient failure keeps
                # them for the retry to resume.
                # The first error is the one to report.
                with contextlib.suppress(Exception):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=path, UploadId=upload_id
                    )
            raise
        return ObjectInfo(path, total, _hashes(answer))

    def _part(self, path: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        answer = self._call(
            f"writing part {number} of {path!r}",
            "upload_part",
            Key=path,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
        )
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _resumable(self, path: str) -> tuple[str | None, dict[int, tuple[int, str]]]:
        """The newest unfinished upload of ``path`` and its parts: number -> (size, md5)."""
        what = f"looking for an unfinished upload of {path!r}"
        answer = self._call(what, "list_multipart_uploads", Prefix=path)
        uploads = [u for u in answer.get("Uploads", []) if u["Key"] == path]
        if not uploads:
            return None, {}
        newest = max(uploads, key=lambda upload: upload["Initiated"])
        parts: dict[int, tuple[int, str]] = {}
        marker = 0
        while True:
            page = self._call(
                what,
                "list_parts",
                Key=path,
                UploadId=newest["UploadId"],
                PartNumberMarker=marker,
            )
            for part in page.get("Parts", []):
                parts[int(part["PartNumber"])] = (int(part["Size"]), part["ETag"].strip('"'))
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        return newest["UploadId"], parts

    def delete(self, path: str) -> None:
        check_path(path)
        self._call(f"deleting {path!r}", "delete_object", Key=path)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if prefix:
            check_path(prefix)
        token: str | None = None
        while True:
            extra = {"ContinuationToken": token} if token else {}
            page = self._call(
                f"listing {prefix!r}",
                "list_objects_v2",
                Prefix=prefix,
                MaxKeys=DEFAULT_LIST_PAGE,
                **extra,
            )
            for entry in page.get("Contents", []):
                etag = entry.get("ETag", "").strip('"').lower()
                yield ObjectInfo(entry["Key"], int(entry["Size"]), {ETAG: etag} if etag else {})
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    # -- capabilities -----------------------------------------------------

    def presigned_url(self, path: str, *, expires: int) -> str:
        check_path(path)
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": path},
                    ExpiresIn=expires,
                )
            )
        except Exception as exc:
            raise self._translate(exc, f"signing a URL of {path!r}") from exc

    def can_copy_from(self, source: Connector) -> bool:
        """Server-side copy works between buckets of one endpoint and identity."""
        return (
            isinstance(source, S3Connector)
            and source.endpoint_url == self.endpoint_url
            and source.credentials == self.credentials
            and source.role_arn == self.role_arn
        )

    def copy_from(self, source: Connector, source_path: str, path: str) -> ObjectInfo:
        assert isinstance(source, S3Connector)
        check_path(source_path)
        check_path(path)
        from boto3.s3.transfer import TransferConfig

        try:
            self.client.copy(
                {"Bucket": source.bucket, "Key": source_path},
                self.bucket,
                path,
                Config=TransferConfig(
                    multipart_threshold=self.multipart_threshold,
                    multipart_chunksize=self.part_size,
                ),
            )
        except Exception as exc:
            raise self._translate(exc, f"copying {source_path!r} to {path!r}") from exc
        info = self.stat(path)
        if info is None:
            raise BackendUnavailable(f"S3 {self.name!r}: {path!r} vanished after the copy")
        return info


def _hashes(answer: dict[str, Any]) -> dict[str, str]:
    """The hashes S3 states in a response: its ETag, and a full-object CRC32C if any."""
    hashes = {}
    etag = str(answer.get("ETag", "")).strip('"').lower()
    if etag:
        hashes[ETAG] = etag
    checksum = answer.get("ChecksumCRC32C")
    if (
        checksum
        and "-" not in checksum
        and answer.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    ):
        hashes[CRC32C] = base64.b64decode(checksum).hex()
    return hashes


def _crc32c_base64(data: bytes) -> str:
    return base64.b64encode(crc32c_module.crc32c(data).to_bytes(4, "big")).decode()


class _Body(io.RawIOBase):
    """S3's streaming body as a binary stream, with errors translated."""

    def __init__(self, body: Any, connector: S3Connector, path: str) -> None:
        self._body = body
        self._connector = connector
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._body.read(len(buffer))
        except Exception as exc:
            raise self._connector._translate(exc, f"reading {self._path!r}") from exc
        count = len(data)
        memoryview(buffer)[:count] = data
        return count

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()
