"""Files and folders named with unusual characters, end to end, each command in its own process.

On SQLite and on PostgreSQL, with the copy on a second local folder, on S3
(moto_server) and on GCS (fake-gcs-server): an item whose folder and files
are named with characters that URLs, shells and filesystems treat apart is
copied, audited (nothing lost, nothing dark), given URLs that serve its
bytes, and its local copy deleted once the other is confirmed. A file
that only looks like the local connector's temporary files is data too.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.connector_conformance import UNUSUAL_NAMES
from tests.integration.resolwe_storage.test_integrity_end_to_end import (
    LATER,
    actions,
    status_of,
    target_settings,
    write_config,
)
from tests.processes import Cli, local_pair

#: The item's folder under the local root: its url on every connector.
FOLDER = "it em #1%20+?&=;@!$'()*,~ é 日本 😀"
#: Its files: the conformance suite's names, one of 250 bytes, a few in the folder itself.
FILES = [
    *UNUSUAL_NAMES,
    "1:x",
    "sub dir/" + "n" * 250,
    "a-b/x",
    "a/x",
    "a.txt",
    "-x/.dot",
]
#: A second item whose url begins as a drive would, but with a digit: a relative path.
OTHER = "1:item"


def audited(cli: Cli, connector: str) -> dict[str, Any]:
    report = json.loads(cli.ok("audit", connector, "--json").out)
    [counts] = report["connectors"]
    return dict(counts)


@pytest.mark.parametrize("kind", ["local", "s3", "gcs"])
def test_unusual_names_are_copied_audited_given_urls_and_deleted(
    kind: str, catalog_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings, target = target_settings(kind, tmp_path, request)
    cli = Cli(write_config(tmp_path, catalog_url, settings, target_rules={"copy": {"delay": 0}}))
    content = {path: f"bytes of {path}\n".encode() * 3 for path in FILES}
    for path, data in content.items():
        (tmp_path / "local" / FOLDER / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "local" / FOLDER / path).write_bytes(data)
    (tmp_path / "local" / OTHER).mkdir()
    (tmp_path / "local" / OTHER / "f").write_bytes(b"other")
    cli.ok("ingest", "local", tmp_path / "local" / FOLDER, "--key", "item-1")
    cli.ok("ingest", "local", tmp_path / "local" / OTHER, "--key", "item-2")

    assert actions(cli) == {"copy": {"ok": 2}}
    assert status_of(cli)["locations"] == {"local": {"OK": 2}, "target": {"OK": 2}}
    for connector in ("local", "target"):
        counts = audited(cli, connector)
        assert (counts["expected"], counts["objects"]) == (len(FILES) + 1, len(FILES) + 1)
        assert (counts["lost"], counts["mismatched"], counts["dark"]) == (0, 0, 0)

    # Every file's URL: a public one percent-encoded, a presigned one that serves its bytes.
    for path, data in content.items():
        local = cli.ok("url", "item-1", "--connector", "local", "--", path).out.strip()
        assert urllib.parse.unquote(local) == f"/local/{FOLDER}/{path}"
        assert urllib.parse.quote(urllib.parse.unquote(local)) == local
        if kind == "s3":
            url = cli.ok("url", "item-1", "--connector", "target", "--", path).out.strip()
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert answer.read() == data

    # The copy on the target is confirmed file by file: the local one may go.
    assert actions(cli, "--now", LATER) == {"delete": {"ok": 2}}
    assert not (tmp_path / "local" / FOLDER).exists()
    assert status_of(cli)["locations"] == {"target": {"OK": 2}}
    for path, data in content.items():
        with target.open_read(f"{FOLDER}/{path}") as stream:
            assert stream.read() == data
    counts = audited(cli, "target")
    assert (counts["lost"], counts["mismatched"], counts["dark"]) == (0, 0, 0)


def test_a_file_named_like_a_temporary_one_survives_an_audit(tmp_path: Path) -> None:
    """A producer's ``*.rs-partial`` written days ago is its data, not a dead writer's leftover."""
    cli = Cli(local_pair(tmp_path))
    folder = tmp_path / "local" / "item-1"
    folder.mkdir(parents=True)
    (folder / "model.rs-partial").write_bytes(b"the only copy")
    os.utime(folder / "model.rs-partial", (0, 0))
    cli.ok("ingest", "local", folder, "--key", "item-1")
    counts = audited(cli, "local")
    assert (counts["objects"], counts["lost"], counts["dark"]) == (1, 0, 0)
    assert (folder / "model.rs-partial").read_bytes() == b"the only copy"
