"""``verify`` re-hashes copies and reports every problem; ``url`` points at a file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from resolwe_storage.cli import main

CONFIG = """\
database: sqlite:///{db}
connectors:
  local:
    connector: local
    config: {{priority: 0, path: {root}, public_url: /local_data}}
  backup:
    connector: local
    config: {{priority: 5, path: {backup}}}
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A configuration, and item ``data-1`` ingested on ``local`` with three files."""
    root, backup, db = tmp_path / "root", tmp_path / "backup", tmp_path / "catalog.sqlite3"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(db=db, root=root, backup=backup))
    folder = root / "items" / "data-1"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_bytes(b"alpha")
    (folder / "b.txt").write_bytes(b"bravo")
    (folder / "sub" / "c.txt").write_bytes(b"charlie")
    assert main(["--config", str(config), "ingest", "local", str(folder), "--key", "data-1"]) == 0
    return config, folder, db


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def test_verify_a_whole_copy(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, db = setup
    capsys.readouterr()
    assert run(config, "verify", "data-1", "--now", "2026-03-01T00:00:00Z", "--json") == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report == {
        "key": "data-1",
        "connector": "local",
        "url": "items/data-1",
        "files": 3,
        "bytes": 17,
        "ok": True,
        "status": "OK",
        "problems": [],
        "lost": [],
    }
    with sqlite3.connect(db) as connection:
        (verified,) = connection.execute("SELECT last_verified FROM storage_location").fetchone()
        history = connection.execute("SELECT action, result FROM action WHERE action = 'verify'")
        assert verified.startswith("2026-03-01")
        assert history.fetchall() == [("verify", "ok")]


def test_verify_reports_every_problem(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, folder, db = setup
    (folder / "a.txt").write_bytes(b"alphA")  # same size, one byte changed
    (folder / "sub" / "c.txt").unlink()
    capsys.readouterr()
    assert run(config, "verify", "data-1", "--json") == 1
    captured = capsys.readouterr()
    (report,) = json.loads(captured.out)
    assert report["ok"] is False
    assert [p["path"] for p in report["problems"]] == ["a.txt", "sub/c.txt"]
    assert "crc32c" in report["problems"][0]["problem"]
    assert report["problems"][1]["problem"] == "missing"
    # The only copy: both files are good nowhere now, and it says so.
    assert (report["status"], report["lost"]) == ("DM", ["a.txt", "sub/c.txt"])
    assert captured.err == (
        "error: 2 problem(s) in 1 copy(ies); item 'data-1' is LOST: "
        "no good copy anywhere of a.txt, sub/c.txt\n"
    )
    with sqlite3.connect(db) as connection:
        (verified,) = connection.execute("SELECT last_verified FROM storage_location").fetchone()
        (error,) = connection.execute("SELECT error FROM action WHERE action = 'verify'").fetchone()
    assert verified is None
    assert error.startswith("a.txt: crc32c") and "(and 1 more)" in error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "nope"], "error: no item with key 'nope' in the catalog"),
        (["verify", "data-1", "--connector", "tape"], "error: connector 'tape' is not configured"),
        (
            ["verify", "data-1", "--connector", "backup"],
            "error: item 'data-1' has no OK or damaged copy on",
        ),
        (["url", "data-1", "missing.txt"], "error: item 'data-1' has no file 'missing.txt'"),
        (["url", "data-1", "../a.txt"], "error: PATH"),
        (["url", "data-1", "a.txt", "--connector", "backup"], "error: item 'data-1' has no OK"),
    ],
)
def test_bad_requests_are_one_line(
    setup: tuple[Path, Path, Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    config, _, _ = setup
    capsys.readouterr()
    assert run(config, *args) != 0
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_url_of_a_public_local_copy(
    setup: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, _ = setup
    capsys.readouterr()
    assert run(config, "url", "data-1", "sub/c.txt") == 0
    assert capsys.readouterr().out == "/local_data/items/data-1/sub/c.txt\n"


def test_the_local_fsync_setting_reaches_the_connector(tmp_path: Path) -> None:
    from resolwe_storage.config import load_config
    from resolwe_storage.wiring import connector_named

    config = tmp_path / "c.yaml"
    config.write_text(
        "connectors:\n"
        "  fast: {connector: local, config: {path: a, fsync: false}}\n"
        "  safe: {connector: local, config: {path: b}}\n"
        "  alone: {connector: local, config: {path: c, batch_fsync: false}}\n"
    )
    loaded = load_config(str(config))
    assert connector_named(loaded, "fast").fsync is False  # type: ignore[attr-defined]
    assert connector_named(loaded, "safe").fsync is True  # type: ignore[attr-defined]
    assert connector_named(loaded, "safe").batch_fsync is True  # type: ignore[attr-defined]
    assert connector_named(loaded, "alone").batch_fsync is False  # type: ignore[attr-defined]
    config.write_text("connectors:\n  x: {connector: local, config: {path: a, fsync: 'no'}}\n")
    with pytest.raises(Exception, match=r"connectors\.x\.config\.fsync"):
        load_config(str(config))
