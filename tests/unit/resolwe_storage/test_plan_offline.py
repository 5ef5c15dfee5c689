"""Planning needs only the catalog: no storage backend, no credentials, no network."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from resolwe_storage.cli import main

CONFIG = """
database: sqlite:///{db}
connectors:
  local:
    connector: local
    config: {{priority: 0, path: {root}}}
  S3:
    connector: resolwe.storage.connectors.s3connector.AwsS3Connector
    config:
      bucket: no-such-bucket
      region_name: eu-central-1
      endpoint_url: http://203.0.113.1:9
      credentials: /nonexistent/credentials_s3.json
      role_arn: arn:aws:iam::123456789012:role/nothing
      copy: {{delay: 0}}
  GCS:
    connector: gcs
    config:
      bucket: no-such-bucket
      credentials: /nonexistent/credentials_gcs.json
      copy: {{delay: 0}}
"""

DOCUMENT = {
    "items": [
        {
            "key": "data-1",
            "created": "2026-01-01T00:00:00",
            "locations": [{"connector": "local", "url": "data-1"}],
        }
    ]
}


def test_plan_without_credentials_or_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(db=tmp_path / "c.sqlite3", root=tmp_path / "root"))
    document = tmp_path / "items.json"
    document.write_text(json.dumps(DOCUMENT))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"planning opened a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    assert main(["--config", str(config), "import", str(document)]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "plan", "--json", "--now", "2026-02-01"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == [
        {"action": "copy", "key": "data-1", "source": "local", "target": "GCS"},
        {"action": "copy", "key": "data-1", "source": "local", "target": "S3"},
    ]
