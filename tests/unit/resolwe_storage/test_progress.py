"""Progress of ``import`` and ``export`` on a terminal, and none where a script reads.

Each command runs in a process of its own with its standard error on a
pseudo-terminal (``pty``), as a user at a terminal runs it, or on a pipe.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.processes import DEFAULT_TIMEOUT, Cli, local_pair

#: More items than one batch of the import and one step of export's line (2,000).
ITEMS = 4_500


class Seen(NamedTuple):
    code: int
    out: str
    terminal: str


def on_terminal(cli: Cli, *args: object) -> Seen:
    """Run a command with its standard error on a terminal; what it wrote there."""
    # Standard output to a file: a pipe, unread while the terminal is, could fill and stall it.
    with tempfile.TemporaryFile() as output:
        leader, follower = pty.openpty()
        try:
            process = subprocess.Popen(
                cli.command(*args),
                stdout=output,
                stderr=follower,
                env=cli.env,
                cwd=cli.config.parent,
            )
        finally:
            os.close(follower)
        try:
            terminal = _read_all(leader)
            code = process.wait(timeout=DEFAULT_TIMEOUT)
        finally:
            os.close(leader)
            if process.poll() is None:
                process.kill()
        output.seek(0)
        out = output.read().decode()
    assert "Traceback" not in terminal, terminal
    return Seen(code, out, terminal)


def _read_all(leader: int) -> str:
    """What a terminal shows until the last process holding it ends."""
    shown = bytearray()
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError as exc:  # EIO: no process holds the terminal any more
            if exc.errno != errno.EIO:
                raise
            break
        if not chunk:
            break
        shown += chunk
    return shown.decode()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(local_pair(tmp_path))


@pytest.fixture
def lines(tmp_path: Path) -> Path:
    path = tmp_path / "items.jsonl"
    with path.open("w") as out:
        for number in range(ITEMS):
            item = {"key": f"item-{number:05d}", "created": "2026-01-01T00:00:00Z"}
            out.write(json.dumps(item) + "\n")
    return path


def test_import_shows_its_progress_on_a_terminal(cli: Cli, lines: Path) -> None:
    seen = on_terminal(cli, "import", lines)
    assert seen.code == 0, seen
    assert "importing: 2,000 items" in seen.terminal
    assert "4,500 created" in seen.terminal
    assert seen.out == "imported: 4500 created, 0 updated, 0 unchanged\n"


def test_import_to_a_pipe_shows_no_progress(cli: Cli, lines: Path) -> None:
    done = cli.ok("import", lines)
    assert done.err == ""


def test_export_to_a_file_shows_its_progress_on_a_terminal(
    cli: Cli, lines: Path, tmp_path: Path
) -> None:
    cli.ok("import", lines)
    target = tmp_path / "out.jsonl"
    seen = on_terminal(cli, "export", target)
    assert seen.code == 0, seen
    assert f"exporting: 2,000 of {ITEMS:,} items (44 %)" in seen.terminal
    # The last count, the line ended, then what was done.
    assert f"exporting: {ITEMS:,} of {ITEMS:,} items (100 %)" in seen.terminal
    assert seen.terminal.endswith(f"\r\nexported {ITEMS} item(s) to {target}\r\n")
    written = target.read_text().splitlines()
    assert len(written) == ITEMS
    assert "exporting" not in target.read_text()


def test_export_to_a_pipe_shows_its_progress_on_the_terminal_beside_it(
    cli: Cli, lines: Path
) -> None:
    cli.ok("import", lines)
    seen = on_terminal(cli, "export", "-")
    assert seen.code == 0, seen
    assert f"exporting: {ITEMS:,} of {ITEMS:,} items (100 %)" in seen.terminal
    assert len(json.loads(seen.out)["items"]) == ITEMS


def test_export_where_no_one_watches_shows_no_progress(
    cli: Cli, lines: Path, tmp_path: Path
) -> None:
    cli.ok("import", lines)
    target = tmp_path / "out.json"
    done = cli.ok("export", target)
    assert done.err == f"exported {ITEMS} item(s) to {target}\n"
    assert len(json.loads(target.read_text())["items"]) == ITEMS
