"""Faults behind the system's back, and copies between every pair of backends, end to end.

The scheduler's scans (``scan``), workers (``worker``, processes of their
own) and Redis, against moto_server and fake-gcs-server; the catalog on
SQLite, and on PostgreSQL for the transfer matrix.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import crc32c
import pytest

from catalog.database import open_database
from connectors.base import Connector
from connectors.gcs import GCSConnector
from connectors.s3 import S3Connector
from tests.processes import Cli
from tests.servers.faulty import Fault, faulty_proxy
from tests.servers.moto import REGION

pytest_plugins = ["tests.servers.redis"]

LATER = "2030-01-01T00:00:00Z"


def s3_settings(s3: S3Connector, endpoint: str, **rules: Any) -> dict[str, Any]:
    return {
        "connector": "s3",
        "config": {
            "bucket": s3.bucket,
            "endpoint_url": endpoint,
            "credentials": s3.credentials,
            "region_name": REGION,
            **rules,
        },
    }


def write_config(tmp_path: Path, database: str, broker: str | None, **connectors: Any) -> Path:
    document: dict[str, Any] = {"database": database, "connectors": connectors}
    if broker is not None:
        document["broker"] = broker
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def file_entry(path: str, data: bytes) -> dict[str, Any]:
    return {
        "path": path,
        "size": len(data),
        "md5": hashlib.md5(data).hexdigest(),
        "crc32c": f"{crc32c.crc32c(data):08x}",
    }


def import_items(cli: Cli, tmp_path: Path, items: list[dict[str, Any]]) -> None:
    document = tmp_path / "items.json"
    document.write_text(json.dumps({"items": items}))
    cli.ok("import", document)


def wait_for(check: Callable[[], bool], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


@contextmanager
def workers(cli: Cli, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = cli.start("worker", *args, log=log)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
        assert "Traceback" not in log.read_text(), log.read_text()


class Catalog:
    """The catalog as the test reads it, beside the processes that write it."""

    def __init__(self, url: str) -> None:
        self.database = open_database(url)

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        with self.database.connection_context():
            return list(self.database.execute_sql(sql.replace("?", self.database.param), params))

    def statuses(self) -> dict[tuple[str, str], str]:
        return {
            (key, connector): status
            for key, connector, status in self.rows(
                "SELECT f.key, l.connector_name, l.status FROM storage_location l"
                " JOIN file_storage f ON f.id = l.file_storage_id"
            )
        }

    def count(self, connector: str, status: str) -> int:
        return sum(
            1
            for (_, name), state in self.statuses().items()
            if (name, state) == (connector, status)
        )

    def quiet(self, redis_url: str) -> bool:
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            queued = sum(client.llen(f"dramatiq:{q}") for q in ("copy", "delete", "verify"))
            running = sum(client.scard(key) for key in client.scan_iter("dramatiq:__acks__.*"))
            markers = list(client.scan_iter("resolwe-storage:pending:*"))
            return queued == 0 and running == 0 and not markers
        finally:
            client.close()


def read(connector: Connector, path: str) -> bytes:
    with connector.open_read(path) as stream:
        return stream.read()


def test_five_objects_harmed_behind_the_systems_back_are_found_and_repaired(
    tmp_path: Path, redis_url: str, s3_bucket: S3Connector, moto_server: str
) -> None:
    """200 files copied to S3 by two workers; 5 deleted or overwritten; nothing lost."""
    database = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    local = {
        "connector": "local",
        "config": {
            "priority": 10,
            "path": str(tmp_path / "local"),
            "delete": {"delay": 0, "min_other_copies": 1},
        },
    }
    cli = Cli(
        write_config(
            tmp_path,
            database,
            redis_url,
            local=local,
            S3=s3_settings(s3_bucket, moto_server, priority=0, copy={"delay": 0}),
        )
    )
    data = {
        (f"item-{n:02d}", f"f{m}.bin"): os.urandom(2000 + 17 * n + m)
        for n in range(40)
        for m in range(5)
    }
    for (key, path), content in data.items():
        (tmp_path / "local" / key).mkdir(parents=True, exist_ok=True)
        (tmp_path / "local" / key / path).write_bytes(content)
    import_items(
        cli,
        tmp_path,
        [
            {
                "key": f"item-{n:02d}",
                "created": "2026-01-01T00:00:00Z",
                "locations": [{"connector": "local", "url": f"item-{n:02d}"}],
                "files": [
                    file_entry(f"f{m}.bin", data[f"item-{n:02d}", f"f{m}.bin"]) for m in range(5)
                ],
            }
            for n in range(40)
        ],
    )
    catalog = Catalog(database)
    with workers(cli, tmp_path / "workers.log", "--processes", "2", "--threads", "4"):
        assert json.loads(cli.ok("scan", "--json").out)["copies"] == 40
        wait_for(lambda: catalog.count("S3", "OK") == 40, "40 copies on S3")

        harmed = {("item-00", "f0.bin"), ("item-01", "f1.bin"), ("item-02", "f2.bin")}
        for key, path in harmed:
            s3_bucket.delete(f"{key}/{path}")
        overwritten = {("item-03", "f3.bin"), ("item-04", "f4.bin")}
        for key, path in overwritten:
            size = len(data[key, path])
            s3_bucket.write(f"{key}/{path}", io.BytesIO(b"\0" * size))
        harmed |= overwritten
        damaged = {key for key, _ in harmed}

        # Every local copy is due for deletion; the five are refused on confirmation.
        assert json.loads(cli.ok("scan", "--json", "--now", LATER).out)["deletes"] == 40
        wait_for(lambda: catalog.quiet(redis_url), "the deletes")
        statuses = catalog.statuses()
        assert {key for (key, name), state in statuses.items() if name == "local"} == damaged
        assert {key for (key, name), state in statuses.items() if state == "DM"} == damaged
        for key in damaged:  # the last good copies are all there
            for m in range(5):
                assert (tmp_path / "local" / key / f"f{m}.bin").read_bytes() == data[
                    key, f"f{m}.bin"
                ]
        refused = catalog.rows("SELECT item_key, error FROM action WHERE result = 'refused'")
        assert {key for key, _ in refused} == damaged
        assert all("the copy on S3 is damaged" in error for _, error in refused)

        assert json.loads(cli.ok("scan", "--json", "--now", LATER).out)["repairs"] == 5
        wait_for(lambda: catalog.count("S3", "OK") == 40, "the repairs")
        assert json.loads(cli.ok("scan", "--json", "--now", LATER).out)["deletes"] == 5
        wait_for(lambda: catalog.count("local", "OK") == 0, "the last deletes")
    for (key, path), content in data.items():
        assert read(s3_bucket, f"{key}/{path}") == content
    assert not any((tmp_path / "local").iterdir())
    assert json.loads(cli.ok("status", "--json").out)["lost_items"] == 0


def test_an_outage_during_verification_demotes_nothing(
    tmp_path: Path, s3_bucket: S3Connector, moto_server: str
) -> None:
    data = b"precious bytes\n" * 100
    with faulty_proxy(moto_server) as proxy:
        database = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
        cli = Cli(
            write_config(
                tmp_path,
                database,
                None,
                local={"connector": "local", "config": {"path": str(tmp_path / "local")}},
                S3=s3_settings(s3_bucket, proxy.url, priority=0, verify={"interval": 1}),
            )
        )
        s3_bucket.write("item-1/a.bin", io.BytesIO(data))
        import_items(
            cli,
            tmp_path,
            [
                {
                    "key": "item-1",
                    "created": "2026-01-01T00:00:00Z",
                    "locations": [{"connector": "S3", "url": "item-1"}],
                    "files": [file_entry("a.bin", data)],
                }
            ],
        )
        proxy.fail(Fault("GET", r".", status=503, times=None))
        proxy.fail(Fault("HEAD", r".", status=503, times=None))
        line = cli("verify", "item-1").error_line
        assert "could not verify (nothing concluded)" in line
        outcome = cli("run", "--once", "--json")
        assert outcome.code == 1
        assert json.loads(outcome.out)["actions"] == {"verify": {"failed": 1}}
        last = outcome.err.splitlines()[-1]
        assert (
            last.startswith("error: 1 job(s) failed for good") and "gave up after 3 tries" in last
        )
        catalog = Catalog(database)
        assert catalog.statuses() == {("item-1", "S3"): "OK"}
        assert catalog.rows("SELECT COUNT(*) FROM location_file WHERE problem IS NOT NULL") == [
            (0,)
        ]
        # Reachable again, the copy is verified as it is: good.
        proxy.heal()
        assert json.loads(cli.ok("verify", "item-1", "--json").out)[0]["ok"] is True


@pytest.mark.postgres
def test_copies_and_repairs_between_every_pair_of_backends_on_postgres(
    tmp_path: Path,
    fresh_postgres_url: str,
    redis_url: str,
    s3_bucket: S3Connector,
    moto_server: str,
    fake_gcs_server: str,
    gcs_bucket: str,
) -> None:
    """Items on one backend each are copied to the other two; then copies are repaired."""
    gcs = GCSConnector("GCS", bucket=gcs_bucket, endpoint_url=fake_gcs_server)
    cli = Cli(
        write_config(
            tmp_path,
            fresh_postgres_url,
            redis_url,
            local={
                "connector": "local",
                "config": {"priority": 20, "path": str(tmp_path / "local"), "copy": {"delay": 0}},
            },
            S3=s3_settings(s3_bucket, moto_server, priority=0, copy={"delay": 0}),
            GCS={
                "connector": "gcs",
                "config": {
                    "priority": 10,
                    "bucket": gcs_bucket,
                    "endpoint_url": fake_gcs_server,
                    "copy": {"delay": 0},
                },
            },
        )
    )
    from connectors.local import LocalConnector

    backends: dict[str, Connector] = {
        "local": LocalConnector("local", path=tmp_path / "local"),
        "S3": s3_bucket,
        "GCS": gcs,
    }
    files = {
        name: {"a.bin": os.urandom(3000), "sub/b.txt": f"b on {name}\n".encode()}
        for name in backends
    }
    for name, backend in backends.items():
        for path, content in files[name].items():
            backend.write(f"from-{name}/{path}", io.BytesIO(content))
    import_items(
        cli,
        tmp_path,
        [
            {
                "key": f"from-{name}",
                "created": "2026-01-01T00:00:00Z",
                "locations": [{"connector": name, "url": f"from-{name}"}],
                "files": [file_entry(path, content) for path, content in files[name].items()],
            }
            for name in backends
        ],
    )
    catalog = Catalog(fresh_postgres_url)
    with workers(cli, tmp_path / "worker.log", "--threads", "4"):
        # local -> S3, GCS; S3 -> local (a restore), GCS; GCS -> local, S3.
        assert json.loads(cli.ok("scan", "--json").out)["copies"] == 6
        wait_for(lambda: list(catalog.statuses().values()) == ["OK"] * 9, "six copies")
        for item, content in files.items():
            for backend in backends.values():
                for path, data in content.items():
                    assert read(backend, f"from-{item}/{path}") == data

        # Harm one copy of each item where it was copied to; verification finds it.
        harm = {"from-S3": "local", "from-GCS": "S3", "from-local": "GCS"}
        for item, where in harm.items():
            backends[where].write(f"{item}/a.bin", io.BytesIO(b"\0" * 3000))
            assert cli("verify", item, "--connector", where).code == 1
        assert sorted(
            (key, name) for (key, name), state in catalog.statuses().items() if state == "DM"
        ) == sorted(harm.items())
        plan = json.loads(cli.ok("plan", "--json").out)
        # Each from the preferred copy that counts: S3 -> local, GCS -> S3, S3 -> GCS.
        assert sorted((p["key"], p["source"], p["target"]) for p in plan) == [
            ("from-GCS", "GCS", "S3"),
            ("from-S3", "S3", "local"),
            ("from-local", "S3", "GCS"),
        ]
        assert json.loads(cli.ok("scan", "--json").out)["repairs"] == 3
        wait_for(lambda: list(catalog.statuses().values()) == ["OK"] * 9, "three repairs")
    for item, content in files.items():
        for backend in backends.values():
            for path, data in content.items():
                assert read(backend, f"from-{item}/{path}") == data
    repairs = catalog.rows(
        "SELECT item_key, source, target, result FROM action WHERE action = 'repair'"
    )
    assert sorted(repairs) == [
        ("from-GCS", "GCS", "S3", "ok"),
        ("from-S3", "S3", "local", "ok"),
        ("from-local", "S3", "GCS", "ok"),
    ]
