"""``audit`` in a process of its own: found, recorded, repaired by the next run; dark objects."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.processes import Cli, local_pair


def test_a_file_removed_behind_the_systems_back_is_found_and_repaired(tmp_path: Path) -> None:
    config = local_pair(tmp_path, copy={"delay": 0})
    folder = tmp_path / "local" / "sample-1"
    folder.mkdir(parents=True)
    (folder / "reads.fastq").write_bytes(b"ACGT\n" * 100)
    (folder / "counts.tsv").write_bytes(b"a\t1\n")
    cli = Cli(config)
    cli.ok("ingest", "local", folder, "--key", "sample-1")
    cli.ok("run", "--once")
    assert json.loads(cli.ok("audit", "--json").out)["findings_total"] == 0

    archived = tmp_path / "archive" / "sample-1"
    (archived / "reads.fastq").unlink()
    (archived / "counts.tsv").write_bytes(b"changed\n")
    stray = tmp_path / "archive" / "leftover" / "part.tmp"
    stray.parent.mkdir()
    stray.write_bytes(b"old")
    moment = time.time() - 10 * 86400
    os.utime(stray, (moment, moment))

    report = tmp_path / "findings.jsonl"
    outcome = cli("audit", "archive", "--report", report)
    assert outcome.error_line.startswith("error: 1 lost and 1 mismatched file(s)")
    assert "archive: 2 object(s), 2 file(s) expected: 1 lost, 1 mismatched, 1 dark" in outcome.out
    assert "dark: leftover/part.tmp (3 bytes" in outcome.out
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert sorted(line["kind"] for line in lines) == ["dark", "lost", "mismatched"]
    story = json.loads(cli.ok("show", "sample-1", "--json").out)
    [archive] = [loc for loc in story["locations"] if loc["connector"] == "archive"]
    assert archive["status"] == "DM"

    cli.ok("run", "--once")  # the scan repairs the damaged copy from local
    assert (archived / "reads.fastq").read_bytes() == b"ACGT\n" * 100
    assert (archived / "counts.tsv").read_bytes() == b"a\t1\n"
    shown = json.loads(cli.ok("audit", "--json").out)
    assert [
        (c["connector"], c["lost"], c["mismatched"], c["dark"]) for c in shown["connectors"]
    ] == [
        ("local", 0, 0, 0),
        ("archive", 0, 0, 1),
    ]
    assert stray.exists()  # reported, never removed unasked

    assert "go together" in cli("audit", "--delete-dark").error_line
    assert "not configured" in cli("audit", "nowhere").error_line
    removed = json.loads(cli.ok("audit", "--delete-dark", "--older-than", "7", "--json").out)
    assert removed["connectors"][1]["dark_deleted"] == 1 and not stray.exists()
    history = json.loads(cli.ok("history", "--action", "delete dark", "--json").out)
    assert [row["path"] for row in history] == ["leftover/part.tmp"]
