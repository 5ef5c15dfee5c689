"""Running a test server as a child process: start, wait until it answers, stop."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import server_missing

#: Seconds to wait for a server to answer.
STARTUP_SECONDS = 30


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


@contextlib.contextmanager
def serving(what: str, command: list[str], *, health_url: str, log: Path) -> Iterator[None]:
    """Run ``command`` until the block ends, once ``health_url`` answers.

    When it cannot start or never answers, the test is skipped (failed under
    ``CI=true``) through ``server_missing``; its output goes to ``log``.
    """
    with log.open("wb") as output:
        try:
            process = subprocess.Popen(command, stdout=output, stderr=output)
        except OSError as exc:
            server_missing(what, f"cannot start {command[0]}: {exc}")
        try:
            problem = wait_until_answering(health_url, process, what)
            if problem is not None:
                server_missing(what, problem)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
