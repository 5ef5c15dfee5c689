"""The HTTP server of ``/metrics``, ``/healthz`` and ``/readyz`` (``telemetry.serve`` starts it).

Apart from ``resolwe_storage.telemetry`` so that a command serving nothing
does not load ``http.server``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

logger = logging.getLogger("resolwe_storage.telemetry")


class Health(Protocol):
    """What the probes ask (``telemetry.Health``)."""

    alive: Callable[[], bool]

    def ready(self) -> tuple[bool, dict[str, Any]]: ...


class MetricsServer(ThreadingHTTPServer):
    """``/metrics``, ``/healthz`` and ``/readyz`` from a thread of their own."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], registry: Any, health: Health) -> None:
        self.registry = registry
        self.health = health
        super().__init__(address, _Handler)
        self.thread = threading.Thread(target=self.serve_forever, name="metrics", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            alive = self.server.health.alive()
            self._send(200 if alive else 503, b"ok\n" if alive else b"not alive\n")
        elif path == "/readyz":
            ok, found = self.server.health.ready()
            body = json.dumps({"ready": ok, **found}).encode() + b"\n"
            self._send(200 if ok else 503, body, "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics: " + format, *args)
