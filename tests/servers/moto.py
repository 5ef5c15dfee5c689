"""A real S3 server for the tests: ``moto_server`` over HTTP on 127.0.0.1.

Started once per session on a free port, stopped at the end. Without it the
tests that need it are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import server_missing

#: Seconds to wait for the server to answer.
STARTUP_SECONDS = 30
ACCESS_KEY = "testing"
SECRET_KEY = "testing-secret-value-not-to-be-logged"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_answering(url: str, process: subprocess.Popen[bytes], what: str) -> str | None:
    """None once ``url`` answers; why not, if ``process`` died or time ran out."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"{what} exited with code {process.returncode}"
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return None
        except urllib.error.HTTPError:
            return None  # it answered, if not with 200
        except OSError:
            time.sleep(0.1)
    return f"{what} did not answer within {STARTUP_SECONDS} s"


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a private ``moto_server``."""
    binary = Path(sys.executable).parent / "moto_server"
    if not binary.exists():
        server_missing("moto_server", f"{binary} is not installed")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    problem = wait_until_answering(f"{endpoint}/moto-api/", process, "moto_server")
    if problem is not None:
        process.kill()
        server_missing("moto_server", problem)
    try:
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def s3_credentials(tmp_path: Path) -> Path:
    """A credentials file in the original Resolwe format."""
    path = tmp_path / "credentials_s3.json"
    path.write_text(json.dumps({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY}))
    return path


@pytest.fixture
def s3_bucket(moto_server: str, s3_credentials: Path) -> str:
    """A fresh, empty bucket on the server."""
    import boto3

    name = f"bucket-{uuid.uuid4().hex[:16]}"
    client = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    return name
