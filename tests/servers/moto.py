"""A real S3 server for the tests: ``moto_server`` over HTTP on 127.0.0.1.

Started once per session on a free port, stopped at the end. Without it the
tests that need it are skipped, except under ``CI=true``, where they fail.

moto_server accepts any credentials until told otherwise: ``checking_credentials``
switches its IAM authentication on (its ``/moto-api/reset-auth`` endpoint,
the server form of ``INITIAL_NO_AUTH_ACTION_COUNT``) and off again.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import server_missing
from tests.servers.process import free_port, serving, wait_until_answering

if TYPE_CHECKING:
    from connectors.s3 import S3Connector

ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret-value"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a private ``moto_server``."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        server_missing("moto_server", f"{binary} is not installed")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with serving(
        "moto_server",
        [str(binary), "-H", "127.0.0.1", "-p", str(port)],
        health_url=f"{endpoint}/moto-api/",
        log=tmp_path_factory.mktemp("moto") / "server.log",
    ):
        yield endpoint


class RestartableMoto:
    """A private ``moto_server`` that can be killed and started again with what it held.

    moto keeps its objects in memory; this one records every request it is
    sent to a file (moto's recorder), and a new process replays them before
    it serves, so a restart loses nothing, as a real S3 server's would not.
    The endpoint (port) stays the same across restarts.
    """

    def __init__(self, folder: Path) -> None:
        self.binary = Path(sys.executable).parent / "moto_server"
        if not self.binary.exists():
            server_missing("moto_server", f"{self.binary} is not installed")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.folder = folder
        self.recording = folder / "requests.jsonl"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start a server; a restarted one first replays every request the last one had."""
        env = {
            **os.environ,
            "MOTO_ENABLE_RECORDING": "1",
            "MOTO_RECORDER_FILEPATH": str(self.recording),
        }
        self.starts += 1
        log = (self.folder / f"server-{self.starts}.log").open("wb")
        command = [str(self.binary), "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env)
        log.close()
        problem = wait_until_answering(f"{self.endpoint}/moto-api/", self.process, "moto_server")
        if problem is not None:
            server_missing("moto_server", problem)
        if self.recording.exists() and self.recording.stat().st_size:
            request = urllib.request.Request(
                f"{self.endpoint}/moto-api/recorder/replay-recording", data=b"", method="POST"
            )
            urllib.request.urlopen(request, timeout=120).close()

    def kill(self) -> None:
        """SIGKILL: the server dies mid-request, as a crashed one does."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def restartable_moto(tmp_path: Path) -> Iterator[RestartableMoto]:
    server = RestartableMoto(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextlib.contextmanager
def checking_credentials(endpoint: str) -> Iterator[None]:
    """moto_server checks every request's signature and IAM rights while inside."""

    def reset_auth(actions: bytes) -> None:
        # The body is the number of requests still let through unchecked; a
        # form content type would hide it from moto.
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=actions,
            headers={"Content-Type": "text/plain"},
            method="POST",
        )
        urllib.request.urlopen(request, timeout=5).close()

    reset_auth(b"0")
    try:
        yield
    finally:
        reset_auth(b"inf")


def raw_client(endpoint: str, **credentials: str) -> object:
    """A plain boto3 S3 client for the test's own set-up and checks."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials.get("key", ACCESS_KEY),
        aws_secret_access_key=credentials.get("secret", SECRET_KEY),
        region_name=REGION,
    )


@pytest.fixture
def s3_credentials(tmp_path: Path) -> Path:
    """A credentials file in the original Resolwe format."""
    path = tmp_path / "credentials_s3.json"
    path.write_text(json.dumps({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY}))
    return path


@pytest.fixture
def s3_bucket(moto_server: str, s3_credentials: Path) -> S3Connector:
    """An ``S3Connector`` (default settings) on a fresh, empty bucket of the server."""
    from connectors.s3 import S3Connector

    name = f"bucket-{uuid.uuid4().hex[:16]}"
    raw_client(moto_server).create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return S3Connector(
        "S3",
        bucket=name,
        endpoint_url=moto_server,
        credentials=str(s3_credentials),
        region_name=REGION,
    )


def count_calls(connector: S3Connector, *operations: str) -> list[dict[str, Any]]:
    """The parameters of every request of ``operations`` the connector makes from now on.

    A botocore event hook on the connector's own client: nothing of ours is replaced.
    """
    made: list[dict[str, Any]] = []
    for operation in operations:
        connector.client.meta.events.register(
            f"provide-client-params.s3.{operation}",
            lambda params, **_: made.append(dict(params)),
        )
    return made
