"""No secret in what a command prints or logs, and no delete past the pause; in processes.

Secrets: the password of a database URL or DSN, the signature of a
presigned URL (the caller's, on standard output, never in the log).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.processes import Cli, local_pair
from tests.servers.process import free_port

SECRET = "s3cr3tpw"


@pytest.mark.parametrize(
    "dsn",
    [
        # libpq quotes a token it cannot decode: here the password itself.
        f"postgresql://postgres:{SECRET}%zz@127.0.0.1:{{port}}/resolwe",
        # libpq quotes the whole URI it cannot parse.
        f"postgresql://postgres:{SECRET}@[::1]x/resolwe",
        # A key/value DSN, which psycopg2 takes as well as a URL.
        f"host=127.0.0.1 port={{port}} user=postgres password={SECRET} dbname=resolwe",
        f"host=127.0.0.1 port={{port}} user=postgres password='{SECRET}' dbname=resolwe",
    ],
    ids=["bad-percent-escape", "bad-uri", "key-value", "key-value-quoted"],
)
def test_from_resolwe_never_prints_the_dsn_password(tmp_path: Path, dsn: str) -> None:
    cli = Cli(local_pair(tmp_path))
    line = cli("import", "--from-resolwe", dsn.format(port=free_port())).error_line
    assert line.startswith("error: --from-resolwe "), line
    assert SECRET not in line, line


def test_from_resolwe_with_an_unparsable_url_is_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    cli = Cli(local_pair(tmp_path))
    line = cli("import", "--from-resolwe", f"postgresql://postgres:{SECRET}@[::1/db").error_line
    assert line.startswith("error: --from-resolwe "), line
    assert SECRET not in line, line


def s3_config(folder: Path) -> Path:
    """An S3 connector (nothing listens there: signing is local), item data-1 on it."""
    credentials = folder / "credentials.json"
    credentials.write_text(
        json.dumps({"AccessKeyId": "AKIAEXAMPLE000000001", "SecretAccessKey": "not-" + SECRET})
    )
    config = folder / "config.json"
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{folder / 'catalog.sqlite3'}",
                "connectors": {
                    "S3": {
                        "connector": "s3",
                        "config": {
                            "bucket": "bucket",
                            "endpoint_url": f"http://127.0.0.1:{free_port()}",
                            "credentials": str(credentials),
                            "region_name": "us-east-1",
                        },
                    }
                },
            }
        )
    )
    document = folder / "items.json"
    document.write_text(
        json.dumps(
            {
                "items": [
                    {
                        "key": "data-1",
                        "created": "2026-01-01T00:00:00Z",
                        "locations": [{"connector": "S3", "url": "data-1", "status": "OK"}],
                        "files": [{"path": "reads.txt", "size": 3}],
                    }
                ]
            }
        )
    )
    Cli(config).ok("import", document)
    return config


def test_a_presigned_url_is_never_logged_even_at_debug(tmp_path: Path) -> None:
    cli = Cli(s3_config(tmp_path))
    outcome = cli.ok("--log-level", "debug", "url", "data-1", "reads.txt")
    found = re.search(r"X-Amz-Signature=([0-9a-f]+)", outcome.out)
    assert found is not None, outcome.out
    assert found.group(1) not in outcome.err, outcome.err
    assert "not-" + SECRET not in outcome.err


def test_audit_delete_dark_is_refused_while_deletes_are_paused(tmp_path: Path) -> None:
    cli = Cli(local_pair(tmp_path))
    dark = tmp_path / "archive" / "stray" / "f.txt"
    dark.parent.mkdir(parents=True)
    dark.write_text("not catalogued (a catalog restored from an old backup?)\n")
    day_ago = time.time() - 86_400
    os.utime(dark, (day_ago, day_ago))
    cli.ok("deletes", "pause", "--note", "catalog restored, checking")
    outcome = cli("audit", "archive", "--delete-dark", "--older-than", "0")
    assert dark.exists(), outcome
    assert outcome.code != 0 and "paused" in outcome.err, outcome
