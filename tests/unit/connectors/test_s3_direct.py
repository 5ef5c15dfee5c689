"""Direct PUTs of small bodies: the signature, what is learned, and the HTTP side.

The signature is checked against botocore's own SigV4 signer for S3 on the
same request. The HTTP side runs against a small HTTP server in this process
(it stands in for the far end and records what it was sent).
"""

from __future__ import annotations

import datetime
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.s3_direct import Credentials, DirectPut, _scope_region, signed_headers

KEYS = Credentials("AKIAUNITTESTKEYID000", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIAUNITTESTKEYID000/20261125/eu-central-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-date, Signature=00"
)


def botocore_authorization(
    url: str, headers: dict[str, str], body: bytes, keys: Credentials, region: str
) -> tuple[str, datetime.datetime]:
    """The Authorization botocore's S3 signer gives the request, and the time it signed at."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    request = AWSRequest(method="PUT", url=url, data=body, headers=dict(headers))
    request.context["payload_signing_enabled"] = True
    S3SigV4Auth(
        BotoCredentials(keys.access_key, keys.secret_key, keys.token), "s3", region
    ).add_auth(request)
    stamp = datetime.datetime.strptime(request.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    return request.headers["Authorization"], stamp.replace(tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("path", "keys", "region"),
    [
        ("/bucket/data/file.txt", KEYS, "us-east-1"),
        ("/bucket/a%20b/%C3%A9t%C3%A9~x", KEYS, "eu-central-1"),
        (
            "/key/with+plus",
            Credentials(KEYS.access_key, KEYS.secret_key, "session-token"),
            "eu-west-1",
        ),
    ],
    ids=["plain", "encoded", "session token"],
)
def test_the_signature_is_the_one_botocore_computes(
    path: str, keys: Credentials, region: str
) -> None:
    body = b"some bytes" * 100
    headers = {"Content-MD5": "5v21Tm2ltkKfWbxakJ/x5Q==", "x-amz-checksum-crc32c": "vCW1Ig=="}
    payload = hashlib.sha256(body).hexdigest()
    expected, at = botocore_authorization(
        f"http://127.0.0.1:9000{path}",
        {**headers, "X-Amz-Content-SHA256": payload},
        body,
        keys,
        region,
    )
    ours = signed_headers(
        "PUT",
        "127.0.0.1:9000",
        path,
        headers,
        payload_sha256=payload,
        credentials=keys,
        region=region,
        now=at,
    )
    assert ours["authorization"] == expected
    assert ours.get("x-amz-security-token") == keys.token


def test_a_changed_header_changes_the_signature() -> None:
    def sign(md5: str) -> str:
        return signed_headers(
            "PUT",
            "h",
            "/k",
            {"Content-MD5": md5},
            payload_sha256="0" * 64,
            credentials=KEYS,
            region="us-east-1",
            now=datetime.datetime(2026, 11, 25, tzinfo=datetime.UTC),
        )["authorization"]

    assert sign("a") != sign("b")


def test_the_region_is_read_from_the_credential_scope() -> None:
    assert _scope_region(AUTH) == "eu-central-1"
    assert _scope_region("AWS AKIA:signature") is None
    assert _scope_region("AWS4-HMAC-SHA256 Credential=AKIA/20261125/eu/sts/aws4_request") is None


def learned(url: str, key: str, authorization: str = AUTH) -> DirectPut:
    direct = DirectPut(lambda: KEYS, timeout=5, pool_size=2)
    direct.learn(url, key, authorization)
    return direct


@pytest.mark.parametrize(
    ("url", "key", "prefix"),
    [
        ("http://127.0.0.1:9000/bucket/a%20b/c", "a b/c", "/bucket/"),
        ("https://bucket.s3.eu-central-1.amazonaws.com/x/y", "x/y", "/"),
    ],
    ids=["path style", "virtual host"],
)
def test_the_url_of_a_sent_request_is_learned(url: str, key: str, prefix: str) -> None:
    direct = learned(url, key)
    assert direct.ready
    assert direct._target is not None and direct._target.prefix == prefix
    assert direct._target.region == "eu-central-1"


@pytest.mark.parametrize(
    ("url", "key", "authorization"),
    [
        ("http://h/bucket/other", "key", AUTH),
        ("http://h/bucket/key?versionId=1", "key", AUTH),
        ("ftp://h/bucket/key", "key", AUTH),
        ("http://h/bucket/key", "key", "AWS AKIA:sig"),
    ],
    ids=["another key", "a query", "another scheme", "not SigV4"],
)
def test_what_is_not_understood_is_not_learned(url: str, key: str, authorization: str) -> None:
    assert not learned(url, key, authorization).ready


def test_nothing_is_learned_when_a_proxy_would_be_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert not learned("http://s3.example.org/bucket/key", "key").ready


def test_not_ready_until_learned() -> None:
    direct = DirectPut(lambda: KEYS, timeout=5, pool_size=2)
    assert not direct.ready
    assert direct.put("key", b"x", {}) is None


# -- over HTTP -----------------------------------------------------------------


class Recorder(ThreadingHTTPServer):
    """Answers PUTs with ``status`` and records (path, headers, body, connection port)."""

    status = 200
    close_after = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.seen: list[tuple[str, dict[str, str], bytes, int]] = []


class RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(
            (
                self.path,
                {k.lower(): v for k, v in self.headers.items()},
                body,
                self.client_address[1],
            )
        )
        self.send_response(self.server.status)
        self.send_header("ETag", '"' + hashlib.md5(body).hexdigest() + '"')
        self.send_header("Content-Length", "0")
        if self.server.close_after:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()


@pytest.fixture
def server() -> Iterator[Recorder]:
    recorder = Recorder()
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    yield recorder
    recorder.shutdown()
    recorder.server_close()


def direct_to(server: Recorder, keys: Credentials | None = KEYS) -> DirectPut:
    host, port = server.server_address[:2]
    direct = DirectPut(lambda: keys, timeout=5, pool_size=2)
    direct.learn(f"http://{host}:{port}/bucket/first", "first", AUTH)
    assert direct.ready
    return direct


def test_a_put_sends_the_body_signed_and_reports_the_answer(server: Recorder) -> None:
    answer = direct_to(server).put("dir/a b", b"payload", {"Content-MD5": "bWQ1"})
    assert answer is not None and answer["etag"] == '"' + hashlib.md5(b"payload").hexdigest() + '"'
    path, headers, body, _ = server.seen[0]
    assert (path, body) == ("/bucket/dir/a%20b", b"payload")
    assert headers["content-md5"] == "bWQ1"
    assert headers["x-amz-content-sha256"] == hashlib.sha256(b"payload").hexdigest()
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEYS.access_key}/")
    assert "/eu-central-1/s3/aws4_request" in headers["authorization"]


def test_connections_are_kept_alive_and_reused(server: Recorder) -> None:
    direct = direct_to(server)
    for index in range(3):
        assert direct.put(f"k{index}", b"x", {}) is not None
    assert len({port for *_, port in server.seen}) == 1


def test_a_connection_the_server_closes_is_not_reused(server: Recorder) -> None:
    server.close_after = True
    direct = direct_to(server)
    for index in range(3):
        assert direct.put(f"k{index}", b"x", {}) is not None
    assert len({port for *_, port in server.seen}) == 3


def test_a_refused_put_is_not_done(server: Recorder) -> None:
    server.status = 503
    assert direct_to(server).put("k", b"x", {}) is None


def test_an_unreachable_server_is_not_done(server: Recorder) -> None:
    direct = direct_to(server)
    server.shutdown()
    server.server_close()
    assert direct.put("k", b"x", {}) is None


def test_without_credentials_nothing_is_sent(server: Recorder) -> None:
    assert direct_to(server, keys=None).put("k", b"x", {}) is None
    assert server.seen == []


def test_credentials_never_show_their_secrets() -> None:
    keys = Credentials("AKIAUNITTESTKEYID000", "the-secret-key", "the-session-token")
    shown = f"{keys!r} {keys} {[keys]}"
    assert "AKIAUNITTESTKEYID000" in shown
    assert "the-secret-key" not in shown and "the-session-token" not in shown
