"""A local connector whose root is not there (its volume not mounted), each command in a process.

Nothing is concluded about the bytes (SPEC §3): a verification or an audit
says it could not conclude, in one ``error:`` line, and records nothing bad; the
confirmation before a delete does not count the copy, nor mark it damaged;
nothing is written into the mount point. A root that was never made is
made by the first copy into it, as the embedded default relies on.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.resolwe_storage.test_integrity_end_to_end import (
    CONTENT,
    LATER,
    ingest_content,
    status_of,
    write_config,
)
from tests.processes import Cli


def test_a_copy_on_a_missing_root_is_never_judged_missing(catalog_url: str, tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    settings = {"connector": "local", "config": {"path": str(archive)}}
    cli = Cli(write_config(tmp_path, catalog_url, settings, target_rules={"copy": {"delay": 0}}))
    folder = ingest_content(cli, tmp_path)

    # The first copy into a root never made makes it.
    assert not archive.exists()
    copied = cli.ok("run", "--once", "--json")
    assert json.loads(copied.out)["actions"] == {"copy": {"ok": 1}}
    assert (archive / "item-1" / "reads.txt").read_bytes() == CONTENT["reads.txt"]

    # The archive's volume is not mounted: its root is gone.
    away = tmp_path / "archive-unmounted"
    archive.rename(away)
    verified = cli("verify", "item-1", "--connector", "target")
    line = verified.error_line
    assert f"local root {archive} does not exist (not mounted?)" in line, line
    assert "nothing concluded" in line, line
    audited = cli("audit", "target").error_line
    assert f"local root {archive} does not exist (not mounted?)" in audited, audited
    assert status_of(cli)["locations"] == {"local": {"OK": 1}, "target": {"OK": 1}}

    # The delete of the local copy confirms the archive first: it does not go.
    ran = cli("run", "--once", "--json", "--now", LATER)
    assert "Traceback" not in ran.err
    assert (folder / "reads.txt").read_bytes() == CONTENT["reads.txt"]
    assert status_of(cli)["locations"] == {"local": {"OK": 1}, "target": {"OK": 1}}
    assert status_of(cli)["lost_items"] == 0
    assert not archive.exists(), "something was written into the mount point"

    # Mounted again: verified whole, and now the local copy may go.
    away.rename(archive)
    assert json.loads(cli.ok("verify", "item-1", "--connector", "target", "--json").out)[0]["ok"]
    done = cli.ok("run", "--once", "--json", "--now", LATER)
    assert json.loads(done.out)["actions"] == {"delete": {"ok": 1}}
    assert (archive / "item-1" / "sub" / "log.txt").read_bytes() == CONTENT["sub/log.txt"]
