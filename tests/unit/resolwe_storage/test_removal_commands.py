"""Removing items the producer says are gone, each command in a process of its own.

``remove`` makes an item count nowhere; the next ``run --once`` deletes every
copy, the preferred and the last included, but not a locked one; the item's
rows go with its last copy, its history stays; ``restore`` undoes a removal
within the grace only.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import Cli, local_pair


def with_removal_delay(config: Path, days: int) -> Path:
    document = json.loads(config.read_text())
    document["removal"] = {"delay": days}
    config.write_text(json.dumps(document))
    return config


def ingest(cli: Cli, folder: Path, key: str) -> None:
    (folder / key).mkdir(parents=True)
    (folder / key / "reads.fastq").write_bytes(key.encode() * 100)
    cli.ok("ingest", "local", folder / key, "--key", key)


def test_a_removed_item_loses_every_copy_and_then_its_rows(tmp_path: Path) -> None:
    cli = Cli(local_pair(tmp_path, copy={"delay": 0}))
    for key in ("gone", "locked", "kept"):
        ingest(cli, tmp_path / "local", key)
    cli.ok("run", "--once")  # every item copied to archive
    assert (tmp_path / "archive" / "gone" / "reads.fastq").exists()
    # The producer still reads "locked" from local: a lock, as an import says.
    lock = {
        "key": "locked",
        "created": "2026-01-01T00:00:00Z",
        "locations": [
            {"connector": "local", "url": "locked", "status": "OK", "open_access_logs": 1}
        ],
    }
    (tmp_path / "lock.json").write_text(json.dumps({"items": [lock]}))
    cli.ok("import", "lock.json")

    assert "error: no item with key 'nope'" in cli("remove", "gone", "nope").error_line
    assert json.loads(cli.ok("show", "gone", "--json").out)["key"] == "gone"  # nothing removed
    removed = json.loads(cli.ok("remove", "gone", "locked", "--json").out)
    assert json.loads(cli.ok("status", "--json").out)["items"]["removed"] == 2
    assert "REMOVED" in cli.ok("show", "gone").out
    assert [(entry["key"], entry["new"]) for entry in removed] == [("gone", True), ("locked", True)]
    assert "was removed" in cli("url", "gone", "reads.fastq").error_line
    planned = json.loads(cli.ok("plan", "--json").out)
    assert [p for p in planned if p["key"] in ("gone", "locked")] == [
        {"action": "remove", "key": "gone", "connector": "archive"},
        {"action": "remove", "key": "gone", "connector": "local"},
        {"action": "remove", "key": "locked", "connector": "archive"},
    ]

    cli.ok("run", "--once")
    assert not (tmp_path / "local" / "gone").exists()
    assert not (tmp_path / "archive" / "gone").exists()
    assert "no item with key 'gone'" in cli("show", "gone").error_line
    history = json.loads(cli.ok("history", "gone", "--json").out)
    assert [row["action"] for row in history].count("remove") == 2
    # The locked copy waits for its lock; the other went.
    locked = json.loads(cli.ok("show", "locked", "--json").out)
    assert [loc["connector"] for loc in locked["locations"]] == ["local"]
    assert (tmp_path / "local" / "locked" / "reads.fastq").exists()
    # The item that was not removed is untouched.
    kept = json.loads(cli.ok("show", "kept", "--json").out)
    assert sorted(loc["connector"] for loc in kept["locations"]) == ["archive", "local"]


def test_restore_undoes_a_removal_within_the_grace_only(tmp_path: Path) -> None:
    config = with_removal_delay(local_pair(tmp_path, copy={"delay": 0}), 30)
    cli = Cli(config)
    ingest(cli, tmp_path / "local", "sample")
    cli.ok("remove", "sample")
    planned = json.loads(cli.ok("plan", "--json").out)
    assert planned == []  # removed: nothing due, not even its copy to archive, within the grace
    assert cli.ok("restore", "sample").out.startswith("restored 'sample'")
    assert "is not removed" in cli("restore", "sample").error_line
    assert json.loads(cli.ok("plan", "--json").out) == [
        {"action": "copy", "key": "sample", "source": "local", "target": "archive"}
    ]
    with_removal_delay(config, 0)
    cli.ok("remove", "sample")
    assert "its grace of 0 day(s) is over" in cli("restore", "sample").error_line


def test_an_import_document_can_remove_an_item(tmp_path: Path) -> None:
    cli = Cli(local_pair(tmp_path))
    ingest(cli, tmp_path / "local", "sample")
    (tmp_path / "gone.json").write_text(
        json.dumps({"items": [{"key": "sample", "created": "2026-01-01", "status": "removed"}]})
    )
    cli.ok("import", "gone.json")
    assert json.loads(cli.ok("plan", "--json").out) == [
        {"action": "remove", "key": "sample", "connector": "local"}
    ]
    story = json.loads(cli.ok("show", "sample", "--json").out)
    assert story["status"] == "OK"  # the producer's status is kept
