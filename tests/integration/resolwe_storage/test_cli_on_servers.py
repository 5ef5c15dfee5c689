"""``url`` and ``verify`` through the command line, on copies held by real S3 and GCS servers."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
from pathlib import Path

import crc32c
import pytest

from connectors.gcs import GCSConnector
from connectors.s3 import S3Connector
from resolwe_storage.cli import main
from tests.servers.moto import SECRET_KEY

DATA = b"reads of data-1\n" * 1000


@pytest.fixture
def config(
    tmp_path: Path,
    moto_server: str,
    s3_bucket: S3Connector,
    s3_credentials: Path,
    fake_gcs_server: str,
    gcs_bucket: str,
) -> Path:
    """Item ``data-1`` catalogued with OK copies on S3 and GCS, whose bytes are there."""
    gcs = GCSConnector("GCS", bucket=gcs_bucket, endpoint_url=fake_gcs_server)
    s3_bucket.write("items/data-1/reads.txt", io.BytesIO(DATA))
    gcs.write("items/data-1/reads.txt", io.BytesIO(DATA))
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
                "connectors": {
                    "S3": {
                        "connector": "s3",
                        "config": {
                            "priority": 0,
                            "bucket": s3_bucket.bucket,
                            "endpoint_url": moto_server,
                            "credentials": str(s3_credentials),
                            "region_name": "us-east-1",
                        },
                    },
                    "GCS": {
                        "connector": "gcs",
                        "config": {
                            "priority": 5,
                            "bucket": gcs_bucket,
                            "endpoint_url": fake_gcs_server,
                        },
                    },
                },
            }
        )
    )
    document = tmp_path / "items.json"
    locations = [
        {"connector": name, "url": "items/data-1", "status": "OK"} for name in ("S3", "GCS")
    ]
    files = [
        {
            "path": "reads.txt",
            "size": len(DATA),
            "md5": hashlib.md5(DATA).hexdigest(),
            "crc32c": f"{crc32c.crc32c(DATA):08x}",
        }
    ]
    item = {
        "key": "data-1",
        "status": "OK",
        "created": "2026-01-01T00:00:00Z",
        "locations": locations,
        "files": files,
    }
    document.write_text(json.dumps({"items": [item]}))
    assert main(["--config", str(path), "import", str(document)]) == 0
    return path


def test_a_presigned_s3_url_from_the_preferred_copy(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["--config", str(config), "url", "data-1", "reads.txt", "--expires", "120"]) == 0
    url = capsys.readouterr().out.strip()
    assert "X-Amz-Expires=120" in url and "X-Amz-Signature=" in url
    assert SECRET_KEY not in url
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.read() == DATA


def test_gcs_without_signing_credentials_is_one_clear_line(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["--config", str(config), "url", "data-1", "reads.txt", "--connector", "GCS"]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GCS" in err and "Traceback" not in err


@pytest.mark.parametrize("connector", ["S3", "GCS"])
def test_verify_a_copy_on_a_server(
    config: Path, capsys: pytest.CaptureFixture[str], connector: str
) -> None:
    capsys.readouterr()
    command = ["--config", str(config), "verify", "data-1", "--connector", connector, "--json"]
    assert main(command) == 0
    (report,) = json.loads(capsys.readouterr().out)
    assert (report["connector"], report["files"], report["ok"]) == (connector, 1, True)


def test_verify_reports_a_damaged_copy_on_s3(
    config: Path, s3_bucket: S3Connector, capsys: pytest.CaptureFixture[str]
) -> None:
    s3_bucket.write("items/data-1/reads.txt", io.BytesIO(DATA[:-1] + b"!"))
    capsys.readouterr()
    command = ["--config", str(config), "verify", "data-1", "--connector", "S3", "--json"]
    assert main(command) != 0
    (report,) = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "reads.txt" in json.dumps(report["problems"])
