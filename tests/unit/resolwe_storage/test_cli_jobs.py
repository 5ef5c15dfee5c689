"""The job commands on the embedded default: ``run --once``, and what needs a broker."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
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


def _many_items(root: Path, count: int, *, missing: int | None = None) -> Path:
    """``count`` items of one file each under ``local``, and their import document."""
    items = []
    for number in range(count):
        folder = root / "local" / f"many-{number:03d}"
        folder.mkdir(parents=True)
        data = f"item {number}\n".encode()
        if number != missing:
            (folder / "a.txt").write_bytes(data)
        items.append(
            {
                "key": f"many-{number:03d}",
                "status": "OK",
                "created": "2026-01-01T00:00:00Z",
                "locations": [{"connector": "local", "url": f"many-{number:03d}", "status": "OK"}],
                "files": [{"path": "a.txt", "size": len(data)}],
            }
        )
    document = root / "many.json"
    document.write_text(json.dumps({"items": items}))
    return document


def _processes(root: Path, config: str, *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESOLWE_STORAGE_")}
    base = [sys.executable, "-m", "resolwe_storage", "--config", config]
    return subprocess.run(
        [*base, *args], capture_output=True, text=True, timeout=120, env=environ, check=False
    )


def test_run_once_shares_the_jobs_among_processes(config: str, tmp_path: Path) -> None:
    """Each process runs its share; every copy is made once, validated and recorded."""
    assert _processes(tmp_path, config, "import", str(_many_items(tmp_path, 300))).returncode == 0
    done = _processes(
        tmp_path,
        config,
        *("--log-level", "info", "--log-format", "json"),
        *("run", "--once", "--json", "--processes", "2", "--threads", "2"),
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    # A job for each process (the one-shot cut), not three of 128 files at most.
    assert outcome["scan"]["copies"] == 300 and outcome["scan"]["jobs"] == 2
    assert outcome["actions"] == {"copy": {"ok": 300}}
    assert outcome["failed"] == [] and outcome["lost"] == []
    records = [json.loads(line) for line in done.stderr.splitlines()]
    jobs = [record for record in records if "job" in record]
    assert len(jobs) == outcome["scan"]["jobs"]
    assert len({record["process"] for record in jobs}) == 2, "both processes ran jobs"
    # The 2 threads are shared: one each, so each process ran its jobs one by one.
    for pid in {record["process"] for record in jobs}:
        ends = sorted(
            (datetime.fromisoformat(record["time"]).timestamp(), record["job"]["seconds"])
            for record in jobs
            if record["process"] == pid
        )
        for (before, _), (after, seconds) in itertools.pairwise(ends):
            assert after - seconds >= before - 0.01, ends
    for number in range(300):
        copied = tmp_path / "archive" / f"many-{number:03d}" / "a.txt"
        assert copied.read_bytes() == f"item {number}\n".encode()
    status = json.loads(_processes(tmp_path, config, "status", "--json").stdout)
    assert status["locations"]["archive"] == {"OK": 300}


def test_run_once_in_processes_reports_a_failure_as_one_line(config: str, tmp_path: Path) -> None:
    assert _processes(tmp_path, config, "import", str(_many_items(tmp_path, 300, missing=7)))
    done = _processes(tmp_path, config, "run", "--once", "--processes", "2")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith("error: 1 job(s) failed for good, first: copy")
    assert "many-007" in done.stderr.splitlines()[-1]
    status = json.loads(_processes(tmp_path, config, "status", "--json").stdout)
    # The other process's job, and the files of this one before the missing one.
    assert status["locations"]["archive"]["OK"] >= 150 + 7


def test_processes_are_for_run_once(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(config, "run", "--processes", "2") == 1
    assert (
        capsys.readouterr().err
        == "error: --processes is for run --once; a running run is one process\n"
    )


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _state(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict; empty once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def test_a_sigterm_to_run_once_goes_on_to_its_processes(config: str, tmp_path: Path) -> None:
    """Both shares are held (SIGSTOP) mid-run; the SIGTERM to the run is found pending on
    each, and the run waits for them: let go, they end their jobs under way, then it ends."""
    assert _processes(tmp_path, config, "import", str(_many_items(tmp_path, 1000))).returncode == 0
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RESOLWE_STORAGE_")}
    command = [sys.executable, "-m", "resolwe_storage", "--config", config]
    run = subprocess.Popen(
        [*command, "run", "--once", "--processes", "2", "--threads", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=environ,
    )
    shares: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(shares) < 2:
            for pid in _children(run.pid):
                if pid not in shares:
                    os.kill(pid, signal.SIGSTOP)  # held before its 500 files are done
                    shares.append(pid)
            assert run.poll() is None and time.monotonic() < deadline, "no two shares seen"
            time.sleep(0.002)
        run.send_signal(signal.SIGTERM)

        def told(pid: int) -> bool:
            return bool(int(_state(pid).get("ShdPnd", "0"), 16) & (1 << (signal.SIGTERM - 1)))

        deadline = time.monotonic() + 30
        while not all(told(pid) for pid in shares):
            assert time.monotonic() < deadline, "a share was not told"
            time.sleep(0.02)
        assert run.poll() is None, "run --once ended before its shares"
        for pid in shares:
            os.kill(pid, signal.SIGCONT)  # the SIGTERM it holds now stops it
        assert run.wait(60) == 1  # "stopped by SIGTERM", once both ended
        deadline = time.monotonic() + 30
        while any(_state(pid).get("State", "Z").startswith(("R", "S", "D", "T")) for pid in shares):
            assert time.monotonic() < deadline, "a share outlived run --once"
            time.sleep(0.02)
    finally:
        for pid in shares:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if run.poll() is None:
            run.kill()
