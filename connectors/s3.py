"""Amazon S3 and S3-compatible stores as a connector (boto3).

The original Resolwe settings keep their meaning: ``bucket``, ``region_name``,
``endpoint_url``, ``credentials`` (a JSON file with ``AccessKeyId`` and
``SecretAccessKey``; omitted: the standard AWS credential chain),
``role_arn`` (assume that role, refreshing its credentials),
``multipart_threshold``, ``multipart_chunksize``, ``max_pool_connections``
(also the most requests one connector has under way at once, whatever the
number of threads using it). Ours: ``upload_checksums`` (default true) and
``connect_timeout`` / ``read_timeout`` in seconds. Nothing is read or
contacted when a connector is made: the credentials file on first use, the
endpoint on the first request.

Objects up to the threshold (and any object that fits in one part) go up in
one PutObject; larger ones as a multipart upload with parts of exactly
``multipart_chunksize`` (doubled for a file too large for 10,000 such
parts, up to S3's 5 TiB: ``part_size_for``), a few in flight at once and at
most ``DEFAULT_BYTES_IN_FLIGHT`` of them, so memory stays bounded.
Every upload request carries the CRC32C of its bytes (``ChecksumAlgorithm``
``CRC32C``; a multipart upload's checksum is the composite of its parts',
the kind S3-compatible stores have supported longest), so the store refuses
bytes damaged on the way. A store that rejects those headers is configured
with ``upload_checksums: false``: requests then carry ``Content-MD5``, which
every S3 store checks. ``write`` reports the ETag S3 computed of what it
received (the md5, or for a multipart upload the md5 of the part md5s with
``-N``) and, where the server states it, the object's CRC32C; the transfer
engine compares those with what it read.

A body of up to 1 MiB goes up as a direct PUT signed here
(``connectors.s3_direct``), once botocore's first PutObject has shown the
URL and region: a third of botocore's CPU per request, which is most of a
worker's CPU when it copies many small files. A direct PUT that fails is
sent again through botocore, which retries and reports typed errors.

A multipart upload that fails for good is aborted. One that fails for a
transient reason (or whose worker is killed) is left in place, and the next
``write`` of the same key resumes it: see ``S3Connector.write``. Incomplete
uploads that are never resumed are the bucket's lifecycle rule's business
(``AbortIncompleteMultipartUpload``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC
from hashlib import md5 as md5_hash
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from connectors.base import CRC32C, ETAG, Connector, LazyClient, ObjectInfo, check_path
from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigurationError,
    ConnectorError,
    ObjectNotFound,
    PermanentError,
    Throttled,
    Unsupported,
)
from connectors.hashing import crc32c
from connectors.s3_direct import DEFAULT_DIRECT_PUT_LIMIT, Credentials, DirectPut
from connectors.streams import Prefixed, read_full

MIB = 1024 * 1024
#: Objects larger than this go up as multipart uploads (boto3's default).
DEFAULT_MULTIPART_THRESHOLD = 8 * MIB
#: Size of every part but the last (boto3's default).
DEFAULT_MULTIPART_CHUNKSIZE = 8 * MIB
#: HTTP connections per connector, and its requests under way at once, across
#: threads (botocore's default is 10: at 100 ms a round trip that caps a
#: process at 100 small objects a second; ``benchmarks/LATENCY.md``).
DEFAULT_MAX_POOL_CONNECTIONS = 64
#: Parts uploaded at once by one write (aws-cli's 10); memory is about (this +
#: 2) parts per write, and the connector's requests are bounded by
#: ``max_pool_connections``.
DEFAULT_PARTS_IN_FLIGHT = 10
#: Bytes of parts held in memory by one upload at most (fewer parts in flight when large).
DEFAULT_BYTES_IN_FLIGHT = 256 * MIB
#: Bodies up to this size are sent without asking first (``Expect: 100-continue``).
DEFAULT_EXPECT_THRESHOLD = 1 * MIB
#: Seconds to open a connection.
DEFAULT_CONNECT_TIMEOUT = 10
#: Seconds to wait for the next bytes of an answer.
DEFAULT_READ_TIMEOUT = 60
#: Attempts per request (the first included) inside botocore; the workers retry jobs too.
DEFAULT_MAX_ATTEMPTS = 3
#: Objects per ListObjectsV2 page (S3's maximum).
DEFAULT_LIST_PAGE = 1000
#: Name of the assumed-role session, as CloudTrail shows it.
DEFAULT_ROLE_SESSION_NAME = "resolwe-storage"

#: S3's limits on multipart uploads and presigned URLs.
S3_MIN_PART_SIZE = 5 * MIB
S3_MAX_PART_SIZE = 5 * 1024 * MIB
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT_SIZE = 5 * 1024**4
S3_MAX_PRESIGNED_SECONDS = 7 * 24 * 3600
#: Keys per DeleteObjects request (S3's limit).
S3_DELETE_BATCH = 1_000

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
#: Codes botocore's standard retry mode takes for transient, whatever their status (400).
_TRANSIENT = {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
_MISSING_BUCKET = {"NoSuchBucket"}
#: A string XML 1.0 can carry (its ``Char``); botocore escapes a carriage return.
_XML_CHARS = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")


class _StoredPart(NamedTuple):
    """A part already uploaded to an unfinished upload, as ListParts states it."""

    size: int
    etag: str
    crc32c: str | None


class S3Connector(LazyClient, Connector):
    """One bucket; object keys are the relative paths, with no prefix.

    ``stat`` and ``write`` report the ETag and, where S3 keeps one for the
    object, its full-object CRC32C (objects uploaded by other tools may have
    none, and the listing never has it).
    """

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
        upload_checksums: bool = True,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        self.name = name
        self.bucket = bucket
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.credentials = credentials
        self.role_arn = role_arn
        self.multipart_threshold = multipart_threshold or DEFAULT_MULTIPART_THRESHOLD
        #: The part size of multipart uploads: the transfer engine computes
        #: the expected ETag with it (``MultiHasher(chunk_size=part_size)``).
        self.part_size = multipart_chunksize or DEFAULT_MULTIPART_CHUNKSIZE
        if not S3_MIN_PART_SIZE <= self.part_size <= S3_MAX_PART_SIZE:
            raise ConfigurationError(
                f"S3 {name!r}: multipart_chunksize must be between {S3_MIN_PART_SIZE} "
                f"(5 MiB) and {S3_MAX_PART_SIZE} (5 GiB) bytes, S3's limits; "
                f"got {self.part_size}"
            )
        # An object of one part goes up in one PutObject whatever the
        # threshold: as a one-part multipart upload its ETag would end in
        # "-1", which no catalog predicts.
        self._single_put_limit = max(self.multipart_threshold, self.part_size)
        self.max_pool_connections = max_pool_connections or DEFAULT_MAX_POOL_CONNECTIONS
        #: Requests under way at once, across every thread using this connector:
        #: more than the pool's connections would open (and drop) extra ones.
        self._requests = threading.BoundedSemaphore(self.max_pool_connections)
        #: Small objects are worth writing side by side, as many as requests.
        self.concurrent_writes = self.max_pool_connections
        self.upload_checksums = upload_checksums
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._session: Any = None
        #: Whether the bucket was seen to exist (``_confirm_bucket``).
        self._bucket_seen = False
        #: Small bodies go up as direct PUTs once a botocore PutObject showed how.
        self._direct = DirectPut(
            self._frozen_credentials,
            timeout=read_timeout,
            pool_size=self.max_pool_connections,
            ca_bundle=_ca_bundle,
        )
        #: The last PutObject request botocore sent on this thread (URL, Authorization).
        self._sent = threading.local()

    # -- the client, made on first use ------------------------------------

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
            # ``from None``: a JSON error's message quotes the file's text.
            raise ConfigurationError(
                f"S3 {self.name!r}: credentials file {path} is not a JSON object with "
                "AccessKeyId and SecretAccessKey"
            ) from None

    def _make_client(self) -> Any:
        import botocore.session
        from botocore.config import Config

        config = Config(
            region_name=self.region_name,
            max_pool_connections=self.max_pool_connections,
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"total_max_attempts": DEFAULT_MAX_ATTEMPTS, "mode": "standard"},
            # botocore still presigns with SigV2 in us-east-1, which S3 refuses
            # for buckets made since 2020; SigV4 everywhere.
            signature_version="s3v4",
            # We send our own CRC32C (or md5) with every upload; botocore's default
            # ("when_supported") would compute a CRC32 of every body besides.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # botocore's own session, not boto3's: boto3 adds nothing used here
        # but the managed copy (imported where it is used) and 100 ms of imports.
        session = botocore.session.get_session()
        static = self._static_credentials()
        if static:
            session.set_credentials(static["aws_access_key_id"], static["aws_secret_access_key"])
        if self.role_arn is not None:
            session = self._assumed(session)
        client = session.create_client(
            "s3", region_name=self.region_name, endpoint_url=self.endpoint_url, config=config
        )
        client.meta.events.register("before-call.s3", _no_expect_for_small_bodies)
        client.meta.events.register("before-send.s3.PutObject", self._note_put)
        client.meta.events.register("after-call.s3.PutObject", self._note_answer)
        self._session = session
        return client

    def _note_put(self, request: Any, **_: Any) -> None:
        """Keep the PutObject request botocore is sending (the last one after redirects)."""
        authorization = request.headers.get("Authorization", b"")
        if isinstance(authorization, bytes):
            authorization = authorization.decode("ascii", "replace")
        self._sent.request = (str(request.url), authorization)

    def _note_answer(self, http_response: Any, **_: Any) -> None:
        """Forget the request unless its answer came over a connection.

        A stand-in for the network (moto's ``mock_aws``, a botocore stub)
        answers requests that never left the process: nothing to learn from.
        """
        from urllib3.response import BaseHTTPResponse

        if not isinstance(getattr(http_response, "raw", None), BaseHTTPResponse):
            self._sent.request = None

    def _frozen_credentials(self) -> Credentials | None:
        """The current keys for a direct PUT; None sends the upload through botocore."""
        try:
            found = self._session.get_credentials()
            frozen = found.get_frozen_credentials() if found is not None else None
        except Exception:
            # botocore meets the same failure and reports it as a typed error.
            return None
        if frozen is None or not frozen.access_key or not frozen.secret_key:
            return None
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    def _assumed(self, base: Any) -> Any:
        """A session whose credentials come from assuming ``role_arn``.

        botocore refreshes them before they expire; the first AssumeRole is
        made with the first request, not here. STS is asked at
        ``endpoint_url`` when one is set (S3-compatible stores such as
        MinIO serve STS there), else at AWS.
        """
        import botocore.session
        from botocore.config import Config
        from botocore.credentials import DeferredRefreshableCredentials

        sts = base.create_client(
            "sts",
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            config=Config(
                connect_timeout=self.connect_timeout,
                read_timeout=self.read_timeout,
                retries={"total_max_attempts": DEFAULT_MAX_ATTEMPTS, "mode": "standard"},
            ),
        )

        def refresh() -> dict[str, str]:
            try:
                answer = sts.assume_role(
                    RoleArn=self.role_arn, RoleSessionName=DEFAULT_ROLE_SESSION_NAME
                )
            except Exception as exc:
                raise self._translate(exc, f"assuming role {self.role_arn}") from exc
            found = answer["Credentials"]
            return {
                "access_key": found["AccessKeyId"],
                "secret_key": found["SecretAccessKey"],
                "token": found["SessionToken"],
                "expiry_time": found["Expiration"].isoformat(),
            }

        core = botocore.session.get_session()
        # botocore has no public way to give a session a credentials object;
        # this is the attribute its own credential resolver fills.
        core._credentials = DeferredRefreshableCredentials(
            refresh_using=refresh, method="sts-assume-role"
        )
        return core

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
            # Never the error's message: S3 may quote the key id in it.
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING_BUCKET:
                return ConfigurationError(f"{where}: the bucket does not exist")
            if code in _NOT_FOUND:
                return ObjectNotFound(f"{where}: {what}: no such object")
            if code in _DENIED or status == 403:
                return AccessDenied(
                    f"S3 {self.name!r}: access denied for bucket {self.bucket!r} {what} "
                    f"({code or status}; check the credentials)"
                )
            if code in _THROTTLED or status in (429, 503):
                return Throttled(f"{where}: throttled {what} ({code or status})")
            if code == "NotImplemented" or status == 501:
                # A store without this request (an S3-compatible one lacking
                # UploadPartCopy, say): no retry will make it.
                return Unsupported(f"{where}: {what}: not implemented by this store")
            if code in _TRANSIENT or (isinstance(status, int) and status >= 500):
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
            with self._requests:
                return getattr(self.client, operation)(Bucket=self.bucket, **arguments)
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    # -- the core ---------------------------------------------------------

    def stat(self, path: str) -> ObjectInfo | None:
        check_path(path)
        try:
            head = self._call(f"reading {path!r}", "head_object", Key=path, ChecksumMode="ENABLED")
        except ObjectNotFound:
            self._confirm_bucket(path)
            return None
        return ObjectInfo(path, int(head["ContentLength"]), _hashes(head))

    def _confirm_bucket(self, path: str) -> None:
        """Raise ConfigurationError if the bucket is missing; once per connector.

        A HEAD has no body: for an object of a bucket that does not exist S3
        answers a bare 404, as for a missing object. A listing names
        ``NoSuchBucket``. (Reaching here takes ListBucket permission: without
        it S3 answers 403 for a missing object.)
        """
        if self._bucket_seen:
            return
        self._call(f"listing {path!r}", "list_objects_v2", Prefix=path, MaxKeys=1)
        self._bucket_seen = True

    def open_read(self, path: str) -> BinaryIO:
        check_path(path)
        answer = self._call(f"reading {path!r}", "get_object", Key=path)
        return _Body(answer["Body"], self, path)  # type: ignore[return-value]

    def write(
        self, path: str, stream: BinaryIO, *, size: int | None = None, resume: bool = True
    ) -> ObjectInfo:
        """Store ``stream`` at ``path``: one PutObject, or a multipart upload.

        With ``resume`` (the default), an unfinished multipart upload of the
        same key is taken up: its parts whose size and ETag match the md5 of
        the same bytes read again (and CRC32C, where ListParts states one)
        are not sent again; the stream is still read whole. That is not
        possible, and a new upload is begun, when the earlier one was not
        made as this connector makes them (with a composite CRC32C, or with
        none when ``upload_checksums`` is off), when it
        failed for good (it was aborted), when the bucket's lifecycle rule
        has removed it, or for parts whose bytes or size differ (another part
        size, or changed data). S3 does not state an unfinished upload's
        metadata, so the upload itself cannot say what it was meant to hold;
        the bytes of each part decide. Without ``resume``, every failure
        aborts the upload.
        """
        check_path(path)
        if size is not None and size > S3_MAX_OBJECT_SIZE:
            raise Unsupported(
                f"S3 {self.name!r}: {path!r} has {size} bytes, more than S3 stores in one "
                f"object ({S3_MAX_OBJECT_SIZE})"
            )
        head = read_full(stream, self._single_put_limit + 1)
        if len(head) <= self._single_put_limit:
            return ObjectInfo(path, len(head), self._put(path, head))
        part_size = self.part_size_for(size)
        return self._multipart(path, Prefixed(head, stream), resume=resume, part_size=part_size)

    def part_size_for(self, size: int | None) -> int:
        """The part size an upload of ``size`` bytes uses: any object S3 takes fits.

        The configured ``multipart_chunksize``, doubled until ``size`` fits in
        ``S3_MAX_PARTS`` parts (as aws-cli's s3transfer chooses, so the
        multipart ETag is the one other tools predict); 8 MiB parts hold up
        to 78 GiB, 16 MiB up to 156 GiB, and so on. An unknown size gets the
        configured one (more than ``S3_MAX_PARTS`` of them then fail the
        upload). The transfer engine hashes with the same choice.
        """
        part = self.part_size
        if size is None:
            return part
        while part * S3_MAX_PARTS < size and part * 2 <= S3_MAX_PART_SIZE:
            part *= 2
        return part

    def _put(self, path: str, body: bytes) -> dict[str, str]:
        """One PutObject (direct when small and possible); the hashes S3 states."""
        # The md5 as well: the ETag S3 returns is then checked on receipt.
        checks = {"ContentMD5": _md5_base64(body), **self._checksum_of(body)}
        small = len(body) <= DEFAULT_DIRECT_PUT_LIMIT
        if small and self._direct.ready:
            with self._requests:
                answer = self._direct.put(path, body, _as_headers(checks))
            if answer is not None:
                return _hashes(
                    {
                        field: answer[header]
                        for field, header in _ANSWER_HEADERS.items()
                        if header in answer
                    }
                )
        self._sent.request = None
        answer = self._call(f"writing {path!r}", "put_object", Key=path, Body=body, **checks)
        sent = getattr(self._sent, "request", None)
        if small and sent is not None and not self._direct.ready:
            self._direct.learn(sent[0], path, sent[1])
        return _hashes(answer)

    def _multipart(
        self, path: str, stream: BinaryIO, *, resume: bool, part_size: int
    ) -> ObjectInfo:
        what = f"writing {path!r}"
        # Parts held in memory at once: large parts, fewer of them.
        in_flight = max(1, min(DEFAULT_PARTS_IN_FLIGHT, DEFAULT_BYTES_IN_FLIGHT // part_size))
        upload_id, stored = self._resumable(path) if resume else (None, {})
        if upload_id is None:
            upload_id = self._call(
                what, "create_multipart_upload", Key=path, **self._upload_checksum_kind
            )["UploadId"]
        parts: list[dict[str, Any]] = []
        total = 0
        try:
            with ThreadPoolExecutor(in_flight) as pool:
                pending: set[Future[dict[str, Any]]] = set()
                number = 0
                while True:
                    data = read_full(stream, part_size)
                    if not data and number:
                        break
                    number += 1
                    if number > S3_MAX_PARTS:
                        raise ConfigurationError(
                            f"S3 {self.name!r}: {path!r} needs more than {S3_MAX_PARTS} parts "
                            f"of {part_size} bytes (its size was not known in advance); "
                            "raise multipart_chunksize"
                        )
                    total += len(data)
                    reused = self._reused(stored.get(number), number, data)
                    if reused is not None:
                        parts.append(reused)
                    else:
                        # Collect finished parts (a failed one stops us now);
                        # when all slots are busy, wait for one.
                        full = len(pending) >= in_flight
                        finished, pending = wait(
                            pending, timeout=None if full else 0, return_when=FIRST_COMPLETED
                        )
                        parts.extend(future.result() for future in finished)
                        pending.add(pool.submit(self._part, path, upload_id, number, data))
                    if len(data) < part_size:
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
            # Kept for the retry to resume: a transient failure, or the
            # process going away (interrupt, shutdown, time limit). Anything
            # else fails for good: take the parts away.
            keep = resume and (
                not isinstance(exc, Exception)
                or (isinstance(exc, ConnectorError) and exc.transient)
            )
            if not keep:
                # The first error is the one to report.
                with contextlib.suppress(Exception):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=path, UploadId=upload_id
                    )
            raise
        return ObjectInfo(path, total, _hashes(answer))

    def _part(self, path: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        """Upload one part (on a pool thread, where its checksum is computed too)."""
        checksum = self._checksum_of(data)
        answer = self._call(
            f"writing part {number} of {path!r}",
            "upload_part",
            Key=path,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            **checksum,
        )
        return _completed(number, answer["ETag"], checksum.get("ChecksumCRC32C"))

    @property
    def _upload_checksum_kind(self) -> dict[str, str]:
        """How a multipart upload is declared: composite CRC32C, or no checksum."""
        if not self.upload_checksums:
            return {}
        return {"ChecksumAlgorithm": "CRC32C", "ChecksumType": "COMPOSITE"}

    def _checksum_of(self, data: bytes) -> dict[str, str]:
        """The checksum headers of one request's body: its CRC32C, else its md5."""
        if self.upload_checksums:
            return {
                "ChecksumAlgorithm": "CRC32C",
                "ChecksumCRC32C": _crc32c_base64(crc32c(data)),
            }
        return {"ContentMD5": _md5_base64(data)}

    def _reused(
        self, stored: _StoredPart | None, number: int, data: bytes
    ) -> dict[str, Any] | None:
        """Part ``number`` as CompleteMultipartUpload lists it, if ``stored`` is ``data``.

        Size first, then the CRC32C where ListParts states it, then the md5 (the
        part's ETag): a part of other bytes, or of another part size, is None.
        """
        if stored is None or stored.size != len(data):
            return None
        crc = _crc32c_base64(crc32c(data)) if self.upload_checksums else None
        if stored.crc32c is not None and stored.crc32c != crc:
            return None
        if stored.etag != md5_hash(data).hexdigest():
            return None
        return _completed(number, stored.etag, crc)

    def _resumable(self, path: str) -> tuple[str | None, dict[int, _StoredPart]]:
        """The newest unfinished upload of ``path`` made as we make them, and its parts."""
        what = f"looking for an unfinished upload of {path!r}"
        answer = self._call(what, "list_multipart_uploads", Prefix=path)
        ours = [
            upload
            for upload in answer.get("Uploads", [])
            if upload["Key"] == path
            and upload.get("ChecksumAlgorithm")
            == self._upload_checksum_kind.get("ChecksumAlgorithm")
            and upload.get("ChecksumType", "COMPOSITE") != "FULL_OBJECT"
        ]
        if not ours:
            return None, {}
        newest = max(ours, key=lambda upload: upload["Initiated"])
        parts: dict[int, _StoredPart] = {}
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
                parts[int(part["PartNumber"])] = _StoredPart(
                    size=int(part["Size"]),
                    etag=part["ETag"].strip('"').lower(),
                    crc32c=part.get("ChecksumCRC32C"),
                )
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        return newest["UploadId"], parts

    def delete(self, path: str, *, within: str = "") -> None:
        check_path(path)
        self._call(f"deleting {path!r}", "delete_object", Key=path)

    def delete_many(self, paths: Sequence[str], *, within: str = "") -> None:
        """Remove ``paths`` with DeleteObjects, up to 1,000 keys a request (no folders to prune).

        Missing objects are fine; a key the store refuses raises the error of
        the first such key (access denied, or a transient one to retry). A
        key with a character XML 1.0 has no form for (a control character)
        cannot be named in DeleteObjects' XML body, and S3 refuses the whole
        request for it: such keys go one DeleteObject each, the key in the URL.
        """
        for path in paths:
            check_path(path)
        bulk = [path for path in paths if _XML_CHARS.fullmatch(path)]
        for path in paths:
            if not _XML_CHARS.fullmatch(path):
                self.delete(path, within=within)
        for start in range(0, len(bulk), S3_DELETE_BATCH):
            chunk = bulk[start : start + S3_DELETE_BATCH]
            answer = self._call(
                f"deleting {len(chunk)} object(s) under {chunk[0]!r}",
                "delete_objects",
                Delete={"Objects": [{"Key": key} for key in chunk], "Quiet": True},
            )
            errors = [e for e in answer.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                what = f"{self.name}: deleting {first.get('Key')!r}: {first.get('Code')}"
                if first.get("Code") == "AccessDenied":
                    raise AccessDenied(what)
                raise BackendUnavailable(f"{what} ({len(errors)} of {len(chunk)} refused)")

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
                modified = entry.get("LastModified")
                yield ObjectInfo(
                    entry["Key"],
                    int(entry["Size"]),
                    {ETAG: etag} if etag else {},
                    modified.astimezone(UTC).replace(tzinfo=None) if modified else None,
                )
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    # -- capabilities -----------------------------------------------------

    def presigned_url(self, path: str, *, expires: int) -> str:
        """A GET URL valid for ``expires`` seconds (at most 7 days, SigV4's limit).

        Signing is local: nothing is contacted. With ``role_arn`` the URL
        also dies with the role's session credentials, whichever comes first.
        """
        check_path(path)
        if not 1 <= expires <= S3_MAX_PRESIGNED_SECONDS:
            raise ValueError(
                f"expires must be between 1 and {S3_MAX_PRESIGNED_SECONDS} seconds, not {expires}"
            )
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object",
                    Params={"Bucket": self.bucket, "Key": path},
                    ExpiresIn=expires,
                )
            )
        except ConnectorError:
            raise
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
        """Copy within S3 (CopyObject, or UploadPartCopy in parts of ``part_size``)."""
        if not isinstance(source, S3Connector):
            raise TypeError(f"S3 {self.name!r} copies server-side only from S3 connectors")
        check_path(source_path)
        check_path(path)
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        # s3transfer copies in parts from the threshold on, ``write`` puts
        # up to the limit whole: an object of exactly the limit is one
        # CopyObject too, its ETag the md5, not a one-part "-1" no catalog predicts.
        config = TransferConfig(
            multipart_threshold=self._single_put_limit + 1, multipart_chunksize=self.part_size
        )
        try:
            with create_transfer_manager(self.client, config) as manager:
                manager.copy(
                    {"Bucket": source.bucket, "Key": source_path}, self.bucket, path
                ).result()
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._translate(exc, f"copying {source_path!r} to {path!r}") from exc
        info = self.stat(path)
        if info is None:
            raise BackendUnavailable(f"S3 {self.name!r}: {path!r} vanished after the copy")
        return info


def _hashes(answer: dict[str, Any]) -> dict[str, str]:
    """The hashes S3 states in a response: its ETag, and a full-object CRC32C if any.

    S3 gives the CRC32C as base64 of its 4 big-endian bytes; a composite one
    (of the parts, ``...-N``) is not the object's CRC32C and is left out.
    The ETag of an object encrypted with a KMS key or the customer's key is
    no md5 of the bytes (S3 says so): it is left out too, as no hash.
    """
    hashes = {}
    etag = str(answer.get("ETag", "")).strip('"').lower()
    keyed = answer.get("SSECustomerAlgorithm") or str(
        answer.get("ServerSideEncryption", "")
    ).startswith("aws:kms")
    if etag and not keyed:
        hashes[ETAG] = etag
    checksum = answer.get("ChecksumCRC32C")
    if (
        checksum
        and "-" not in checksum
        and answer.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    ):
        with contextlib.suppress(ValueError):
            raw = base64.b64decode(checksum, validate=True)
            if len(raw) == 4:
                hashes[CRC32C] = raw.hex()
    return hashes


def _crc32c_base64(value: int) -> str:
    """A CRC32C as S3 wants it: base64 of its 4 big-endian bytes."""
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def _no_expect_for_small_bodies(params: dict[str, Any], **_: Any) -> None:
    """Send small bodies straight away, without ``Expect: 100-continue``.

    botocore asks for every upload whether the server will take the body,
    which costs a round trip before each one; worth it for a large body
    (refused without being sent), not for a small one.
    """
    from botocore.utils import determine_content_length

    body = params.get("body")
    size = determine_content_length(body) if body is not None else None
    if size is not None and size <= DEFAULT_EXPECT_THRESHOLD:
        params.get("headers", {}).pop("Expect", None)


#: botocore's names of the checksum parameters, and the headers they become.
_CHECK_HEADERS = {
    "ContentMD5": "Content-MD5",
    "ChecksumAlgorithm": "x-amz-sdk-checksum-algorithm",
    "ChecksumCRC32C": "x-amz-checksum-crc32c",
}


#: The fields of a PutObject answer ``_hashes`` reads, and the headers they come from.
_ANSWER_HEADERS = {
    "ETag": "etag",
    "ChecksumCRC32C": "x-amz-checksum-crc32c",
    "ChecksumType": "x-amz-checksum-type",
    "ServerSideEncryption": "x-amz-server-side-encryption",
    "SSECustomerAlgorithm": "x-amz-server-side-encryption-customer-algorithm",
}


def _as_headers(checks: dict[str, str]) -> dict[str, str]:
    """The checksum parameters of a PutObject as the HTTP headers botocore sends."""
    return {_CHECK_HEADERS[name]: value for name, value in checks.items()}


def _ca_bundle() -> str | None:
    """The certificates botocore verifies HTTPS with: ``AWS_CA_BUNDLE``, else its default."""
    import os

    from botocore.httpsession import get_cert_path

    return os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True) or None


def _md5_base64(data: bytes) -> str:
    """An md5 as the Content-MD5 header wants it."""
    return base64.b64encode(md5_hash(data).digest()).decode()


def _completed(number: int, etag: str, crc: str | None) -> dict[str, Any]:
    """One part as CompleteMultipartUpload lists it (``crc``: its base64 CRC32C, if sent)."""
    bare = etag.strip('"')
    part = {"PartNumber": number, "ETag": f'"{bare}"'}
    if crc is not None:
        part["ChecksumCRC32C"] = crc
    return part


class _Body(io.RawIOBase):
    """S3's streaming body as a binary stream, with errors translated."""

    def __init__(self, body: Any, connector: S3Connector, path: str) -> None:
        self._body = body
        self._connector = connector
        self._path = path

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        # Straight from the body: RawIOBase's own read(-1) would go in 8 KiB steps.
        try:
            return bytes(self._body.read(None if size is None or size < 0 else size))
        except Exception as exc:
            raise self._connector._translate(exc, f"reading {self._path!r}") from exc

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        count = len(data)
        memoryview(buffer).cast("B")[:count] = data
        return count

    def close(self) -> None:
        try:
            self._body.close()
        finally:
            super().close()
