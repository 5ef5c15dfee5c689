"""No test sees the developer's ``RESOLWE_STORAGE_*`` settings (``tests/conftest.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from resolwe_storage.config import DEFAULT_DATABASE, load_config
from tests.conftest import OUR_PREFIX, TEST_PREFIX

#: The checkout, from which ``tests.conftest`` imports.
CHECKOUT = Path(__file__).resolve().parents[2]

#: Settings a developer may have exported, each of which would change what a test does.
EXPORTED = {
    "RESOLWE_STORAGE_DATABASE": "sqlite:////nonexistent/x.sqlite3",
    "RESOLWE_STORAGE_BROKER": "redis://127.0.0.1:1/0",
    "RESOLWE_STORAGE_CONFIG": "/nonexistent/config.yaml",
    "RESOLWE_STORAGE_LOG_LEVEL": "debug",
    "RESOLWE_STORAGE_ANYTHING_ELSE": "x",
}

#: A test session with only ``tests/conftest.py`` as a plugin: what it sees of them.
INNER_TESTS = """
import os
import subprocess
import sys

import pytest

from resolwe_storage.config import DEFAULT_DATABASE, load_config

EXPORTED = {exported!r}


@pytest.fixture(scope="session")
def seen_by_a_session_fixture():
    return {{name: os.environ.get(name) for name in EXPORTED}}


def test_a_session_fixture_does_not_see_them(seen_by_a_session_fixture):
    assert seen_by_a_session_fixture == dict.fromkeys(EXPORTED)


def test_the_code_under_test_does_not_see_them():
    assert not [name for name in EXPORTED if name in os.environ]
    config = load_config()
    assert config.database == DEFAULT_DATABASE and config.broker is None
    assert os.environ["RESOLWE_STORAGE_TEST_KEPT"] == "kept"


def test_a_process_the_test_starts_does_not_see_them():
    code = "import json, os; print(json.dumps(sorted(os.environ)))"
    names = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert not [name for name in EXPORTED if name in names]
    assert "RESOLWE_STORAGE_TEST_KEPT" in names
"""


def test_no_setting_of_ours_is_in_the_environment_of_a_test() -> None:
    leaked = [
        name
        for name in os.environ
        if name.startswith(OUR_PREFIX) and not name.startswith(TEST_PREFIX)
    ]
    assert leaked == []


def test_settings_exported_before_the_session_reach_no_test(tmp_path: Path) -> None:
    tests = tmp_path / "inner"
    tests.mkdir()
    (tests / "conftest.py").write_text('pytest_plugins = ["tests.conftest"]\n')
    (tests / "test_inner.py").write_text(textwrap.dedent(INNER_TESTS.format(exported=EXPORTED)))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tests),
            "--basetemp",
            str(tmp_path / "basetemp"),
            str(tests),
        ],
        capture_output=True,
        text=True,
        cwd=CHECKOUT,
        env={**os.environ, **EXPORTED, "RESOLWE_STORAGE_TEST_KEPT": "kept"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout, done.stdout


def test_the_default_catalog_is_what_a_test_gets_without_a_file() -> None:
    assert load_config().database == DEFAULT_DATABASE
