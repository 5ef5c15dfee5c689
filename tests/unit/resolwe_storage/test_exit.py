"""A command's process ends without Python's teardown, and loses nothing by it."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.processes import Cli, local_pair

ITEMS = 3_000


def _document(folder: Path) -> Path:
    items = [
        {
            "key": f"item-{number:05d}",
            "status": "OK",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": f"u/{number}", "status": "OK"}],
            "files": [{"path": "a.txt", "size": 3, "md5": "d41d8cd98f00b204e9800998ecf8427e"}],
        }
        for number in range(ITEMS)
    ]
    document = folder / "items.json"
    document.write_text(json.dumps({"items": items}))
    return document


def test_the_catalog_file_holds_what_a_command_wrote(tmp_path: Path) -> None:
    """Checkpointed at exit: the file alone, without SQLite's log beside it, has every item."""
    cli = Cli(local_pair(tmp_path))
    cli.ok("import", _document(tmp_path))
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(tmp_path / "catalog.sqlite3", alone / "catalog.sqlite3")
    with contextlib.closing(sqlite3.connect(alone / "catalog.sqlite3")) as copy:
        (count,) = copy.execute("SELECT count(*) FROM file_storage").fetchone()
    assert count == ITEMS


def test_a_catalog_file_put_in_place_is_read_as_it_is(tmp_path: Path) -> None:
    """The log a command leaves is empty: a backup restored over the file is not read through it."""
    cli = Cli(local_pair(tmp_path))
    cli.ok("status")
    shutil.copy(tmp_path / "catalog.sqlite3", tmp_path / "backup.sqlite3")  # empty, migrated
    cli.ok("import", _document(tmp_path))
    assert (tmp_path / "catalog.sqlite3-wal").stat().st_size == 0
    shutil.copy(tmp_path / "backup.sqlite3", tmp_path / "catalog.sqlite3")
    restored = cli.ok("status", "--json")
    assert json.loads(restored.out)["items"]["total"] == 0
    with contextlib.closing(sqlite3.connect(tmp_path / "catalog.sqlite3")) as catalog:
        assert catalog.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_the_exit_does_not_wait_for_another_process_reading(tmp_path: Path) -> None:
    """Another process's open read keeps the log; the command ends anyway, its items stored."""
    cli = Cli(local_pair(tmp_path))
    cli.ok("status")
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN'); c.execute('SELECT count(*) FROM file_storage').fetchall(); "
            "print('reading', flush=True); sys.stdin.read()",
            str(tmp_path / "catalog.sqlite3"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        cli.ok("import", _document(tmp_path), timeout=10)  # not the catalog's 30 s wait
        assert (tmp_path / "catalog.sqlite3-wal").stat().st_size > 0  # kept for the reader
    finally:
        reader.communicate("", timeout=30)
    assert json.loads(cli.ok("status", "--json").out)["items"]["total"] == ITEMS
    assert (tmp_path / "catalog.sqlite3-wal").stat().st_size == 0  # the last one empties it


def test_output_through_a_pipe_is_whole_and_the_exit_code_kept(tmp_path: Path) -> None:
    cli = Cli(local_pair(tmp_path))
    cli.ok("import", _document(tmp_path))
    exported = cli.ok("export", "--format", "jsonl")
    lines = exported.out.splitlines()
    assert len(lines) == ITEMS
    assert json.loads(lines[-1])["key"] == f"item-{ITEMS - 1:05d}"
    failed = cli("url", "no-such-item", "a.txt")
    assert failed.code == 1
    assert "no-such-item" in failed.error_line


def test_logs_are_written_out_before_the_end(tmp_path: Path) -> None:
    """The last log line of all, the workers' stop, is not lost with the process."""
    cli = Cli(local_pair(tmp_path, copy={"delay": 0}))
    (tmp_path / "local" / "1").mkdir(parents=True)
    (tmp_path / "local" / "1" / "a.txt").write_bytes(b"abc")
    item = {
        "key": "one",
        "status": "OK",
        "created": "2026-01-01T00:00:00Z",
        "locations": [{"connector": "local", "url": "1", "status": "OK"}],
        "files": [{"path": "a.txt", "size": 3, "md5": "900150983cd24fb0d6963f7d28e17f72"}],
    }
    (tmp_path / "one.json").write_text(json.dumps({"items": [item]}))
    cli.ok("import", tmp_path / "one.json")
    done = cli.ok("--log-level", "info", "run", "--once")
    assert done.out.splitlines()[-1] == "done: copy 1 ok"
    assert done.err.splitlines()[-1].endswith("Worker has been shut down.")


def test_the_installed_command_ends_the_same_way() -> None:
    """``resolwe-storage`` (the installed script) enters where ``python -m`` does."""
    script = Path(sys.executable).parent / "resolwe-storage"
    text = script.read_text()
    assert "import entry" in text, text
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "Commands:" in done.stdout
