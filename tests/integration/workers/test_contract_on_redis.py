"""The queue contract as another service meets it: raw messages on Redis, run by our workers.

The messages are written here by hand, byte for byte in the format
``workers.messages`` documents (as a service in another language, or the
code of an earlier release, would write them), with plain Redis commands;
a worker built from a runtime made in the test runs them.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import peewee as pw
import pytest
import redis

from catalog.models import Action, FileStorage, ReferencedPath, StorageLocation, utcnow
from catalog.queries import reserve_location
from catalog.removal import remove_items, restore_item
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from tests.runtimes import folder_runtime, never_delete
from workers import process
from workers.broker import make_broker
from workers.runtime import DeleteLimits

pytest_plugins = ["tests.servers.redis"]

DEADLINE_S = 30.0
FILES = {"reads.fastq": b"ACGT\n" * 100, "deep/counts.tsv": b"a\t1\n"}


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s: {what}")
        time.sleep(0.05)


def push(client: redis.Redis, queue: str, actor: str, *args: Any) -> None:
    """Enqueue as the documented format says: HSET the body, RPUSH its id, a wake-up token."""
    redis_id = str(uuid.uuid4())
    body = {
        "queue_name": queue,
        "actor_name": actor,
        "args": list(args),
        "kwargs": {},
        "options": {"redis_message_id": redis_id},
        "message_id": str(uuid.uuid4()),
        "message_timestamp": int(time.time() * 1000),
    }
    client.hset(f"dramatiq:{queue}.msgs", redis_id, json.dumps(body))
    client.rpush(f"dramatiq:{queue}", redis_id)
    client.rpush(f"dramatiq:{queue}.wake", 1)
    client.expire(f"dramatiq:{queue}.wake", 5)


def delete_from_backup(
    connector: str, *, data_slug: str, process_type: str, now: Any
) -> DeleteLimits:
    if connector != "backup":
        return DeleteLimits(cutoff=None, min_other_copies=1)
    return DeleteLimits(cutoff=now, min_other_copies=1)


def start(tmp_path: Path, database: pw.Database, url: str, rules: Any) -> Any:
    runtime = folder_runtime(database, make_broker(url), tmp_path, delete_rules=rules)
    return process.start(runtime, threads=2)


def an_item(tmp_path: Path, key: str) -> FileStorage:
    """An item with ``FILES`` in a folder of ``local``, its copy there asserted."""
    item = FileStorage.create(key=key, created=utcnow() - timedelta(days=3))
    StorageLocation.create(
        file_storage=item, connector_name="local", url=key, status="OK", last_update=item.created
    )
    folder = LocalConnector("local", path=tmp_path / "local")
    for path, data in FILES.items():
        folder.write(f"{key}/{path}", io.BytesIO(data))
        hashes = hash_stream(io.BytesIO(data))
        ReferencedPath.create(
            file_storage=item, path=path, size=len(data), md5=hashes.md5, crc32c=hashes.crc32c
        )
    return item


def status_on(item: FileStorage, connector: str) -> str | None:
    location = StorageLocation.get_or_none(
        (StorageLocation.file_storage == item) & (StorageLocation.connector_name == connector)
    )
    return None if location is None else location.status


def test_copies_and_a_verification_written_by_hand_are_run(
    tmp_path: Path, redis_url: str, sqlite_db: pw.Database
) -> None:
    one, two, three = (an_item(tmp_path, key) for key in ("one", "two", "three"))
    for item in (one, two, three):
        reserve_location(item.id, "backup", url=item.key)
    client = redis.Redis.from_url(redis_url)
    push(client, "copy", "copy_files", one.id, "backup", ["reads.fastq", "deep/counts.tsv"])
    push(client, "copy", "copy_items", "backup", [[two.id, ["reads.fastq", "deep/counts.tsv"]]])
    push(client, "copy", "copy_file", three.id, "backup", "reads.fastq")
    push(client, "copy", "copy_file", three.id, "backup", "deep/counts.tsv")
    worker = start(tmp_path, sqlite_db, redis_url, never_delete)
    try:
        wait_for(
            lambda: {status_on(item, "backup") for item in (one, two, three)} == {"OK"},
            "the three copies were made",
        )
        for item in (one, two, three):
            for path, data in FILES.items():
                assert (tmp_path / "backup" / item.key / path).read_bytes() == data
        push(client, "verify", "verify_location", one.id, "backup")
        wait_for(
            lambda: (
                Action.select()
                .where((Action.action == "verify") & (Action.file_storage == one.id))
                .exists()
            ),
            "the verification was recorded",
        )
        assert status_on(one, "backup") == "OK"
    finally:
        process.stop(worker)
        client.close()


def test_a_delete_written_by_hand_keeps_to_the_rules(
    tmp_path: Path, redis_url: str, sqlite_db: pw.Database
) -> None:
    item = an_item(tmp_path, "one")
    reserve_location(item.id, "backup", url="one")
    client = redis.Redis.from_url(redis_url)
    push(client, "copy", "copy_files", item.id, "backup", sorted(FILES))
    worker = start(tmp_path, sqlite_db, redis_url, delete_from_backup)
    try:
        wait_for(lambda: status_on(item, "backup") == "OK", "the copy was made")
        # The preferred copy (local) is never deleted, whatever the message says.
        push(client, "delete", "delete_location", item.id, "local")
        push(client, "delete", "delete_files", item.id, "backup", sorted(FILES))
        wait_for(lambda: status_on(item, "backup") is None, "the backup copy was deleted")
        refused = Action.select().where((Action.target == "local") & (Action.result == "refused"))
        wait_for(refused.exists, "the delete of the preferred copy was refused")
        assert not (tmp_path / "backup" / "one" / "reads.fastq").exists()
        assert status_on(item, "local") == "OK"
        for path, data in FILES.items():
            assert (tmp_path / "local" / "one" / path).read_bytes() == data
    finally:
        process.stop(worker)
        client.close()


def test_a_removal_written_by_hand_waits_for_the_grace(
    tmp_path: Path, redis_url: str, sqlite_db: pw.Database
) -> None:
    """A removed item's copies go only after the grace, whoever queues their removal.

    Within the grace ``restore`` brings the item back whole: a message that
    removed its copies meanwhile would leave it restored without them (or,
    with its last copy, forgotten altogether).
    """
    item = an_item(tmp_path, "one")
    with sqlite_db.atomic():
        remove_items(["one"], now=utcnow(), actor="test")
    client = redis.Redis.from_url(redis_url)
    push(client, "delete", "remove_location", item.id, "local")
    runtime = folder_runtime(sqlite_db, make_broker(redis_url), tmp_path)
    runtime.removal_delay = 7
    worker = process.start(runtime, threads=2)
    try:
        removal = Action.select().where(Action.action == "remove")
        wait_for(removal.exists, "the removal was decided")
        assert (removal.get().result, "grace" in (removal.get().error or "")) == ("refused", True)
        assert status_on(item, "local") == "OK"
        for path, data in FILES.items():
            assert (tmp_path / "local" / "one" / path).read_bytes() == data
        with sqlite_db.atomic():
            restore_item("one", now=utcnow(), removal_delay=7, actor="test")
        assert FileStorage.get_by_id(item.id).removed is None
    finally:
        process.stop(worker)
        client.close()


def test_a_malformed_job_is_given_up_with_its_reason_and_the_queue_goes_on(
    tmp_path: Path, redis_url: str, sqlite_db: pw.Database
) -> None:
    """A job whose arguments are not of the documented shape fails at once, and says why.

    The history and the dead letter's note (what ``queues`` shows) name the
    reason; the jobs queued after it run.
    """
    item = an_item(tmp_path, "one")
    reserve_location(item.id, "backup", url="one")
    client = redis.Redis.from_url(redis_url)
    # Each entry should be [item id, [paths]]: these are not.
    push(client, "copy", "copy_items", "backup", [[item.id]])
    push(client, "copy", "copy_items", "backup", [item.id, sorted(FILES)])
    push(client, "copy", "copy_files", item.id, "backup", sorted(FILES))
    worker = start(tmp_path, sqlite_db, redis_url, never_delete)
    try:
        wait_for(lambda: status_on(item, "backup") == "OK", "the good job ran")
        failed = Action.select().where((Action.action == "copy") & (Action.result == "failed"))
        wait_for(lambda: failed.count() == 2, "both malformed jobs are in the history")
        assert {action.target for action in failed} == {"backup"}
        assert all("unpack" in action.error for action in failed)
        wait_for(lambda: client.zcard("dramatiq:copy.XQ") == 2, "both were dead-lettered")
        notes = [client.get(key) for key in client.keys("resolwe-storage:dead:*")]
        assert len(notes) == 2
        assert all(b"unpack" in note for note in notes)
    finally:
        process.stop(worker)
        client.close()
