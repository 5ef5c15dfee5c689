"""Commands import only what they use: a quick command does not pay for the workers' stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import local_pair

#: What a command that moves no bytes and touches no queue must not load.
HEAVY = (
    "boto3",
    "botocore",
    "s3transfer",
    "google.cloud",
    "google.auth",
    "dramatiq",
    "redis",
    "apscheduler",
    "prometheus_client",
    "starlette",
    "uvicorn",
    "jinja2",
    "pydantic",
    # PostgreSQL's driver, on a SQLite catalog (``catalog.pgdriver``).
    "psycopg2",
)

PROBE = """
import json, sys
from resolwe_storage.cli import main
code = main(json.loads(sys.argv[1]))
heavy = json.loads(sys.argv[2])
loaded = sorted(name for name in heavy if name in sys.modules)
print("LOADED " + json.dumps(loaded))
sys.exit(code)
"""


def migrated(config: Path) -> None:
    """The catalog of ``config`` made beforehand, as a command mostly meets it.

    Making one loads the migrations' tools, and PostgreSQL's driver with them.
    """
    subprocess.run(
        [sys.executable, "-m", "resolwe_storage", "--config", str(config), "migrate"],
        check=True,
        capture_output=True,
        timeout=60,
        cwd=config.parent,
    )


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["status"], ["status", "--json"], ["plan"], ["plan", "--json"], ["check-config"]],
    ids=lambda argv: " ".join(argv),
)
def test_a_quick_command_loads_no_worker_stack(tmp_path: Path, argv: list[str]) -> None:
    config = local_pair(tmp_path, copy={"delay": 0})
    migrated(config)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            json.dumps(["--config", str(config), *argv]),
            json.dumps(HEAVY),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("LOADED ")]
    assert json.loads(line.removeprefix("LOADED ")) == []


def test_the_probe_sees_what_a_command_does_load(tmp_path: Path) -> None:
    """The same probe on a command that needs the broker names what it loaded."""
    config = local_pair(tmp_path)
    migrated(config)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            json.dumps(["--config", str(config), "run", "--once"]),
            json.dumps([*HEAVY, "http.server", "asyncio.base_events"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.startswith("LOADED ")]
    loaded = json.loads(line.removeprefix("LOADED "))
    assert "dramatiq" in loaded
    # The embedded default's in-process broker needs no Redis client, and a
    # run that serves no metrics no HTTP server.
    assert "redis" not in loaded
    assert "http.server" not in loaded
    assert "psycopg2" not in loaded
    # dramatiq without asyncio: no actor is async (``workers.deferred``).
    assert "asyncio.base_events" not in loaded


def test_the_command_lines_defaults_are_the_processes_own() -> None:
    from resolwe_storage import telemetry
    from resolwe_storage.cli import jobs
    from scheduler.loop import DEFAULT_SCAN_INTERVAL
    from workers.process import DEFAULT_STOP_SECONDS, DEFAULT_THREADS

    assert jobs.DEFAULT_SCAN_INTERVAL == DEFAULT_SCAN_INTERVAL
    assert jobs.DEFAULT_THREADS == DEFAULT_THREADS
    assert jobs.DEFAULT_STOP_SECONDS == DEFAULT_STOP_SECONDS
    assert jobs.DEFAULT_WORKER_METRICS == telemetry.DEFAULT_WORKER_METRICS
    assert jobs.DEFAULT_SCHEDULER_METRICS == telemetry.DEFAULT_SCHEDULER_METRICS
