"""A job given up is dead-lettered with its items' keys and the reason; ``queues`` shows them."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import peewee as pw
import pytest
import redis

from catalog.models import FileStorage, ReferencedPath, StorageLocation, utcnow
from tests.processes import Cli
from tests.runtimes import folder_runtime
from workers import process
from workers.broker import make_broker
from workers.messages import copy_jobs

pytest_plugins = ["tests.servers.redis"]


def test_queues_names_the_item_and_the_reason_of_a_dead_letter(
    tmp_path: Path, redis_url: str, sqlite_db: pw.Database
) -> None:
    # A copy whose only source is gone meanwhile (its location removed): it fails for good.
    item = FileStorage.create(key="data-1", created=utcnow() - timedelta(days=1))
    ReferencedPath.create(file_storage=item, path="a.txt", size=3)
    StorageLocation.create(file_storage=item, connector_name="backup", url="data-1", status="PR")
    broker = make_broker(redis_url)
    worker = process.start(folder_runtime(sqlite_db, broker, tmp_path), threads=1)
    client = redis.Redis.from_url(redis_url)
    try:
        for job in copy_jobs("backup", [(item.id, [("a.txt", 3)])]):
            broker.enqueue(job)
        deadline = time.monotonic() + 30
        while client.zcard("dramatiq:copy.XQ") == 0:
            if time.monotonic() > deadline:
                pytest.fail("the job was not dead-lettered within 30 s")
            time.sleep(0.05)
    finally:
        process.stop(worker)
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
                "broker": redis_url,
                "connectors": {
                    name: {"connector": "local", "config": {"path": name}}
                    for name in ("local", "backup")
                },
            }
        )
    )
    cli = Cli(config)
    [dead] = json.loads(cli.ok("queues", "--json").out)["dead"]
    assert dead["keys"] == ["data-1"]
    assert dead["reason"] == "failed: item data-1: no OK copy to copy 'a.txt' from"
    text = cli.ok("queues").out
    assert f'copy_files({item.id}, "backup", ["a.txt"]) of \'data-1\'' in text
    assert dead["reason"] in text
    client.close()
