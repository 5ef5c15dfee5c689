"""Bad input and interruptions, each command in a process of its own, as users run them.

Every failure is one ``error:`` line and a non-zero exit; nothing half-written
is left behind, and nothing a user did not name is replaced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.processes import Cli, local_pair, wait_for
from workers.process import STOPPED_MESSAGE


def _catalog(tmp_path: Path, items: int = 2) -> Cli:
    cli = Cli(local_pair(tmp_path))
    document = tmp_path / "items.jsonl"
    with document.open("w") as out:
        for number in range(items):
            item = {"key": f"item-{number:06d}", "created": "2026-01-01T00:00:00Z"}
            out.write(json.dumps({**item, "locations": []}) + "\n")
    cli.ok("import", document)
    return cli


def test_export_to_a_folder_is_one_error_line_and_leaves_nothing(tmp_path: Path) -> None:
    cli = _catalog(tmp_path)
    (tmp_path / "out").mkdir()
    outcome = cli("export", "out")
    assert "out" in outcome.error_line and "directory" in outcome.error_line
    assert not (tmp_path / "out.partial").exists()
    assert (tmp_path / "out").is_dir() and not list((tmp_path / "out").iterdir())


@pytest.mark.skipif(sys.platform == "win32", reason="named pipes")
def test_export_into_a_named_pipe_writes_through_it(tmp_path: Path) -> None:
    """As ``export /dev/stdout`` would: the pipe gets the document, and stays a pipe."""
    cli = _catalog(tmp_path)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []

    def read() -> None:
        with pipe.open("rb") as source:
            received.append(source.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        cli.ok("export", pipe, "--format", "jsonl")
        reader.join(timeout=10)
        assert pipe.is_fifo(), "the named pipe was replaced by a regular file"
        assert [json.loads(line)["key"] for line in received[0].splitlines()] == [
            "item-000000",
            "item-000001",
        ]
    finally:
        if reader.is_alive():  # never opened by the export: let the reader go
            with pipe.open("wb"):
                pass
            reader.join(timeout=10)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs /proc/self/mem")
def test_import_of_a_file_that_cannot_be_read_is_one_error_line(tmp_path: Path) -> None:
    """A read that fails (EIO, as on a failing disk) is named, and nothing is stored."""
    cli = Cli(local_pair(tmp_path))
    for format_ in ("json", "jsonl"):
        outcome = cli("import", "/proc/self/mem", "--format", format_)
        assert "/proc/self/mem" in outcome.error_line, outcome
        assert "Input/output error" in outcome.error_line
    assert json.loads(cli.ok("status", "--json").out)["items"]["total"] == 0


def test_export_stopped_by_sigterm_leaves_no_partial_file(tmp_path: Path) -> None:
    """A failed export leaves no partial file, stopped by an orchestrator (SIGTERM) too."""
    cli = _catalog(tmp_path, items=60_000)
    target = tmp_path / "out.json"
    partial = tmp_path / "out.json.partial"
    exporting = subprocess.Popen(
        cli.command("export", target),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
        cwd=tmp_path,
    )
    wait_for(lambda: partial.exists() or exporting.poll() is not None, "the export to begin")
    exporting.send_signal(signal.SIGTERM)
    _, err = exporting.communicate(timeout=60)
    assert exporting.returncode != 0, "the export finished before it was stopped: make it larger"
    assert "Traceback" not in err
    assert not partial.exists(), "a half-written export was left behind"
    assert not target.exists()
    assert sorted(path.name for path in tmp_path.iterdir() if "out" in path.name) == []


def test_url_on_a_connector_not_configured_says_so(tmp_path: Path) -> None:
    """As ``verify --connector``: the error names the connector as unknown, and the choices."""
    cli = Cli(local_pair(tmp_path, public_url="/pub"))
    folder = tmp_path / "local" / "item-1"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("a\n")
    cli.ok("ingest", "local", folder, "--key", "item-1")
    line = cli("url", "item-1", "a.txt", "--connector", "nope").error_line
    assert line == "error: connector 'nope' is not configured (configured: archive, local)"


def test_run_once_stopped_by_sigterm_leaves_no_temporary_files(tmp_path: Path) -> None:
    """``run --once`` passes a SIGTERM on to its processes and waits for them (README).

    As ``run`` and ``worker`` do, the copies under way end before the
    process does: no temporary file is left in the target's folder.
    """
    from tests.processes import copying_pair

    cli = Cli(copying_pair(tmp_path))
    for number in range(2):
        folder = tmp_path / "local" / f"item-{number}"
        folder.mkdir(parents=True)
        for index in range(150):
            (folder / f"f{index}.bin").write_bytes(os.urandom(256 * 1024))
        cli.ok("ingest", "local", folder, "--key", f"item-{number}")
    running = subprocess.Popen(
        cli.command("run", "--once", "--processes", "2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli.env,
        cwd=tmp_path,
    )

    def partials() -> list[Path]:
        return list((tmp_path / "archive").rglob("*.rs-partial"))

    wait_for(lambda: partials() or running.poll() is not None, "a copy to begin")
    running.send_signal(signal.SIGTERM)
    _, err = running.communicate(timeout=60)
    assert "Traceback" not in err
    assert not partials(), f"{len(partials())} temporary file(s) left (exit {running.returncode})"
    if running.returncode != 0:  # else it ended before the signal came
        assert running.returncode == 1
        assert err.splitlines() == [f"error: {STOPPED_MESSAGE}"]


def test_a_malformed_broker_url_is_one_error_line(tmp_path: Path) -> None:
    """An unclosed ``[`` in the URL: an error naming the variable, not a traceback."""
    cli = Cli(local_pair(tmp_path), env={"RESOLWE_STORAGE_BROKER": "redis://:pw@[::1"})
    line = cli("queues").error_line
    assert line.endswith("RESOLWE_STORAGE_BROKER: not a well-formed URL"), line


def test_ingest_with_an_empty_key_is_refused_before_hashing(tmp_path: Path) -> None:
    cli = Cli(local_pair(tmp_path))
    folder = tmp_path / "local" / "item-1"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("a\n")
    assert cli("ingest", "local", folder, "--key", "").error_line == (
        "error: --key: an item's key must not be empty"
    )
    assert json.loads(cli.ok("status", "--json").out)["items"]["total"] == 0


def test_ingest_of_a_file_named_in_another_encoding_is_one_error_line(tmp_path: Path) -> None:
    """A name of Latin-1 bytes (another tool wrote it) is no UTF-8 path: refused, not a crash."""
    cli = Cli(local_pair(tmp_path))
    folder = tmp_path / "local" / "item-1"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("a\n")
    with open(os.fsencode(folder) + b"/caf\xe9.txt", "wb") as stray:
        stray.write(b"latin-1\n")
    line = cli("ingest", "local", folder, "--key", "item-1").error_line
    assert "caf\\udce9.txt" in line and "UTF-8" in line, line
    assert json.loads(cli.ok("status", "--json").out)["items"]["total"] == 0


@pytest.mark.parametrize("output", [["--json"], []], ids=["json", "text"])
def test_an_audit_reports_a_dark_file_named_in_another_encoding(
    tmp_path: Path, output: list[str]
) -> None:
    """Dark objects whose names are no UTF-8 are reported (and removed when asked), not a crash."""
    cli = Cli(local_pair(tmp_path))
    folder = tmp_path / "local" / "item-1"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("a\n")
    cli.ok("ingest", "local", folder, "--key", "item-1")
    strays = [os.fsencode(folder) + b"/caf\xe9", os.fsencode(tmp_path / "local") + b"/\xff/x"]
    for stray in strays:
        os.makedirs(os.path.dirname(stray), exist_ok=True)
        with open(stray, "wb") as out:
            out.write(b"dark")
        os.utime(stray, (0, 0))
    outcome = cli("audit", "local", *output)
    assert outcome.code == 0, outcome
    if output:
        [counts] = json.loads(outcome.out)["connectors"]
        assert (counts["expected"], counts["lost"], counts["dark"]) == (1, 0, 2)
        keys = sorted(finding["key"] for finding in json.loads(outcome.out)["findings"])
        assert keys == ["\\xff/x", "item-1/caf\\xe9"]
    else:
        assert "1 file(s) expected: 0 lost, 0 mismatched, 2 dark (8 bytes)" in outcome.out
        assert "dark: item-1/caf\\xe9 (4 bytes" in outcome.out
    cli.ok("audit", "local", "--delete-dark", "--older-than", "1")
    assert not any(os.path.lexists(stray) for stray in strays)
    assert (folder / "a.txt").read_text() == "a\n"
    history = cli.ok("history", "--json").out
    assert "caf\\\\xe9" in history, history
