"""An HTTP proxy in front of a real test server that fails requests as told.

It forwards every request to the server (moto_server, fake-gcs-server) and
answers as the server does, except for requests matching a ``Fault``: those
get a 5xx, a hang longer than the client waits, or a dropped connection.
It stands in for the network and the far end, not for our code: the
connectors and the libraries under them run as they would against S3 or GCS.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

#: Headers that belong to one hop, not to the request.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class Fault:
    """Requests of ``method`` whose path and query match ``pattern`` fail, ``times`` times.

    ``status`` answers with that code; ``hang`` waits that many seconds first
    (then answers as the server does); ``drop`` closes the connection unanswered;
    ``truncate`` forwards only that many bytes of the body (its Content-Range
    shortened to match), as a server that kept less than it was sent; ``flip``
    inverts the body's byte at that offset on the way, as damage in transit;
    ``cut`` answers as the server does but closes the connection after that
    many bytes of the answer's body (its Content-Length stated whole), as a
    connection broken in the middle of a download.
    ``after`` lets that many matching requests through first.
    ``times=None`` fails every matching request.
    """

    method: str
    pattern: str
    status: int | None = None
    hang: float = 0.0
    drop: bool = False
    truncate: int | None = None
    flip: int | None = None
    cut: int | None = None
    after: int = 0
    times: int | None = 1
    hits: int = 0
    passed: int = 0

    def matches(self, method: str, target: str) -> bool:
        if method != self.method or re.search(self.pattern, target) is None:
            return False
        if self.passed < self.after:
            self.passed += 1
            return False
        return self.times is None or self.hits < self.times


@dataclass
class FaultyProxy:
    """The proxy's address, its faults, and every request it saw (method, path and query)."""

    url: str
    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def heal(self) -> None:
        with self.lock:
            self.faults.clear()

    def requests(self, method: str, pattern: str) -> list[str]:
        """Paths (with queries) of the requests seen of ``method`` matching ``pattern``."""
        with self.lock:
            return [
                target
                for seen, target in self.seen
                if seen == method and re.search(pattern, target)
            ]

    def _fault_for(self, method: str, target: str) -> Fault | None:
        with self.lock:
            self.seen.append((method, target))
            for fault in self.faults:
                if fault.matches(method, target):
                    fault.hits += 1
                    return fault
        return None


def _handler(proxy: FaultyProxy) -> type[BaseHTTPRequestHandler]:
    upstream = urlsplit(proxy.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy._fault_for(self.command, self.path)
            if fault is not None and fault.drop:
                self.close_connection = True
                self.connection.close()
                return
            if fault is not None and fault.hang:
                time.sleep(fault.hang)
            if fault is not None and fault.status is not None:
                message = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                if fault.status == 503:
                    message = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(message)))
                self.end_headers()
                self.wfile.write(message)
                return
            headers = {
                name: value
                for name, value in self.headers.items()
                if name.lower() not in HOP_HEADERS
            }
            if fault is not None and fault.truncate is not None:
                body = body[: fault.truncate]
                first, _, total = headers["Content-Range"].removeprefix("bytes ").partition("/")
                start = int(first.split("-")[0])
                headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{total}"
                headers["Content-Length"] = str(len(body))
            if fault is not None and fault.flip is not None:
                damaged = bytearray(body)
                damaged[fault.flip] ^= 0xFF
                body = bytes(damaged)
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
            finally:
                connection.close()
            self.send_response(answer.status)
            length = str(len(data))
            for name, value in answer.getheaders():
                if name.lower() == "content-length" and self.command == "HEAD":
                    length = value  # the object's size: a HEAD answer has no body
                if name.lower() in HOP_HEADERS or name.lower() == "content-length":
                    continue
                if name.lower() == "location":  # resumable sessions come back to us
                    value = value.replace(proxy.upstream, proxy.url)
                self.send_header(name, value)
            self.send_header("Content-Length", length)
            self.end_headers()
            if fault is not None and fault.cut is not None:
                self.wfile.write(data[: fault.cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler


@contextmanager
def faulty_proxy(upstream: str) -> Iterator[FaultyProxy]:
    """A ``FaultyProxy`` to ``upstream`` on a free port of 127.0.0.1, for the block."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    proxy = FaultyProxy(url=f"http://127.0.0.1:{server.server_address[1]}", upstream=upstream)
    server.RequestHandlerClass = _handler(proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
