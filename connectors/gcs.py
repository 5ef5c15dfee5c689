"""Google Cloud Storage as a connector (google-cloud-storage).

Settings as in the original Resolwe: ``bucket``, ``credentials`` (a
service-account JSON file; omitted: the application default credentials),
and ``endpoint_url`` for emulators and private endpoints (with no
credentials, an emulator is spoken to anonymously).

Small objects go up in one request, larger ones as a resumable upload in
chunks of bounded size. GCS computes the crc32c and (for objects not
composed of parts) the md5 of what it stored and says so in its answer;
``write`` reports both, and the transfer engine proves the copy by them.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from connectors.base import CRC32C, MD5, Connector, LazyClient, ObjectInfo, check_path
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
from connectors.streams import Prefixed, read_full

MIB = 1024 * 1024
#: Objects up to this size go up in one request; larger ones resumably.
DEFAULT_SINGLE_UPLOAD_MAX = 8 * MIB
#: Chunk of a resumable upload (a multiple of 256 KiB), and of a download.
DEFAULT_CHUNK_SIZE = 8 * MIB
#: Seconds for a request to connect and answer.
DEFAULT_TIMEOUT = 60
#: Attempts at one chunk of a resumable upload, and the first pause between them.
DEFAULT_CHUNK_ATTEMPTS = 4
DEFAULT_CHUNK_BACKOFF = 0.5
#: Seconds the library keeps retrying one call; the workers retry whole jobs too.
DEFAULT_RETRY_SECONDS = 20
#: HTTP connections kept to the endpoint, and small uploads under way at
#: once, across threads (the HTTP library's default is 10: at 100 ms a round
#: trip that caps a process at 100 small objects a second).
DEFAULT_POOL_CONNECTIONS = 64
#: Project named to an emulator, which needs one but checks nothing.
EMULATOR_PROJECT = "resolwe-storage"


class GCSConnector(LazyClient, Connector):
    """One bucket; object names are the relative paths, with no prefix."""

    native_hashes = frozenset({CRC32C, MD5})
    write_hashes = frozenset({CRC32C, MD5})

    def __init__(
        self,
        name: str,
        *,
        bucket: str,
        credentials: str | None = None,
        endpoint_url: str | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        retry_seconds: float = DEFAULT_RETRY_SECONDS,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.name = name
        self.bucket_name = bucket
        self.credentials = credentials
        self.endpoint_url = endpoint_url
        self.chunk_size = chunk_size
        self.retry_seconds = retry_seconds
        self.timeout = timeout
        #: Small objects are worth writing side by side, as many as connections.
        self.concurrent_writes = DEFAULT_POOL_CONNECTIONS
        self._uploads = threading.BoundedSemaphore(DEFAULT_POOL_CONNECTIONS)
        #: Whether the bucket was seen to exist (``_confirm_bucket``).
        self._bucket_seen = False

    # -- the client, made on first use ------------------------------------

    @property
    def retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_seconds)

    @property
    def bucket(self) -> Any:
        return self.client.bucket(self.bucket_name)

    def _make_client(self) -> Any:
        client = self._new_client()
        # A pool as large as the uploads under way, so that none opens (and
        # drops) a connection of its own.
        from requests.adapters import HTTPAdapter

        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=DEFAULT_POOL_CONNECTIONS)
        for scheme in ("https://", "http://"):
            client._http.mount(scheme, adapter)
        return client

    def _new_client(self) -> Any:
        from google.cloud import storage

        options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
        if self.credentials is not None:
            credentials, project = self._service_account()
            return storage.Client(project=project, credentials=credentials, client_options=options)
        if self.endpoint_url is not None:
            from google.auth.credentials import AnonymousCredentials

            return storage.Client(
                project=EMULATOR_PROJECT,
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
                client_options=options,
            )
        try:
            return storage.Client(client_options=options)
        except Exception as exc:
            raise self._translate(exc, "finding the default credentials") from exc

    def _service_account(self) -> tuple[Any, str | None]:
        from google.oauth2 import service_account

        path = Path(self.credentials)  # type: ignore[arg-type]
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
            credentials = service_account.Credentials.from_service_account_info(info)
        except FileNotFoundError:
            raise ConfigurationError(
                f"GCS {self.name!r}: credentials file {path} not found"
            ) from None
        except Exception:
            raise ConfigurationError(
                f"GCS {self.name!r}: credentials file {path} is not a service-account key"
            ) from None
        return credentials, info.get("project_id")

    # -- errors -----------------------------------------------------------

    def _translate(self, exc: BaseException, what: str) -> ConnectorError:
        """A typed, secret-free error for ``exc`` raised while doing ``what``."""
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth

        if isinstance(exc, ConnectorError):
            return exc
        where = f"GCS {self.name!r} (bucket {self.bucket_name!r})"
        if isinstance(exc, api.NotFound):
            if what.startswith(("writing", "listing")):
                # An upload needs no object, only the bucket; a listing of a
                # prefix with nothing under it is empty, not missing.
                return ConfigurationError(f"{where}: the bucket does not exist")
            return ObjectNotFound(f"{where}: {what}: no such object")
        if isinstance(exc, api.Forbidden | api.Unauthorized | auth.RefreshError):
            return AccessDenied(f"{where}: access denied {what} (check the credentials)")
        if isinstance(exc, api.RetryError):
            return BackendUnavailable(f"{where}: gave up retrying {what} ({exc.cause!r:.80})")
        if isinstance(exc, api.TooManyRequests):
            return Throttled(f"{where}: throttled {what}")
        if isinstance(exc, api.ServerError | auth.TransportError):
            return BackendUnavailable(f"{where}: server error {what} ({type(exc).__name__})")
        if isinstance(exc, auth.DefaultCredentialsError):
            return ConfigurationError(f"{where}: no credentials configured or found")
        import requests

        if isinstance(exc, requests.ConnectionError | requests.Timeout | ConnectionError):
            return BackendUnavailable(f"{where}: cannot reach the endpoint {what}")
        if isinstance(exc, api.GoogleAPICallError):
            return PermanentError(f"{where}: {what} failed ({exc.code})")
        return PermanentError(f"{where}: {what} failed ({type(exc).__name__})")

    def _run(self, what: str, action: Any) -> Any:
        try:
            return action()
        except ConnectorError:
            raise
        except Exception as exc:
            raise self._translate(exc, what) from exc

    # -- the core ---------------------------------------------------------

    def stat(self, path: str) -> ObjectInfo | None:
        check_path(path)
        blob = self._run(
            f"reading {path!r}",
            lambda: self.bucket.get_blob(path, retry=self.retry, timeout=self.timeout),
        )
        if blob is None:
            self._confirm_bucket(path)
            return None
        return _info(path, blob)

    def _confirm_bucket(self, path: str) -> None:
        """Raise ConfigurationError if the bucket is missing; once per connector.

        GCS answers 404 for an object of a bucket that does not exist, as for
        a missing object (``get_blob`` gives None for both); a listing's 404
        can only be the bucket's. A listing, not a bucket GET: it needs only
        the object permissions the connector needs anyway.
        """
        if self._bucket_seen:
            return
        self._run(
            f"listing {path!r}",
            lambda: next(
                iter(
                    self.client.list_blobs(
                        self.bucket_name,
                        prefix=path,
                        max_results=1,
                        retry=self.retry,
                        timeout=self.timeout,
                    )
                ),
                None,
            ),
        )
        self._bucket_seen = True

    def open_read(self, path: str) -> BinaryIO:
        check_path(path)
        blob = self._run(
            f"reading {path!r}",
            lambda: self.bucket.get_blob(path, retry=self.retry, timeout=self.timeout),
        )
        if blob is None:
            self._confirm_bucket(path)
            raise ObjectNotFound(f"GCS {self.name!r}: {path!r} does not exist")
        # The bytes come from the configured endpoint, as every other request,
        # not from the object's ``mediaLink`` (the host the server names: on
        # a private endpoint or an emulator, maybe one out of reach); the
        # generation read above is the one read.
        blob._properties.pop("mediaLink", None)
        reader = blob.open("rb", chunk_size=self.chunk_size, timeout=self.timeout, retry=self.retry)
        return _Reader(reader, self, path)  # type: ignore[return-value]

    def write(self, path: str, stream: BinaryIO, *, size: int | None = None) -> ObjectInfo:
        check_path(path)
        head = read_full(stream, DEFAULT_SINGLE_UPLOAD_MAX + 1)
        what = f"writing {path!r}"
        if len(head) <= DEFAULT_SINGLE_UPLOAD_MAX:
            blob = self.bucket.blob(path)
            with self._uploads:
                self._run(
                    what,
                    lambda: blob.upload_from_file(
                        io.BytesIO(head),
                        size=len(head),
                        checksum=None,
                        timeout=self.timeout,
                        retry=self.retry,
                    ),
                )
            return _info(path, blob)
        return self._resumable(path, Prefixed(head, stream))

    def _resumable(self, path: str, stream: BinaryIO) -> ObjectInfo:
        """A resumable upload, spoken directly, a chunk at a time.

        Nothing is stored under ``path`` unless the last chunk arrives, and
        that chunk is only sent once the stream has ended, so a failure, of
        the source too, leaves the old object (or none). The session is
        cancelled on the way out. (The library's blob writer would finalize
        a half-written object when it is garbage collected.)
        """

        what = f"writing {path!r}"
        blob = self.bucket.blob(path)
        session = self._run(
            what,
            lambda: blob.create_resumable_upload_session(timeout=self.timeout, retry=self.retry),
        )
        transport = self.client._http
        offset = 0
        finished = False
        try:
            current = read_full(stream, self.chunk_size)
            while True:
                following = read_full(stream, self.chunk_size)
                last = not following
                end = offset + len(current)
                total = str(end) if last else "*"
                answer = self._send_chunk(transport, session, current, offset, total, what)
                if last:
                    finished = True
                    resource = answer.json()
                    break
                offset, current = end, following
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    transport.delete(session, timeout=self.timeout)
        blob._set_properties(resource)
        return _info(path, blob)

    def _send_chunk(
        self, transport: Any, session: str, data: bytes, start: int, total: str, what: str
    ) -> Any:
        """PUT one chunk of a resumable upload until the session holds all of it.

        The server may keep less than was sent (its 308 answer's ``Range``
        says how much): the rest is sent again. A transient failure (5xx,
        429, a timeout, a dropped connection) is retried within the session,
        a few times with backoff, from what the server last said it held;
        only the current chunk is in memory, so the transfer engine's
        validation remains the judge of the whole. A refusal (4xx) ends the
        upload with its own error, permanent but for a session gone (404,
        410: the retried job opens a new one); a chunk is sent only when
        the one before it is held whole.
        """
        from google.api_core.exceptions import from_http_response

        end = start + len(data)
        held = start
        failures = 0
        while True:
            try:
                answer = self._run(
                    what,
                    lambda rest=held - start, at=held: transport.put(
                        session,
                        data=data[rest:],
                        headers={"Content-Range": f"bytes {at}-{end - 1}/{total}"},
                        timeout=self.timeout,
                    ),
                )
            except ConnectorError as exc:
                if not exc.transient:
                    raise
                failure: ConnectorError = exc
            else:
                code = answer.status_code
                if code in (200, 201) and total != "*":
                    return answer  # the last chunk: the object is stored
                if code in (404, 410):
                    # The session expired or was cancelled: the retried job opens a new one.
                    raise BackendUnavailable(
                        f"GCS {self.name!r}: {what}: the upload session is gone ({code})"
                    )
                if code != 308 and code < 500 and code != 429:
                    # Refused (access, a bad request), or finished before its
                    # last chunk: never taken as sent.
                    if code < 400:
                        raise BackendUnavailable(
                            f"GCS {self.name!r}: {what}: unexpected answer {code} to a chunk"
                        )
                    raise self._translate(from_http_response(answer), what)
                if code != 308:
                    failure = self._translate(from_http_response(answer), what)
                else:
                    stated = answer.headers.get("Range")  # "bytes=0-N"; none: nothing held
                    now = int(stated.rsplit("-", 1)[1]) + 1 if stated else 0
                    if now == end and total == "*":
                        return answer
                    if not held <= now < end:
                        raise BackendUnavailable(
                            f"GCS {self.name!r}: {what}: the upload session holds {now} bytes, "
                            f"expected {held} to {end}"
                        )
                    if now > held:
                        held = now  # progress: send the rest
                        continue
                    failure = BackendUnavailable(
                        f"GCS {self.name!r}: {what}: the server keeps none of the chunk"
                    )
            failures += 1
            if failures == DEFAULT_CHUNK_ATTEMPTS:
                raise failure
            time.sleep(DEFAULT_CHUNK_BACKOFF * 2 ** (failures - 1))

    def delete(self, path: str, *, within: str = "") -> None:
        check_path(path)
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.blob(path).delete(timeout=self.timeout, retry=self.retry)
        except NotFound:
            pass  # gone already (or never there): what delete promises
        except Exception as exc:
            raise self._translate(exc, f"deleting {path!r}") from exc

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if prefix:
            check_path(prefix)
        blobs = self._run(
            f"listing {prefix!r}",
            lambda: iter(
                self.client.list_blobs(
                    self.bucket_name, prefix=prefix or None, retry=self.retry, timeout=self.timeout
                )
            ),
        )
        while True:
            blob = self._run(f"listing {prefix!r}", lambda: next(blobs, None))
            if blob is None:
                return
            yield _info(blob.name, blob)

    # -- capabilities -----------------------------------------------------

    def presigned_url(self, path: str, *, expires: int) -> str:
        check_path(path)
        blob = self.bucket.blob(path)
        try:
            return str(
                blob.generate_signed_url(
                    version="v4", expiration=timedelta(seconds=expires), method="GET"
                )
            )
        except (AttributeError, TypeError, ValueError):
            raise Unsupported(
                f"GCS {self.name!r}: these credentials cannot sign URLs (a service-account "
                "key is needed)"
            ) from None

    def can_copy_from(self, source: Connector) -> bool:
        """A rewrite works between buckets of one endpoint and identity."""
        return (
            isinstance(source, GCSConnector)
            and source.endpoint_url == self.endpoint_url
            and source.credentials == self.credentials
        )

    def copy_from(self, source: Connector, source_path: str, path: str) -> ObjectInfo:
        assert isinstance(source, GCSConnector)
        check_path(source_path)
        check_path(path)
        original = source.bucket.blob(source_path)
        target = self.bucket.blob(path)

        def rewrite() -> None:
            token, _, _ = target.rewrite(original, timeout=self.timeout)
            while token is not None:
                token, _, _ = target.rewrite(original, token=token, timeout=self.timeout)

        self._run(f"copying {source_path!r} to {path!r}", rewrite)
        info = self.stat(path)
        if info is None:
            raise BackendUnavailable(f"GCS {self.name!r}: {path!r} vanished after the copy")
        return info


def _info(path: str, blob: Any) -> ObjectInfo:
    hashes = {}
    if blob.crc32c:
        hashes[CRC32C] = base64.b64decode(blob.crc32c).hex()
    if blob.md5_hash:
        hashes[MD5] = base64.b64decode(blob.md5_hash).hex()
    updated = blob.updated
    modified = updated.astimezone(UTC).replace(tzinfo=None) if updated is not None else None
    return ObjectInfo(path, int(blob.size or 0), hashes, modified)


class _Reader(io.RawIOBase):
    """A blob reader as a binary stream, with errors translated."""

    def __init__(self, reader: Any, connector: GCSConnector, path: str) -> None:
        self._reader = reader
        self._connector = connector
        self._path = path

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            data = self._reader.read(len(buffer))
        except Exception as exc:
            raise self._connector._translate(exc, f"reading {self._path!r}") from exc
        count = len(data)
        memoryview(buffer)[:count] = data
        return count

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            super().close()
