"""``show`` and ``history``, each in a process of its own, after a real copy by ``run --once``."""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import ingested_sample


def test_show_and_history_tell_what_happened_to_an_item(tmp_path: Path) -> None:
    cli, _ = ingested_sample(
        tmp_path, {"reads.fastq": b"ACGT\n" * 10, "deep/counts.tsv": b"a\t1\n"}, copy={"delay": 0}
    )
    cli.ok("run", "--once")

    story = json.loads(cli.ok("show", "sample-1", "--json").out)
    assert [entry["path"] for entry in story["files"]] == ["deep/counts.tsv", "reads.fastq"]
    locations = {loc["connector"]: loc for loc in story["locations"]}
    assert locations["archive"]["status"] == "OK"
    assert {state["state"] for state in locations["archive"]["files"].values()} == {"good"}
    assert {state["by"] for state in locations["archive"]["files"].values()} != {None}
    assert [row["action"] for row in story["history"]].count("copy") >= 1

    text = cli.ok("show", "sample-1").out
    assert "item 'sample-1': status OK" in text
    assert "location archive:sample-1: OK (ok)" in text
    assert "files: 2 good" in text
    assert " copy 'sample-1' local -> archive" in text

    actions = json.loads(cli.ok("history", "sample-1", "--json").out)
    assert actions and all(row["key"] == "sample-1" for row in actions)
    assert json.loads(cli.ok("history", "--failed", "--json").out) == []
    assert json.loads(cli.ok("history", "--action", "delete", "--json").out) == []
    later = json.loads(cli.ok("history", "--since", "2999-01-01", "--json").out)
    assert later == []
    assert "history of 'sample-1':" in cli.ok("history", "sample-1").out
    mistyped = cli.ok("history", "--action", "coppy").out.splitlines()
    assert mistyped[0] == "history: nothing recorded"
    assert mistyped[1].startswith("no 'coppy' action recorded yet; the history holds: ")
    assert "'copy'" in mistyped[1]

    assert "no item with key 'nope'" in cli("show", "nope").error_line
    assert cli("history", "--since", "yesterday").error_line.startswith("error: --since:")


def test_show_and_history_pass_no_terminal_escape_of_a_producers_file_name(
    tmp_path: Path,
) -> None:
    """A file named with escapes (OSC 52 writes the clipboard, CSI 2J clears the screen)."""
    name = "a\x1b]52;c;cHduZWQ=\x07\x1b[2J\rb.txt"
    cli, folder = ingested_sample(tmp_path, {name: b"x"})
    (folder / name).unlink()
    verified = cli("verify", "sample-1").err  # the path is in the error text too
    assert "LOST" in verified and "\x1b" not in verified and "\r" not in verified, verified
    for command in (("show", "sample-1"), ("history", "sample-1")):
        out = cli.ok(*command).out
        assert "\x1b" not in out and "\x07" not in out and "\r" not in out, (command, out)
        assert "a\\x1b]52;c;cHduZWQ=\\x07\\x1b[2J\\rb.txt" in out, (command, out)
