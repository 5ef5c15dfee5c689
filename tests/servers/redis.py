"""Redis for the integration tests: a server of the session's own, and private ones to kill.

``redis_url`` is database 0 of a ``redis-server`` this test session starts
for itself (on a free loopback port, in a temporary folder, without
persistence; killed when the session ends), emptied before and after each
test. Two test runs at once (two checkouts, a developer and CI) so never
share queues, Dramatiq's keys or our pending markers (``resolwe-storage:*``).

``$RESOLWE_STORAGE_TEST_REDIS`` names a server to use instead (for instance
``redis://127.0.0.1:6379/13``): then that database is the one emptied before
and after each test, as it is shared with nobody else.

``private_redis`` starts a ``redis-server`` of the test's own on a free
loopback port, for tests that stop and restart it.

Without a ``redis-server`` (or the named server) the tests are skipped,
except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import server_missing
from tests.servers.process import STARTUP_SECONDS, free_port

#: A Redis server to use instead of one of the session's own.
REDIS_URL = os.environ.get("RESOLWE_STORAGE_TEST_REDIS") or None
#: Free ports tried for the session's server (another may take one meanwhile).
SESSION_PORT_TRIES = 5


@dataclass
class PrivateRedis:
    """A redis-server of our own; ``stop`` and ``start`` it at will (same port)."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        problem = self.launch()
        if problem is not None:
            server_missing("private redis-server", problem)

    def launch(self) -> str | None:
        """Start it and wait until it answers: None, or why it did not."""
        binary = shutil.which("redis-server")
        if binary is None:
            return "redis-server is not on PATH"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + STARTUP_SECONDS
        try:
            while True:
                try:
                    client.ping()
                    return None
                except redis.ConnectionError:
                    if self.process.poll() is not None:
                        return f"exited with code {self.process.returncode} (port {self.port})"
                    if time.monotonic() > deadline:
                        self.stop()
                        return f"did not answer within {STARTUP_SECONDS} s (port {self.port})"
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def _session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of this session's Redis: ``$RESOLWE_STORAGE_TEST_REDIS``, else one we start."""
    if REDIS_URL is not None:
        yield REDIS_URL
        return
    problem = "not started"
    for _ in range(SESSION_PORT_TRIES):
        server = PrivateRedis(free_port(), tmp_path_factory.mktemp("redis-server"))
        problem = server.launch()
        if problem is None:
            break
        server.stop()
    else:
        server_missing("redis-server for the test session", problem)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(_session_redis: str) -> Iterator[str]:
    """The session's Redis (database), empty at the start and emptied at the end of the test."""
    import redis

    client = redis.Redis.from_url(_session_redis)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        server_missing("Redis", str(exc))
    client.flushdb()
    try:
        yield _session_redis
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
