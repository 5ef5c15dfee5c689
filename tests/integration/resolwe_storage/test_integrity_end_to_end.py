"""The audit's data-loss scenarios, through the command line, each command in its own process.

On SQLite and on PostgreSQL, with the copy on a second local folder, on S3
(moto_server) and on GCS (fake-gcs-server): a copy found bad, or gone
behind the system's back, never counts, no delete removes the last good
copy, and the damaged copy is repaired; a new version registered by ingest
or import makes the other copies stale, and they are repaired from it; a
delete never follows a link into another item.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import crc32c
import pytest

from connectors.base import Connector
from connectors.gcs import GCSConnector
from connectors.local import LocalConnector
from connectors.s3 import S3Connector
from tests.processes import Cli
from tests.servers.moto import REGION

LATER = "2030-01-01T00:00:00Z"
CONTENT = {"reads.txt": b"reads of item-1\n" * 300, "sub/log.txt": b"log of item-1\n"}


def target_settings(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[dict[str, Any], Connector]:
    """The connector ``target`` of ``kind``: its configuration, and a connector to harm it with."""
    if kind == "local":
        return (
            {"connector": "local", "config": {"path": str(tmp_path / "archive")}},
            LocalConnector("target", path=tmp_path / "archive"),
        )
    if kind == "s3":
        bucket: S3Connector = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("moto_server")
        credentials = request.getfixturevalue("s3_credentials")
        return (
            {
                "connector": "s3",
                "config": {
                    "bucket": bucket.bucket,
                    "endpoint_url": endpoint,
                    "credentials": str(credentials),
                    "region_name": REGION,
                },
            },
            bucket,
        )
    name = request.getfixturevalue("gcs_bucket")
    endpoint = request.getfixturevalue("fake_gcs_server")
    return (
        {"connector": "gcs", "config": {"bucket": name, "endpoint_url": endpoint}},
        GCSConnector("target", bucket=name, endpoint_url=endpoint),
    )


def write_config(
    tmp_path: Path, catalog_url: str, target: dict[str, Any], *, target_rules: dict[str, Any]
) -> Path:
    target["config"].update({"priority": 0, **target_rules})
    document = {
        "database": catalog_url,
        "connectors": {
            "local": {
                "connector": "local",
                "config": {
                    "priority": 10,
                    "path": str(tmp_path / "local"),
                    "public_url": "/local",
                    "delete": {"delay": 0, "min_other_copies": 1},
                },
            },
            "target": target,
        },
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def actions(cli: Cli, *args: str) -> dict[str, dict[str, int]]:
    """``run --once --json`` as a user runs it: the actions done, by action and result."""
    outcome = cli("run", "--once", "--json", *args)
    return dict(json.loads(outcome.out)["actions"])


def ingest_content(cli: Cli, tmp_path: Path) -> Path:
    """``CONTENT`` written as item ``item-1`` on ``local`` and ingested there; its folder."""
    folder = tmp_path / "local" / "item-1"
    for path, data in CONTENT.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(data)
    cli.ok("ingest", "local", folder, "--key", "item-1")
    return folder


def status_of(cli: Cli) -> dict[str, Any]:
    return dict(json.loads(cli.ok("status", "--json").out))


@pytest.mark.parametrize("kind", ["local", "s3", "gcs"])
def test_a_bad_copy_never_counts_and_the_last_good_copy_stays(
    kind: str, catalog_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings, target = target_settings(kind, tmp_path, request)
    cli = Cli(write_config(tmp_path, catalog_url, settings, target_rules={"copy": {"delay": 0}}))
    folder = ingest_content(cli, tmp_path)
    assert actions(cli) == {"copy": {"ok": 1}}

    # 1. Other bytes on the target: the verification names the file, the copy is damaged.
    target.write("item-1/reads.txt", io.BytesIO(b"X" * len(CONTENT["reads.txt"])))
    verified = cli("verify", "item-1", "--connector", "target", "--json")
    assert verified.code == 1 and "1 problem(s) in 1 copy(ies)" in verified.error_line
    [report] = json.loads(verified.out)
    assert report["status"] == "DM" and [p["path"] for p in report["problems"]] == ["reads.txt"]
    assert status_of(cli)["locations"]["target"] == {"DM": 1}
    # The delete of the local copy would leave no good copy: it is not even planned;
    # the damaged copy is repaired instead.
    planned = json.loads(cli.ok("plan", "--json", "--now", LATER).out)
    assert planned == [{"action": "repair", "key": "item-1", "source": "local", "target": "target"}]
    assert actions(cli, "--now", LATER) == {"repair": {"ok": 1}}
    with target.open_read("item-1/reads.txt") as stream:
        assert stream.read() == CONTENT["reads.txt"]
    assert (folder / "reads.txt").read_bytes() == CONTENT["reads.txt"]

    # 2. Gone behind the system's back, no verification run: the delete's confirmation finds it.
    target.delete("item-1/sub/log.txt")
    assert actions(cli, "--now", LATER) == {"delete": {"refused": 1}}
    assert (folder / "sub" / "log.txt").read_bytes() == CONTENT["sub/log.txt"]
    assert status_of(cli)["locations"] == {"local": {"OK": 1}, "target": {"DM": 1}}
    assert actions(cli, "--now", LATER) == {"repair": {"ok": 1}}
    # 3. Whole again and confirmed: now the local copy may go.
    assert actions(cli, "--now", LATER) == {"delete": {"ok": 1}}
    assert not folder.exists()
    for path, data in CONTENT.items():
        with target.open_read(f"item-1/{path}") as stream:
            assert stream.read() == data
    final = status_of(cli)
    assert (final["locations"], final["lost_items"]) == ({"target": {"OK": 1}}, 0)


def test_a_re_ingested_new_version_is_never_lost(catalog_url: str, tmp_path: Path) -> None:
    settings = {"connector": "local", "config": {"path": str(tmp_path / "archive")}}
    cli = Cli(write_config(tmp_path, catalog_url, settings, target_rules={"copy": {"delay": 0}}))
    folder = tmp_path / "local" / "item-1"
    folder.mkdir(parents=True)
    (folder / "result.txt").write_text("version 1\n")
    cli.ok("ingest", "local", folder, "--key", "item-1")
    assert actions(cli) == {"copy": {"ok": 1}}
    (folder / "result.txt").write_text("version 2, longer\n")
    assert "(updated)" in cli.ok("ingest", "local", folder, "--key", "item-1").out
    # The archive holds version 1: stale, damaged, not a copy.
    assert status_of(cli)["locations"]["target"] == {"DM": 1}
    explained = json.loads(cli.ok("plan", "--explain", "item-1", "--json", "--now", LATER).out)
    [archive] = [loc for loc in explained["locations"] if loc["connector"] == "target"]
    assert archive["damaged_files"] == ["result.txt"]
    assert actions(cli, "--now", LATER) == {"repair": {"ok": 1}}
    assert (tmp_path / "archive" / "item-1" / "result.txt").read_text() == "version 2, longer\n"
    assert actions(cli, "--now", LATER) == {"delete": {"ok": 1}}
    assert (tmp_path / "archive" / "item-1" / "result.txt").read_text() == "version 2, longer\n"


def test_an_imported_new_version_makes_the_other_copy_stale(
    catalog_url: str, tmp_path: Path
) -> None:
    settings = {"connector": "local", "config": {"path": str(tmp_path / "archive")}}
    cli = Cli(write_config(tmp_path, catalog_url, settings, target_rules={}))

    def document(data: bytes, *where: str) -> Path:
        path = tmp_path / "items.json"
        item = {
            "key": "item-1",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": name, "url": "item-1"} for name in where],
            "files": [
                {
                    "path": "a.txt",
                    "size": len(data),
                    "md5": hashlib.md5(data).hexdigest(),
                    "crc32c": f"{crc32c.crc32c(data):08x}",
                }
            ],
        }
        path.write_text(json.dumps({"items": [item]}))
        return path

    for name in ("local", "archive"):
        (tmp_path / name / "item-1").mkdir(parents=True)
        (tmp_path / name / "item-1" / "a.txt").write_bytes(b"one")
    cli.ok("import", document(b"one", "local", "target"))
    (tmp_path / "local" / "item-1" / "a.txt").write_bytes(b"two!")
    cli.ok("import", document(b"two!", "local"))
    assert status_of(cli)["locations"] == {"local": {"OK": 1}, "target": {"DM": 1}}
    assert actions(cli, "--now", LATER) == {"repair": {"ok": 1}}
    assert (tmp_path / "archive" / "item-1" / "a.txt").read_bytes() == b"two!"


def test_a_delete_never_follows_a_link_into_another_item(catalog_url: str, tmp_path: Path) -> None:
    settings = {"connector": "local", "config": {"path": str(tmp_path / "archive")}}
    rules = {"copy": {"delay": -1, "data_slug": {"copied": {"delay": 0}}}}
    cli = Cli(write_config(tmp_path, catalog_url, settings, target_rules=rules))
    local = tmp_path / "local"
    (local / "b").mkdir(parents=True)
    (local / "b" / "data.txt").write_bytes(b"b's only copy\n")
    (local / "a").mkdir()
    (local / "a" / "link.txt").symlink_to("../b/data.txt")
    data = b"b's only copy\n"
    file = {"size": len(data), "md5": hashlib.md5(data).hexdigest()}
    document = tmp_path / "items.json"
    document.write_text(
        json.dumps(
            {
                "items": [
                    {
                        "key": key,
                        "data_slug": slug,
                        "created": "2026-01-01T00:00:00Z",
                        "locations": [{"connector": "local", "url": key}],
                        "files": [{"path": path, **file}],
                    }
                    for key, slug, path in (("a", "copied", "link.txt"), ("b", "", "data.txt"))
                ]
            }
        )
    )
    cli.ok("import", document)
    assert actions(cli) == {"copy": {"ok": 1}}
    assert actions(cli, "--now", LATER) == {"delete": {"ok": 1}}
    assert not (local / "a").exists()
    assert (local / "b" / "data.txt").read_bytes() == data
    assert status_of(cli)["locations"]["local"] == {"OK": 1}
