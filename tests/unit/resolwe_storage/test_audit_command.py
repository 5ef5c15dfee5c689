"""``audit`` in a process of its own: found, recorded, repaired by the next run; dark objects."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from tests.processes import Cli, ingested_sample, local_pair


def test_a_file_removed_behind_the_systems_back_is_found_and_repaired(tmp_path: Path) -> None:
    cli, _ = ingested_sample(
        tmp_path, {"reads.fastq": b"ACGT\n" * 100, "counts.tsv": b"a\t1\n"}, copy={"delay": 0}
    )
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


def test_a_connector_whose_root_is_not_mounted_is_out_of_reach_not_lost(tmp_path: Path) -> None:
    """The archive's volume is not mounted: its root folder is not there. ``verify``
    and ``audit`` say they could not read it, and the copy there still counts."""
    cli, _ = ingested_sample(tmp_path, {"reads.fastq": b"ACGT\n" * 100}, copy={"delay": 0})
    cli.ok("run", "--once")
    (tmp_path / "archive").rename(tmp_path / "archive.unmounted")

    outcome = cli("verify", "sample-1", "--connector", "archive")
    assert "could not verify (nothing concluded)" in outcome.error_line
    assert "local root" in outcome.error_line and "not mounted?" in outcome.error_line
    outcome = cli("audit", "archive")
    assert "the audit stopped, nothing more concluded" in outcome.error_line
    status = json.loads(cli.ok("status", "--json").out)
    assert status["locations"]["archive"] == {"OK": 1}
    assert status["damaged_locations"] == 0 and status["lost_items"] == 0
    story = json.loads(cli.ok("show", "sample-1", "--json").out)
    assert [loc["status"] for loc in story["locations"]] == ["OK", "OK"]


def test_an_audit_that_finds_the_last_good_copy_gone_says_the_item_is_lost(
    tmp_path: Path,
) -> None:
    """The only copy of ``sample-1`` lost a file behind the system's back: no copy
    is left to repair it from. The audit names the item LOST (its exit, its JSON,
    the history), and does not promise a repair; ``sample-2``, whose copy on
    ``archive`` is whole, is repaired and is not lost."""
    config = local_pair(tmp_path)
    cli = Cli(config)
    for key in ("sample-1", "sample-2"):
        folder = tmp_path / "local" / key
        folder.mkdir(parents=True)
        (folder / "reads.fastq").write_bytes(b"ACGT\n" * 100)
        (folder / "counts.tsv").write_bytes(b"a\t1\n")
        cli.ok("ingest", "local", folder, "--key", key)
    archived = tmp_path / "archive" / "sample-2"
    archived.mkdir(parents=True)
    for name in ("reads.fastq", "counts.tsv"):
        (archived / name).write_bytes((tmp_path / "local" / "sample-2" / name).read_bytes())
    cli.ok("ingest", "archive", archived, "--key", "sample-2")
    (tmp_path / "local" / "sample-1" / "reads.fastq").unlink()
    (tmp_path / "local" / "sample-2" / "reads.fastq").unlink()

    outcome = cli("audit", "local")
    line = outcome.error_line
    assert line.startswith("error: 2 lost and 0 mismatched file(s)")
    assert "LOST" in line and "sample-1 (reads.fastq)" in line
    assert "sample-2 (" not in line
    shown = json.loads(cli("audit", "local", "--json").out)
    assert shown["lost_items"] == [{"key": "sample-1", "files": ["reads.fastq"]}]
    [audited] = json.loads(cli.ok("history", "sample-1", "--action", "audit", "--json").out)[:1]
    assert "LOST: no good copy anywhere of reads.fastq" in audited["error"]
