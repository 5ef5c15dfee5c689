"""The command line's contract (SPEC §6): one ``error:`` line on bad input, stable JSON."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from resolwe_storage.cli import main
from resolwe_storage.config import ENV_CONFIG, ENV_DATABASE

TABLES = ("file_storage", "storage_location", "referenced_path", "access_log", "action")
PASSWORD = "s3cr3t-pw"
MD5 = "0123456789abcdef0123456789abcdef"

CONFIG = """\
database: sqlite:///{db}
connectors:
  local:
    connector: local
    config: {{priority: 0, path: {root}, delete: {{delay: 2}}}}
  S3:
    connector: s3
    config: {{bucket: b, copy: {{delay: 5}}}}
"""

DOCUMENT: dict[str, Any] = {
    "items": [
        {
            "key": "data-1",
            "data_slug": "slug",
            "process_type": "data:test:",
            "status": "OK",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": "1", "open_access_logs": 1}],
            "files": [{"path": "reads.fastq.gz", "size": 3, "md5": MD5}],
        },
        {
            "key": "data-2",
            "status": "ER",
            "created": "2026-01-02T00:00:00",
            "locations": [
                {"connector": "local", "url": "2"},
                {"connector": "S3", "url": "2", "status": "UP"},
            ],
        },
    ]
}


@dataclass
class Setup:
    folder: Path
    config: Path
    db: Path
    root: Path

    def write(self, name: str, text: str) -> Path:
        path = self.folder / name
        path.write_text(text, encoding="utf-8")
        return path

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the catalog, read without our code; no file means no rows."""
        if not self.db.exists():
            return {}
        with sqlite3.connect(self.db) as connection:
            present = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
            return {
                table: connection.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
                for table in TABLES
                if table in present
            }


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    db = tmp_path / "catalog.sqlite3"
    root = tmp_path / "root"
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(db=db, root=root), encoding="utf-8")
    return Setup(folder=tmp_path, config=config, db=db, root=root)


@dataclass
class Outcome:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Any:
    def invoke(*args: str | os.PathLike[str]) -> Outcome:
        capsys.readouterr()
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return invoke


def assert_one_error_line(outcome: Outcome, starts: str = "error: ") -> str:
    assert outcome.code != 0, outcome
    assert "Traceback" not in outcome.err
    lines = outcome.err.splitlines()
    assert len(lines) == 1, outcome.err
    assert lines[0].startswith(starts), lines[0]
    assert outcome.err.endswith("\n")
    return lines[0]


def imported(setup: Setup, run: Any) -> dict[str, list[tuple[Any, ...]]]:
    """The catalog after importing DOCUMENT; what a failed command must leave as it is."""
    document = setup.write("items.json", json.dumps(DOCUMENT))
    assert run("--config", setup.config, "import", document).code == 0
    return setup.rows()


# -- bad input: one line, non-zero, nothing stored ----------------------------------


def _malformed_json(setup: Setup) -> list[Any]:
    return ["--config", setup.config, "import", setup.write("bad.json", '{"items": [}')]


def _missing_document(setup: Setup) -> list[Any]:
    return ["--config", setup.config, "import", setup.folder / "nope.json"]


def _document_is_a_folder(setup: Setup) -> list[Any]:
    return ["--config", setup.config, "import", setup.folder]


def _with_item(setup: Setup, **changes: Any) -> list[Any]:
    item = {
        "key": "new",
        "created": "2026-01-01",
        "locations": [{"connector": "local", "url": "n"}],
    }
    item["locations"][0].update(changes)
    document = {"items": [{**DOCUMENT["items"][0], "key": "also-new", "locations": []}, item]}
    return ["--config", setup.config, "import", setup.write("doc.json", json.dumps(document))]


def _unknown_connector(setup: Setup) -> list[Any]:
    return _with_item(setup, connector="GCS")


def _absolute_url(setup: Setup) -> list[Any]:
    return _with_item(setup, url="/data/abs")


def _dotdot_url(setup: Setup) -> list[Any]:
    return _with_item(setup, url="a/../../b")


def _unknown_config_key(setup: Setup) -> list[Any]:
    text = setup.config.read_text().replace("copy: {delay: 5}", "copy: {dealy: 5}")
    bad = setup.write("bad-config.yaml", text)
    return ["--config", bad, "import", setup.write("items.json", json.dumps(DOCUMENT))]


def _missing_config(setup: Setup) -> list[Any]:
    return ["--config", setup.folder / "missing.yaml", "status"]


def _explain_unknown_key(setup: Setup) -> list[Any]:
    return ["--config", setup.config, "plan", "--explain", "no-such-key"]


def _bad_now(setup: Setup) -> list[Any]:
    return ["--config", setup.config, "plan", "--now", "next tuesday"]


def _impossible_now(setup: Setup) -> list[Any]:
    return ["--config", setup.config, "plan", "--json", "--now", "2026-02-30"]


def _unknown_command(setup: Setup) -> list[Any]:
    return ["--config", setup.config, "frobnicate"]


def _unknown_option(setup: Setup) -> list[Any]:
    return ["--config", setup.config, "status", "--jsn"]


def _ingest_unknown_connector(setup: Setup) -> list[Any]:
    (setup.root / "x").mkdir(parents=True)
    return ["--config", setup.config, "ingest", "GCS", setup.root / "x", "--key", "x"]


def _ingest_symlink_escape(setup: Setup) -> list[Any]:
    (setup.root / "x").mkdir(parents=True)
    (setup.root / "x" / "f").symlink_to(setup.config)
    return ["--config", setup.config, "ingest", "local", setup.root / "x", "--key", "x"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_malformed_json, r"error: .*bad\.json: malformed JSON at line 1 column 12: "),
        (_missing_document, r"error: .*nope\.json: no such file$"),
        (_document_is_a_folder, r"error: .*: is a directory$"),
        (
            _unknown_connector,
            r"error: items\.1\.locations\.0\.connector: 'GCS' is not a configured connector "
            r"\(configured: S3, local\)$",
        ),
        (_absolute_url, r"error: items\.1\.locations\.0\.url: url '/data/abs' is absolute"),
        (_dotdot_url, r"error: items\.1\.locations\.0\.url: .*'\.\.' segment"),
        (
            _unknown_config_key,
            r"error: .*bad-config\.yaml: connectors\.S3\.config\.copy\.dealy: unknown key$",
        ),
        (_missing_config, r"error: configuration file '.*missing\.yaml' does not exist$"),
        (_explain_unknown_key, r"error: no item with key 'no-such-key' in the catalog$"),
        (_bad_now, r"error: --now: expected an ISO-8601 time, got 'next tuesday'$"),
        (_impossible_now, r"error: --now: expected an ISO-8601 time, got '2026-02-30'$"),
        (_unknown_command, r"error: No such command 'frobnicate'"),
        (_unknown_option, r"error: No such option.*--jsn"),
        (_ingest_unknown_connector, r"error: connector 'GCS' is not configured"),
        (_ingest_symlink_escape, r"error: .*f: links outside the connector root"),
    ],
)
def test_bad_input_gives_one_error_line_and_stores_nothing(
    setup: Setup, run: Any, make: Any, message: str
) -> None:
    before = imported(setup, run)
    line = assert_one_error_line(run(*make(setup)))
    assert re.match(message, line), line
    assert setup.rows() == before


def test_bad_input_on_standard_input(
    setup: Setup, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("[1, 2,"))
    line = assert_one_error_line(run("--config", setup.config, "import", "-"))
    assert line.startswith("error: standard input: malformed JSON at line 1")
    assert setup.rows() == {}


def test_a_failed_import_leaves_a_new_catalog_empty(setup: Setup, run: Any) -> None:
    assert_one_error_line(run(*_unknown_connector(setup)))
    assert set(map(len, setup.rows().values())) <= {0}


# -- passwords ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/catalog",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/no_such_database_for_tests",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:notaport/catalog",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/catalog?port=2",
        f"postgresql://postgres@127.0.0.1:1/catalog?password={PASSWORD}",
        f"postgresql://postgres@127.0.0.1:1/catalog?password={PASSWORD}&no_such_option=1",
        f"postgresql://postgres@127.0.0.1:1/catalog?sslmode=bogus&password={PASSWORD}",
        f"sqlite://user:{PASSWORD}@host/catalog.sqlite3",
        f"mysql://user:{PASSWORD}@host/catalog",
    ],
)
@pytest.mark.parametrize("given_by", ["file", "environment"])
def test_the_database_password_never_appears(
    setup: Setup, run: Any, monkeypatch: pytest.MonkeyPatch, url: str, given_by: str
) -> None:
    if given_by == "file":
        config = setup.write("pg.yaml", f"database: '{url}'\n")
    else:
        config = setup.config
        monkeypatch.setenv(ENV_DATABASE, url)
    outcome = run("--config", config, "status")
    assert_one_error_line(outcome)
    assert PASSWORD not in outcome.err + outcome.out


# -- the real console script ----------------------------------------------------------


def console_commands() -> list[list[str]]:
    script = Path(sys.executable).parent / "resolwe-storage"
    commands = [[sys.executable, "-m", "resolwe_storage.cli"]]
    if script.exists():
        commands.insert(0, [str(script)])
    return commands


@pytest.mark.parametrize("command", console_commands(), ids=lambda c: Path(c[-1]).name)
def test_the_console_script_prints_one_line_and_no_traceback(
    setup: Setup, command: list[str]
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESOLWE_STORAGE_")}
    bad = setup.write("bad.json", '{"items": [')
    cases = [
        (["--config", str(setup.config), "import", str(bad)], "malformed JSON"),
        (["--config", str(setup.folder / "missing.yaml"), "status"], "does not exist"),
        (["--config", str(setup.config), "plan", "--now", "soon"], "--now"),
        (["frobnicate"], "No such command"),
    ]
    for args, words in cases:
        done = subprocess.run(
            [*command, *args],
            cwd=setup.folder,
            env=environ,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        outcome = Outcome(done.returncode, done.stdout, done.stderr)
        line = assert_one_error_line(outcome)
        assert words in line
        assert done.stdout == ""
    environ[ENV_CONFIG] = str(setup.config)
    good = setup.write("items.json", json.dumps(DOCUMENT))
    done = subprocess.run(
        [*command, "import", "--json", str(good)],
        cwd=setup.folder,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == {"created": 2, "updated": 0, "unchanged": 0}


# -- JSON output ------------------------------------------------------------------------


def test_import_json(setup: Setup, run: Any) -> None:
    document = setup.write("items.json", json.dumps(DOCUMENT))
    first = run("--config", setup.config, "import", "--json", document)
    assert (first.code, first.err) == (0, "")
    assert first.out.count("\n") == 1
    assert json.loads(first.out) == {"created": 2, "updated": 0, "unchanged": 0}
    again = run("--config", setup.config, "import", "--json", document)
    assert json.loads(again.out) == {"created": 0, "updated": 0, "unchanged": 2}
    changed = json.loads(json.dumps(DOCUMENT))
    changed["items"][1]["status"] = "OK"
    third = run(
        "--config", setup.config, "import", "--json", setup.write("c.json", json.dumps(changed))
    )
    assert json.loads(third.out) == {"created": 0, "updated": 1, "unchanged": 1}


def test_import_text(setup: Setup, run: Any) -> None:
    document = setup.write("items.json", json.dumps(DOCUMENT))
    outcome = run("--config", setup.config, "import", document)
    assert (outcome.code, outcome.out) == (0, "imported: 2 created, 0 updated, 0 unchanged\n")


def test_import_from_standard_input(
    setup: Setup, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(DOCUMENT)))
    outcome = run("--config", setup.config, "import", "--json", "-")
    assert json.loads(outcome.out)["created"] == 2


def test_status_json(setup: Setup, run: Any) -> None:
    imported(setup, run)
    outcome = run("--config", setup.config, "status", "--json")
    assert (outcome.code, outcome.err) == (0, "")
    assert json.loads(outcome.out) == {
        "items": {"total": 2, "by_status": {"ER": 1, "OK": 1}, "removed": 0},
        "locations": {"S3": {"UP": 1}, "local": {"OK": 2}},
        "damaged_locations": 0,
        "lost_items": 0,
        "lost": [],
        "open_access_logs": 1,
        "unconfigured_connectors": [],
        "deletes_paused": False,
    }


def test_status_json_names_connectors_the_configuration_dropped(setup: Setup, run: Any) -> None:
    imported(setup, run)
    text = setup.config.read_text()
    local_only = setup.write("local-only.yaml", text[: text.index("  S3:")])
    outcome = run("--config", local_only, "status", "--json")
    summary = json.loads(outcome.out)
    assert summary["unconfigured_connectors"] == ["S3"]
    assert summary["locations"]["S3"] == {"UP": 1}


def test_status_json_of_an_empty_catalog(setup: Setup, run: Any) -> None:
    outcome = run("--config", setup.config, "status", "--json")
    assert json.loads(outcome.out) == {
        "items": {"total": 0, "by_status": {}, "removed": 0},
        "locations": {},
        "damaged_locations": 0,
        "lost_items": 0,
        "lost": [],
        "open_access_logs": 0,
        "unconfigured_connectors": [],
        "deletes_paused": False,
    }


def test_the_config_variable_picks_the_file(
    setup: Setup, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CONFIG, str(setup.config))
    document = setup.write("items.json", json.dumps(DOCUMENT))
    assert run("import", document).code == 0
    assert len(setup.rows()["file_storage"]) == 2
