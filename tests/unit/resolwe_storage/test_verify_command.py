"""``verify`` in a process of its own: what it found, and what it could not read."""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import ingested_sample


def test_verify_lists_what_it_found_before_a_copy_it_could_not_read(tmp_path: Path) -> None:
    """``local`` is found damaged (and recorded so); then ``archive`` cannot be read.
    The command lists local's problem, and its one error line says both."""
    cli, folder = ingested_sample(tmp_path, {"reads.fastq": b"ACGT\n" * 100}, copy={"delay": 0})
    cli.ok("run", "--once")
    (folder / "reads.fastq").write_bytes(b"ACGx\n" * 100)
    (tmp_path / "archive").rename(tmp_path / "archive.unmounted")

    outcome = cli("verify", "sample-1")
    assert "reads.fastq: crc32c" in outcome.out
    line = outcome.error_line
    assert "1 problem(s) in 1 copy(ies)" in line
    assert "archive: could not verify (nothing concluded)" in line
    story = json.loads(cli.ok("show", "sample-1", "--json").out)
    assert {loc["connector"]: loc["status"] for loc in story["locations"]} == {
        "archive": "OK",
        "local": "DM",
    }
