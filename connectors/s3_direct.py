"""Small S3 uploads as one signed HTTP request, without botocore's machinery.

botocore spends about 1.3 ms of CPU on one PutObject (events, parameter
building, response parsing), three times what the request itself costs; for
a worker copying thousands of 16 KiB files that is most of its CPU. So a
small body (up to ``DEFAULT_DIRECT_PUT_LIMIT``) goes up as a plain PUT with a
SigV4 signature computed here, over kept-alive connections.

Nothing about where or how to send is guessed: the connector's first small
upload goes through botocore, and its final request (after any redirect)
shows the URL and the signing region; ``DirectPut.learn`` keeps them. A
direct PUT that gets anything but 200, or whose connection fails, is
reported as not done (None), and the caller sends the same upload through
botocore, which retries and turns the failure into a typed error. A PUT of
the same bytes to the same key is idempotent, so that second try is safe.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote, urlsplit

#: Bodies up to this size go up as direct PUTs; larger ones through botocore.
DEFAULT_DIRECT_PUT_LIMIT = 1024 * 1024
#: Seconds a kept-alive connection may sit idle before it is not reused.
DEFAULT_IDLE_SECONDS = 20.0

_ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True)
class Credentials:
    """The keys one request is signed with (botocore's frozen credentials).

    Its ``repr`` shows the access key id only: a secret never reaches a log.
    """

    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


def signed_headers(
    method: str,
    host: str,
    path: str,
    headers: Mapping[str, str],
    *,
    payload_sha256: str,
    credentials: Credentials,
    region: str,
    now: datetime.datetime,
) -> dict[str, str]:
    """``headers`` plus what SigV4 for S3 adds: Host, dates, token, Authorization.

    ``path`` is already URI-encoded, as it goes on the request line (S3
    signs it as sent, with no second encoding); the request has no query.
    """
    stamp = now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    day = stamp[:8]
    signed = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()}
    signed["host"] = host
    signed["x-amz-date"] = stamp
    signed["x-amz-content-sha256"] = payload_sha256
    if credentials.token:
        signed["x-amz-security-token"] = credentials.token
    names = sorted(signed)
    canonical = "\n".join(
        [
            method,
            path,
            "",
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names),
            payload_sha256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join([_ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = hmac.digest(f"AWS4{credentials.secret_key}".encode(), day.encode(), "sha256")
    for part in (region, "s3", "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    signature = hmac.new(key, to_sign.encode(), "sha256").hexdigest()
    signed["authorization"] = (
        f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    return signed


class _Target(NamedTuple):
    """Where direct PUTs go, as learned from one botocore PutObject."""

    scheme: str
    netloc: str
    prefix: str
    region: str


class DirectPut:
    """Direct PUTs for one bucket; thread-safe; off until ``learn`` succeeds.

    ``credentials`` gives the current keys (refreshed by botocore when they
    come from an assumed role); ``ca_bundle`` the certificates to verify HTTPS
    with (asked when an HTTPS target is learned).
    """

    def __init__(
        self,
        credentials: Callable[[], Credentials | None],
        *,
        timeout: float,
        pool_size: int,
        ca_bundle: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._pool_size = pool_size
        self._ca_bundle = ca_bundle
        self._target: _Target | None = None
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    @property
    def ready(self) -> bool:
        return self._target is not None

    def learn(self, url: str, key: str, authorization: str) -> None:
        """Take the URL and region of a PutObject of ``key`` that botocore sent.

        Stays off when the URL is not the bucket's prefix plus the key (an
        addressing we do not understand), when it has a query, when a proxy
        would be used for it (botocore honours proxies; this path does not),
        or when the signature is not SigV4.
        """
        parts = urlsplit(url)
        quoted = quote(key, safe="/~")
        region = _scope_region(authorization)
        if (
            parts.query
            or parts.scheme not in ("http", "https")
            or not parts.path.endswith(quoted)
            or region is None
            or _proxied(parts.scheme, parts.hostname or "")
        ):
            return
        target = _Target(parts.scheme, parts.netloc, parts.path[: -len(quoted)], region)
        if target.scheme == "https" and self._tls is None:
            self._tls = ssl.create_default_context(cafile=self._ca_bundle())
        self._target = target

    def put(self, key: str, body: bytes, headers: Mapping[str, str]) -> dict[str, str] | None:
        """PUT ``body`` at ``key``; the response headers (lowercase) on 200, else None."""
        target = self._target
        credentials = self._credentials()
        if target is None or credentials is None:
            return None
        path = target.prefix + quote(key, safe="/~")
        request_headers = signed_headers(
            "PUT",
            target.netloc,
            path,
            {**headers, "content-length": str(len(body))},
            payload_sha256=hashlib.sha256(body).hexdigest(),
            credentials=credentials,
            region=target.region,
            now=datetime.datetime.now(datetime.UTC),
        )
        # A kept-alive connection the server has since closed fails at once:
        # one more try on a new connection tells that from a real failure.
        for reused in (True, False):
            connection = self._connection(target, reuse=reused)
            try:
                connection.request("PUT", path, body=body, headers=request_headers)
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                connection.close()
                if getattr(connection, "_reused", False):
                    continue
                return None
            if response.will_close:
                connection.close()
            else:
                self._release(connection)
            if response.status != 200:
                return None
            return {name.lower(): value for name, value in response.getheaders()}
        return None

    def _connection(self, target: _Target, *, reuse: bool) -> http.client.HTTPConnection:
        if reuse:
            now = time.monotonic()
            with self._lock:
                while self._idle:
                    since, connection = self._idle.pop()
                    if now - since < DEFAULT_IDLE_SECONDS:
                        connection._reused = True  # type: ignore[attr-defined]
                        return connection
                    connection.close()
        if target.scheme == "https":
            connection = http.client.HTTPSConnection(
                target.netloc, timeout=self._timeout, context=self._tls
            )
        else:
            connection = http.client.HTTPConnection(target.netloc, timeout=self._timeout)
        connection._reused = False  # type: ignore[attr-defined]
        return connection

    def _release(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._pool_size:
                self._idle.append((time.monotonic(), connection))
                return
        connection.close()

    def close(self) -> None:
        """Close the idle connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for _, connection in idle:
            connection.close()


def _scope_region(authorization: str) -> str | None:
    """The region of a SigV4 Authorization header's credential scope."""
    if not authorization.startswith(_ALGORITHM):
        return None
    for part in authorization[len(_ALGORITHM) :].split(","):
        name, _, value = part.strip().partition("=")
        if name == "Credential":
            scope = value.split("/")
            if len(scope) == 5 and scope[3] == "s3" and scope[4] == "aws4_request":
                return scope[2]
    return None


def _proxied(scheme: str, host: str) -> bool:
    """Whether the environment routes ``scheme`` requests to ``host`` via a proxy."""
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)
