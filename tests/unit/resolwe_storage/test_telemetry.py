"""Where metrics and pages listen by default, the JSON log format, and what pages never show."""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from pathlib import Path

import pytest

from resolwe_storage.cli.base import load_all_commands
from resolwe_storage.config import load_config
from resolwe_storage.dashboard.facts import Redactor
from resolwe_storage.logs import JsonFormatter
from resolwe_storage.telemetry import exported_metric_names, parse_bind


@pytest.mark.parametrize(
    ("command", "option"),
    [("worker", "metrics_bind"), ("scheduler", "metrics_bind"), ("dashboard", "bind")],
)
def test_what_serves_http_listens_on_loopback_unless_told_otherwise(
    command: str, option: str
) -> None:
    [param] = [p for p in load_all_commands()[command].params if p.name == option]
    bind = parse_bind(param.default)
    assert bind is not None and ipaddress.ip_address(bind[0]).is_loopback


def test_the_dashboards_extra_metrics_listener_is_off_unless_asked() -> None:
    [param] = [p for p in load_all_commands()["dashboard"].params if p.name == "metrics_bind"]
    assert parse_bind(param.default) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9191", ("127.0.0.1", 9191)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9000", ("::1", 9000)),
        (":9000", ("127.0.0.1", 9000)),
        ("off", None),
        ("none", None),
    ],
)
def test_binds_are_host_and_port_or_off(value: str, expected: object) -> None:
    assert parse_bind(value) == expected


@pytest.mark.parametrize("value", ["9191", "host:", "host:port", "h:70000"])
def test_a_bad_bind_names_the_option(value: str) -> None:
    with pytest.raises(ValueError, match="--metrics-bind: expected HOST:PORT"):
        parse_bind(value)


def test_a_json_log_line_is_one_object_with_the_jobs_fields() -> None:
    record = logging.LogRecord(
        "workers.jobs", logging.INFO, __file__, 1, "copy of %r", ("k",), None
    )
    record.job = {"keys": ["k"], "bytes": 3}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "copy of 'k'" and entry["level"] == "info"
    assert entry["logger"] == "workers.jobs" and entry["job"] == {"keys": ["k"], "bytes": 3}
    assert entry["time"].endswith("+00:00")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", (), sys.exc_info())
    assert "RuntimeError: boom" in json.loads(JsonFormatter().format(failed))["error"]
    assert "\n" not in JsonFormatter().format(failed)


def test_the_pages_show_connectors_by_name_never_where_or_how_they_are_reached(
    tmp_path: object,
) -> None:
    config_file = f"{tmp_path}/config.json"
    with open(config_file, "w") as out:
        json.dump(
            {
                "database": "postgresql://storage:hunter2@db.internal:5432/storage",
                "broker": "redis://:sesame@redis.internal:6379/0",
                "connectors": {
                    "local": {"connector": "local", "config": {"path": "/srv/data/local"}},
                    "s3": {
                        "connector": "s3",
                        "config": {
                            "bucket": "acme-genomics-prod",
                            "endpoint_url": "https://s3.internal.example:9000",
                            "credentials": "/etc/secrets/s3.json",
                            "priority": 5,
                        },
                    },
                },
            },
            out,
        )
    redact = Redactor(load_config(config_file))
    text = redact(
        "copy failed: /srv/data/local/item/f.txt; s3://acme-genomics-prod/item at "
        "https://s3.internal.example:9000 with /etc/secrets/s3.json; "
        "catalog postgresql://storage:hunter2@db.internal:5432/storage; "
        "redis://:sesame@redis.internal:6379/0; other https://user:pw@elsewhere/x"
    )
    for secret in (
        "/srv/data",
        "acme-genomics-prod",
        "s3.internal",
        "/etc/secrets",
        "hunter2",
        "sesame",
        "user:pw",
    ):
        assert secret not in text, text
    assert "<local>/item/f.txt" in text and "s3://<s3>/item" in text
    assert redact(None) is None and redact(5) == 5


def test_every_metric_name_follows_prometheus_conventions() -> None:
    names = exported_metric_names()
    assert all(name.startswith("resolwe_storage_") for name in names)
    counters = {name for name in names if name.endswith("_total")}
    assert "resolwe_storage_jobs_total" in counters and "resolwe_storage_scans_total" in counters
    assert "resolwe_storage_job_duration_seconds_bucket" in names
    assert "resolwe_storage_queue_oldest_job_age_seconds" in names
    assert "resolwe_storage_copy_bytes" in names


@pytest.mark.parametrize(
    "url",
    [
        "redis://:sesame@sentinel.internal:26379/0",  # a password without a user name
        "https://user:ses/ame@elsewhere/x",  # a password with a "/" (base64 has them)
    ],
)
def test_pages_never_show_the_password_of_a_url_not_configured(tmp_path: Path, url: str) -> None:
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"database": "sqlite:///catalog.sqlite3"}))
    text = Redactor(load_config(config_file))(f"job failed: cannot reach {url}: refused")
    assert "sesame" not in text and "ses/ame" not in text, text


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("localhost:8080", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("evil.example:80", "evil.example"),
        ("", ""),
    ],
)
def test_the_host_of_a_host_header(header: str, host: str) -> None:
    from resolwe_storage.dashboard import host_of

    assert host_of(header) == host


def test_a_text_log_line_is_one_line_whatever_a_producer_named_a_file() -> None:
    """A newline in a file name would forge a record; ESC would act on the terminal."""
    import subprocess
    import sys

    script = (
        "import logging\n"
        "from resolwe_storage.logs import configure\n"
        "configure('info')\n"
        "log = logging.getLogger('workers.telemetry')\n"
        "log.warning('copy of %s failed', 'a.txt\\n2026-01-01 ERROR forged\\x1b[2J')\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError:\n"
        "    log.exception('with its traceback')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    lines = done.stderr.splitlines()
    assert "copy of a.txt\\n2026-01-01 ERROR forged\\x1b[2J failed" in lines[0]
    assert "\x1b" not in done.stderr
    assert "with its traceback" in lines[1]
    assert lines[2] == "Traceback (most recent call last):" and lines[-1] == "ValueError: boom"
