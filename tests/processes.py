"""Running ``resolwe-storage`` as users do: each command in a process of its own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: Seconds a command may take before the test fails.
DEFAULT_TIMEOUT = 120


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The one line a failed command prints, checked to be one ``error:`` line."""
        lines = self.err.splitlines()
        assert self.code != 0, self
        assert len(lines) == 1 and lines[0].startswith("error: "), self.err
        return lines[0]


def local_pair(folder: Path, **archive: object) -> Path:
    """A configuration file in ``folder``: a SQLite catalog there, two local connectors.

    ``local`` (preferred, priority 0) and ``archive`` (priority 10, with the
    settings ``archive``: rules, ``public_url``...), folders beside it.
    """
    config = folder / "config.json"
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{folder / 'catalog.sqlite3'}",
                "connectors": {
                    "local": {"connector": "local", "config": {"priority": 0, "path": "local"}},
                    "archive": {
                        "connector": "local",
                        "config": {"priority": 10, "path": "archive", **archive},
                    },
                },
            }
        )
    )
    return config


def ingested_sample(
    folder: Path, files: dict[str, bytes], *, key: str = "sample-1", **archive: object
) -> tuple[Cli, Path]:
    """A ``local_pair`` in ``folder`` and the item ``key`` of ``files`` ingested on ``local``:
    the command line, and the item's folder."""
    cli = Cli(local_pair(folder, **archive))
    item = folder / "local" / key
    for name, data in files.items():
        (item / name).parent.mkdir(parents=True, exist_ok=True)
        (item / name).write_bytes(data)
    cli.ok("ingest", "local", item, "--key", key)
    return cli, item


def copying_pair(
    folder: Path,
    *,
    broker: str | None = None,
    database: str | None = None,
    local: dict[str, object] | None = None,
    archive: dict[str, object] | None = None,
) -> Path:
    """A configuration file in ``folder`` for jobs: ``local`` copied at once to ``archive``.

    Folders ``folder/local`` (priority 10) and ``folder/archive`` (priority 0,
    preferred, ``copy: {delay: 0}``), plus the settings ``local`` and
    ``archive``; a SQLite catalog in ``folder`` unless ``database``; ``broker``.
    """
    document: dict[str, object] = {
        "database": database or f"sqlite:///{folder / 'catalog.sqlite3'}",
        "connectors": {
            "local": {
                "connector": "local",
                "config": {"priority": 10, "path": str(folder / "local"), **(local or {})},
            },
            "archive": {
                "connector": "local",
                "config": {
                    "priority": 0,
                    "path": str(folder / "archive"),
                    "copy": {"delay": 0},
                    **(archive or {}),
                },
            },
        },
    }
    if broker is not None:
        document["broker"] = broker
    path = folder / "config.json"
    path.write_text(json.dumps(document))
    return path


class Cli:
    """``resolwe-storage --config CONFIG ...`` in a new Python process each time."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RESOLWE_STORAGE_")},
            # Tests run many workers and schedulers, at once too: none serves
            # metrics on the default port unless the test asks (--metrics-bind).
            "RESOLWE_STORAGE_METRICS_BIND": "off",
            **(env or {}),
        }

    def command(self, *args: object) -> list[str]:
        return [sys.executable, "-m", "resolwe_storage", "--config", str(self.config)] + [
            str(arg) for arg in args
        ]

    def __call__(self, *args: object, timeout: float = DEFAULT_TIMEOUT) -> Outcome:
        done = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.config.parent,
            check=False,
        )
        outcome = Outcome(done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in outcome.err, outcome.err
        return outcome

    def ok(self, *args: object, timeout: float = DEFAULT_TIMEOUT) -> Outcome:
        """Run and require success."""
        outcome = self(*args, timeout=timeout)
        assert outcome.code == 0, outcome
        return outcome

    def start(self, *args: object, log: Path) -> subprocess.Popen[bytes]:
        """Start a long-running command (a worker, the scheduler) with its output in ``log``."""
        with log.open("wb") as output:
            return subprocess.Popen(
                self.command(*args),
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.config.parent,
            )


def wait_for(check: Callable[[], object], what: str, seconds: float = 60) -> None:
    """Until ``check()`` is true; fails naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def fetch(url: str, *, data: bytes | None = None, timeout: float = 10) -> tuple[int, str]:
    """``GET`` (or ``POST`` of ``data``) ``url``: status and body; 0 when nothing answers."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, data=data, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as an orchestrator stops a process; it must end cleanly within a minute."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0


#: System calls ``traced`` records: the flushes, and what they are ordered against.
TRACED_CALLS = "fsync,fdatasync,syncfs,openat,rename,renameat2,mkdir,mkdirat,pwrite64,write"


@dataclass(frozen=True)
class Call:
    """One system call of a traced process: its name and its arguments as strace shows them
    (descriptors with their paths, ``8</data/item>``)."""

    name: str
    arguments: str

    def on(self, path: Path | str) -> bool:
        """Whether the call is on ``path`` itself: a descriptor of it first, or its name."""
        first = self.arguments.split(",", 1)[0]
        return first.endswith(f"<{path}>") or f'"{path}"' in self.arguments

    def under(self, folder: Path | str) -> bool:
        """Whether the call is on ``folder`` or on something beneath it."""
        first = self.arguments.split(",", 1)[0]
        named = (f'"{folder}"', f'"{folder}/')
        return (
            f"<{folder}>" in first
            or f"<{folder}/" in first
            or any(name in self.arguments for name in named)
        )


def traced(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> list[Call]:
    """Run ``command`` (and its children) under strace; its system calls, in order.

    Only ``TRACED_CALLS``, and only those that succeeded.
    """
    import shutil

    strace = shutil.which("strace")
    if strace is None:
        import pytest

        if os.environ.get("CI"):
            pytest.fail("strace is not installed")
        pytest.skip("strace is not installed")
    log = cwd / "strace.log"
    done = subprocess.run(
        [
            strace,
            "-f",
            "-y",
            "-qq",
            "-s",
            "200",
            "-o",
            str(log),
            "-e",
            f"trace={TRACED_CALLS}",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=DEFAULT_TIMEOUT,
        env=env,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, done
    calls = []
    #: A call another thread interrupted (``<unfinished ...>``), by process id.
    begun: dict[str, str] = {}
    for line in log.read_text().splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            begun[pid] = rest.removesuffix("<unfinished ...>")
            continue
        if rest.startswith("<... "):
            rest = begun.pop(pid, "") + rest.partition(" resumed>")[2]
        name, _, tail = rest.partition("(")
        arguments, _, result = tail.rpartition(") = ")
        if name.isidentifier() and result and not result.startswith("-1"):
            calls.append(Call(name, arguments))
    return calls
