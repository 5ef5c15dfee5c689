"""Every command in a process of its own, as users run it; and with its servers out of reach.

No command may depend on an earlier one having opened the catalog in the
same process. With the broker or the database unreachable, every command
says so in one ``error:`` line, exits non-zero, and leaves nothing reserved.
"""

from __future__ import annotations

import json
import shlex
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import Cli, copying_pair
from tests.servers.process import free_port

pytest_plugins = ["tests.servers.redis"]


def write_config(tmp_path: Path, *, broker: str | None, database: str | None = None) -> Path:
    return copying_pair(
        tmp_path,
        broker=broker,
        database=database,
        local={"public_url": "/pub"},
        archive={"verify": {"interval": 30}},
    )


def item_folder(tmp_path: Path, key: str) -> Path:
    folder = tmp_path / "local" / key
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text(f"a of {key}\n")
    return folder


def test_every_command_in_a_process_of_its_own(tmp_path: Path, redis_url: str) -> None:
    cli = Cli(write_config(tmp_path, broker=redis_url))
    assert "Usage" in cli.ok("--help").out
    assert cli.ok("--version").out.strip()
    assert "migration" in cli.ok("migrate").out
    cli.ok("ingest", "local", item_folder(tmp_path, "item-1"), "--key", "item-1")
    document = tmp_path / "items.json"
    document.write_text(
        json.dumps(
            {"items": [{"key": "item-2", "created": "2026-01-01T00:00:00Z", "locations": []}]}
        )
    )
    assert json.loads(cli.ok("import", document, "--json").out)["created"] == 1
    assert "copy" in cli.ok("plan").out
    assert json.loads(cli.ok("plan", "--json").out)[0]["action"] == "copy"
    assert json.loads(cli.ok("plan", "--explain", "item-1", "--json").out)["key"] == "item-1"
    assert "items: 2" in cli.ok("status").out
    assert cli.ok("url", "item-1", "a.txt").out.strip() == "/pub/item-1/a.txt"
    assert json.loads(cli.ok("verify", "item-1", "--json").out)[0]["ok"] is True
    assert json.loads(cli.ok("scan", "--json").out)["copies"] == 1
    assert "copy" in cli.ok("queues").out
    worker = cli.start("worker", "--threads", "2", log=tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        while json.loads(cli.ok("status", "--json").out)["locations"].get("archive") != {"OK": 1}:
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.3)
        # A validated copy is a verification: nothing is due to read it back.
        assert json.loads(cli.ok("plan", "--json").out) == []
        cli.ok("request", "verify", "item-1", "--connector", "archive")
        cli.ok("scheduler", "--once")
        assert json.loads(cli.ok("queues", "--json").out)["workers"] >= 1
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()
    log = (tmp_path / "worker.log").read_text()
    assert "Traceback" not in log and "CRITICAL" not in log
    cli.ok("ingest", "local", item_folder(tmp_path, "item-3"), "--key", "item-3")
    assert (
        json.loads(cli.ok("request", "copy", "item-3", "--to", "archive", "--json").out)["jobs"]
        == 1
    )
    cli.ok("queues", "--retry-dead")
    cli.ok("run", "--once")
    assert json.loads(cli.ok("status", "--json").out)["locations"]["archive"] == {"OK": 2}


@pytest.fixture
def unreachable_broker() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize(
    "args",
    [
        ["scan"],
        ["scheduler", "--once"],
        ["request", "copy", "item-1", "--to", "archive"],
        ["request", "verify", "item-1"],
        ["run", "--once"],
        ["queues"],
    ],
    ids=lambda args: " ".join(args),
)
def test_an_unreachable_broker_is_one_line_and_reserves_nothing(
    tmp_path: Path, unreachable_broker: str, args: list[str]
) -> None:
    cli = Cli(write_config(tmp_path, broker=unreachable_broker))
    cli.ok("ingest", "local", item_folder(tmp_path, "item-1"), "--key", "item-1")
    line = cli(*args).error_line
    assert "127.0.0.1" in line and ("did not answer" in line or "not run" in line), line
    with sqlite3.connect(tmp_path / "catalog.sqlite3") as connection:
        statuses = connection.execute("SELECT connector_name, status FROM storage_location")
        assert statuses.fetchall() == [("local", "OK")]
    # Once the broker is back, nothing blocks the copy: it is planned again.
    assert json.loads(cli.ok("plan", "--json").out) == [
        {"action": "copy", "key": "item-1", "source": "local", "target": "archive"}
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["import", "items.json"],
        ["plan"],
        ["plan", "--explain", "item-1"],
        ["status"],
        ["verify", "item-1"],
        ["url", "item-1", "a.txt"],
        ["scan"],
        ["run", "--once"],
        ["request", "copy", "item-1", "--to", "archive"],
        ["ingest", "local", "local/item-1", "--key", "item-1"],
    ],
    ids=lambda args: " ".join(args),
)
def test_an_unreachable_database_is_one_line(
    tmp_path: Path, unreachable_broker: str, args: list[str]
) -> None:
    database = f"postgresql://postgres:secret-pw@127.0.0.1:{free_port()}/catalog"
    cli = Cli(write_config(tmp_path, broker=unreachable_broker, database=database))
    item_folder(tmp_path, "item-1")
    (tmp_path / "items.json").write_text('{"items": []}')
    line = cli(*args).error_line
    assert line.startswith("error: database: cannot open postgresql://postgres:***@"), line
    assert "secret-pw" not in line


def test_a_nul_in_a_key_is_one_line_on_either_catalog(tmp_path: Path, catalog_url: str) -> None:
    cli = Cli(write_config(tmp_path, broker=None, database=catalog_url))
    document = tmp_path / "items.json"
    document.write_text(
        json.dumps({"items": [{"key": "a\u0000b", "created": "2026-01-01T00:00:00Z"}]})
    )
    line = cli("import", document).error_line
    assert "items.0.key" in line and "NUL character" in line
    assert json.loads(cli.ok("status", "--json").out)["items"]["total"] == 0


def test_import_reads_json_lines_by_extension_and_counts_what_it_did(tmp_path: Path) -> None:
    cli = Cli(write_config(tmp_path, broker=None))
    items = [
        {
            "key": f"line-{n}",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": f"line-{n}", "open_access_logs": n}],
            "files": [{"path": "f.txt", "size": n, "md5": f"{n:032x}"}],
        }
        for n in range(3)
    ]
    lines = tmp_path / "items.jsonl"
    lines.write_text("\n".join(json.dumps(item) for item in items) + "\n")
    assert json.loads(cli.ok("import", lines, "--json").out) == {
        "created": 3,
        "updated": 0,
        "unchanged": 0,
    }
    assert json.loads(cli.ok("import", lines, "--json").out)["unchanged"] == 3
    document = tmp_path / "items.txt"  # no telling extension: --format says
    document.write_text("\n".join(json.dumps({**item, "status": "ER"}) for item in items))
    assert cli("import", document).code != 0  # read as one JSON document: not one
    outcome = cli.ok("import", document, "--format", "jsonl")
    assert outcome.out.strip() == "imported: 0 created, 3 updated, 0 unchanged"
    shown = json.loads(cli.ok("show", "line-2", "--json").out)
    assert shown["status"] == "ER" and len(shown["locations"][0]["locks"]) == 2


def test_an_import_of_many_batches_reads_them_in_a_process_of_its_own(tmp_path: Path) -> None:
    # Past the first batch (2,000 items) the items are read and checked in a
    # forked process: its problems, a file or a pipe, all as before.
    cli = Cli(write_config(tmp_path, broker=None))
    items = [
        {
            "key": f"many-{n}",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": f"many-{n}", "open_access_logs": n % 2}],
            "files": [{"path": "f.txt", "size": n, "crc32c": f"{n:08x}"}],
        }
        for n in range(4_500)
    ]
    lines = tmp_path / "items.jsonl"
    bad = [*items[:4_399], {**items[4_399], "locations": [{"connector": "GCS", "url": "x"}]}]
    lines.write_text("".join(json.dumps(item) + "\n" for item in [*bad, *items[4_400:]]))
    assert cli("import", lines).error_line == (
        "error: line 4400.locations.0.connector: 'GCS' is not a configured connector "
        "(configured: archive, local)"
    )
    lines.write_text("".join(json.dumps(item) + "\n" for item in [*items, items[2_500]]))
    assert cli("import", lines).error_line == (
        "error: line 4501.key: appears twice (also line 2501)"
    )
    assert json.loads(cli.ok("status", "--json").out)["items"]["total"] == 0
    document = json.dumps({"items": items}, indent=1)
    piped = subprocess.run(
        [*cli.command("import", "-", "--json")],
        input=document,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == {"created": 4_500, "updated": 0, "unchanged": 0}
    shown = json.loads(cli.ok("show", "many-4499", "--json").out)
    assert len(shown["locations"][0]["locks"]) == 1
    assert shown["files"][0]["crc32c"] == f"{4_499:08x}"


def test_an_import_refuses_a_location_inside_another_items(tmp_path: Path) -> None:
    # Item "a" with file "b/x.txt" and item "a/b" with file "x.txt" name one
    # object, local:a/b/x.txt: a delete of either copy would remove the other's.
    cli = Cli(write_config(tmp_path, broker=None))
    first = {
        "key": "a",
        "created": "2026-01-01T00:00:00Z",
        "locations": [{"connector": "local", "url": "a"}],
        "files": [{"path": "b/x.txt", "size": 3}],
    }
    second = {**first, "key": "a/b", "locations": [{"connector": "local", "url": "a/b"}]}
    second["files"] = [{"path": "x.txt", "size": 3}]
    document = tmp_path / "items.json"
    document.write_text(json.dumps({"items": [first, second]}))
    assert cli("import", document).error_line == (
        "error: items.1.locations.0: local:a/b lies inside item 'a''s location local:a"
    )
    assert json.loads(cli.ok("status", "--json").out)["items"]["total"] == 0
    document.write_text(json.dumps({"items": [second]}))
    assert json.loads(cli.ok("import", document, "--json").out)["created"] == 1
    document.write_text(json.dumps({"items": [first]}))
    assert cli("import", document).error_line == (
        "error: items.0.locations.0: local:a lies around item 'a/b''s location local:a/b"
    )
    assert json.loads(cli.ok("status", "--json").out)["items"]["total"] == 1


def test_an_import_again_passes_over_the_items_whose_text_did_not_change(
    tmp_path: Path,
) -> None:
    cli = Cli(write_config(tmp_path, broker=None))
    items = [
        {
            "key": f"same-{n}",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": f"same-{n}"}],
            "files": [{"path": "f.txt", "size": n}],
        }
        for n in range(3)
    ]
    for name, lines in (("items.jsonl", True), ("items.json", False)):
        document = tmp_path / name
        document.write_text(
            "\n".join(json.dumps(item) for item in items) + "\n"
            if lines
            else json.dumps({"items": items}, indent=2)
        )
        cli.ok("import", document)
        # The catalog's last accesses set earlier than the document's (a later
        # one recorded here would stand whatever a document says).
        with sqlite3.connect(tmp_path / "catalog.sqlite3") as catalog:
            catalog.execute("UPDATE storage_location SET last_update = '2025-06-01 00:00:00'")
        catalog.close()
        items[0]["files"][0]["size"] += 10  # a new version of one
        document.write_text(
            "\n".join(json.dumps(item) for item in items) + "\n"
            if lines
            else json.dumps({"items": items}, indent=2)
        )
        outcome = cli.ok("import", document, "--json")
        assert json.loads(outcome.out) == {"created": 0, "updated": 1, "unchanged": 2}
        accessed = {
            key: json.loads(cli.ok("show", key, "--json").out)["locations"][0]["last_access"]
            for key in ("same-0", "same-1")
        }
        assert accessed["same-0"].startswith("2026-01-01")  # looked at: the document's
        assert accessed["same-1"].startswith("2025-06-01")  # passed over: the catalog's


def test_export_piped_into_import_of_an_empty_catalog_round_trips(tmp_path: Path) -> None:
    source = Cli(write_config(tmp_path, broker=None))
    for key in ("a", "b"):
        source.ok("ingest", "local", item_folder(tmp_path, key), "--key", key)
    source.ok("run", "--once")  # copied to archive and proven there
    target_folder = tmp_path / "target"
    target_folder.mkdir()
    target = Cli(write_config(target_folder, broker=None))
    pipe = subprocess.run(
        f"{shlex.join(source.command('export'))} | {shlex.join(target.command('import', '-'))}",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert pipe.returncode == 0, pipe.stderr
    assert pipe.stdout.strip() == "imported: 2 created, 0 updated, 0 unchanged"
    assert target.ok("export").out == source.ok("export").out
    lines = tmp_path / "out" / "all.jsonl"
    assert source("export", lines).error_line == f"error: {lines}: No such file or directory"
    assert not lines.parent.exists()
    lines.parent.mkdir()
    source.ok("export", lines)
    assert [json.loads(line)["key"] for line in lines.read_text().splitlines()] == ["a", "b"]
    assert not list(lines.parent.glob("*.partial"))
