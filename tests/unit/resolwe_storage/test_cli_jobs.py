"""The job commands on the embedded default: ``run --once``, and what needs a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resolwe_storage.cli import main

CONFIG = """\
database: sqlite:///{root}/catalog.sqlite3
connectors:
  local:
    connector: local
    config: {{priority: 0, path: {root}/local}}
  archive:
    connector: local
    config:
      priority: 5
      path: {root}/archive
      copy: {{delay: 0}}
      delete: {{delay: 1, min_other_copies: 1}}
      verify: {{interval: 7}}
"""


@pytest.fixture
def config(tmp_path: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.format(root=tmp_path))
    sample = tmp_path / "local" / "sample-1"
    sample.mkdir(parents=True)
    (sample / "reads.fastq").write_bytes(b"ACGT\n" * 100)
    (sample / "sub").mkdir()
    (sample / "sub" / "counts.tsv").write_bytes(b"a\t1\n")
    return str(path)


def cli(config: str, *args: str) -> int:
    return main(["--config", config, *args])


def test_run_once_copies_verifies_and_deletes_by_the_policies(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(config, "ingest", "local", str(tmp_path / "local" / "sample-1"), "--key", "s1") == 0
    capsys.readouterr()

    assert cli(config, "run", "--once", "--json") == 0
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["scan"]["copies"] == 1 and outcome["scan"]["jobs"] == 1
    assert outcome["actions"] == {"copy": {"ok": 1}}  # one job
    copied = tmp_path / "archive" / "sample-1"
    assert (copied / "reads.fastq").read_bytes() == b"ACGT\n" * 100
    assert (copied / "sub" / "counts.tsv").read_bytes() == b"a\t1\n"

    # Later the copy is due for verification and, not being preferred, for
    # deletion. One thread runs the two jobs one after the other, in either
    # order: a verification first passes (and holds a lock while it reads);
    # after the delete there is nothing left to verify.
    when = "2099-01-01T00:00:00Z"
    assert cli(config, "run", "--once", "--json", "--now", when, "--threads", "1") == 0
    later = json.loads(capsys.readouterr().out)
    assert later["scan"]["verifies"] == 1 and later["scan"]["deletes"] == 1
    assert later["actions"].get("verify", {"ok": 1}) == {"ok": 1}
    assert later["actions"]["delete"] == {"ok": 1}
    assert not copied.exists() or not any(copied.rglob("*.*"))
    assert (tmp_path / "local" / "sample-1" / "reads.fastq").exists()

    assert cli(config, "status", "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert status["locations"].get("archive", {}) == {}


def test_run_once_with_nothing_due_says_so(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(config, "run", "--once") == 0
    out = capsys.readouterr().out
    assert "0 item(s) due" in out and "done: nothing to do" in out


@pytest.mark.parametrize(
    "command",
    [["scan"], ["worker"], ["scheduler", "--once"], ["request", "copy", "s1", "--to", "archive"]],
    ids=["scan", "worker", "scheduler", "request"],
)
def test_commands_that_share_a_broker_need_one(
    config: str, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(config, *command) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "needs a broker" in err and err.count("\n") == 1


def test_unknown_queues_are_refused(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(config, "worker", "--queues", "copy,nope") == 1
    assert "unknown queue(s) nope" in capsys.readouterr().err


def test_log_level_info_tells_of_every_job(config: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    base = [sys.executable, "-m", "resolwe_storage", "--config", config]
    sample = str(tmp_path / "local" / "sample-1")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESOLWE_STORAGE_")}
    run = {"capture_output": True, "text": True, "timeout": 120, "env": environ}
    subprocess.run([*base, "ingest", "local", sample, "--key", "s1"], check=True, **run)
    quiet = subprocess.run([*base, "run", "--once"], check=True, **run)
    assert "copy of" not in quiet.stderr  # warnings only, by default
    (tmp_path / "local" / "sample-2").mkdir()
    (tmp_path / "local" / "sample-2" / "x").write_bytes(b"x")
    sample = str(tmp_path / "local" / "sample-2")
    subprocess.run([*base, "ingest", "local", sample, "--key", "s2"], check=True, **run)
    told = subprocess.run([*base, "--log-level", "info", "run", "--once"], check=True, **run)
    jobs = [line for line in told.stderr.splitlines() if " workers.jobs: " in line]
    # One line per job: key, action, connector, files, bytes, seconds, result.
    assert len(jobs) == 1, told.stderr
    assert " INFO " in jobs[0] and "copy of 's2' to archive: 1 file(s), 1 B in " in jobs[0]
    assert jobs[0].endswith(": 1 copied")

    (tmp_path / "local" / "sample-3").mkdir()
    (tmp_path / "local" / "sample-3" / "y").write_bytes(b"yy")
    sample = str(tmp_path / "local" / "sample-3")
    subprocess.run([*base, "ingest", "local", sample, "--key", "s3"], check=True, **run)
    collected = subprocess.run(
        [*base, "--log-level", "info", "--log-format", "json", "run", "--once"], check=True, **run
    )
    records = [json.loads(line) for line in collected.stderr.splitlines()]
    [job] = [record["job"] for record in records if "job" in record]
    assert job["keys"] == ["s3"] and job["action"] == "copy" and job["connector"] == "archive"
    assert (job["files"], job["bytes"], job["result"]) == (1, 2, "1 copied")
    assert job["seconds"] >= 0 and all(record["level"] for record in records)
