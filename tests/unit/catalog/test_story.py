"""An item's story and the history, read from a real catalog (SQLite and PostgreSQL)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import peewee as pw
import pytest

from catalog.errors import ItemNotFoundError
from catalog.models import (
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
)
from catalog.story import action_names, failures_since, history, item_story, outcome_since

T0 = datetime(2026, 3, 1, 12, 0, 0)


def an_item() -> FileStorage:
    """local OK (asserted), S3 damaged (one file missing), GCS under way (one file copied)."""
    item = FileStorage.create(key="data-1", data_slug="reads", created=T0)
    a = ReferencedPath.create(file_storage=item, path="a.txt", size=3, md5="m" * 32)
    b = ReferencedPath.create(file_storage=item, path="b/c.txt", size=5)
    ReferencedPath.create(file_storage=item, path="b/")
    local = StorageLocation.create(
        file_storage=item, connector_name="local", url="1", status="OK", last_update=T0
    )
    s3 = StorageLocation.create(file_storage=item, connector_name="S3", url="1", status="DM")
    gcs = StorageLocation.create(file_storage=item, connector_name="GCS", url="1", status="UP")
    LocationFile.create(storage_location=s3, referenced_path=a, validated_by="copy", verified=T0)
    LocationFile.create(
        storage_location=s3,
        referenced_path=b,
        validated_by="copy",
        problem="missing",
        problem_found=T0 + timedelta(days=1),
    )
    LocationFile.create(storage_location=gcs, referenced_path=a, validated_by="copy")
    AccessLog.create(storage_location=local, reason="analysis", started=T0)
    AccessLog.create(storage_location=local, reason="done", started=T0, finished=T0)
    for n, result in enumerate(["ok", "failed", "refused"]):
        Action.create(
            actor="worker",
            action="copy" if n < 2 else "delete",
            item_key="data-1",
            file_storage=item,
            target="S3",
            result=result,
            started=T0 + timedelta(hours=n),
            error=None if result == "ok" else f"why {n}",
        )
    return item


def test_the_story_tells_each_files_state_on_each_copy(catalog_db: pw.Database) -> None:
    an_item()
    story = item_story("data-1")
    assert (story["key"], story["data_slug"], story["created"]) == (
        "data-1",
        "reads",
        "2026-03-01T12:00:00Z",
    )
    assert [f["path"] for f in story["files"]] == ["a.txt", "b/", "b/c.txt"]
    locations = {loc["connector"]: loc for loc in story["locations"]}
    assert locations["local"]["files"] == {
        "a.txt": {"state": "asserted"},
        "b/c.txt": {"state": "asserted"},
    }
    assert locations["local"]["locks"] == [
        {"reason": "analysis", "since": "2026-03-01T12:00:00Z", "expires": None}
    ]
    assert locations["S3"]["files"] == {
        "a.txt": {"state": "good", "by": "copy", "verified": "2026-03-01T12:00:00Z"},
        "b/c.txt": {"state": "bad", "problem": "missing", "found": "2026-03-02T12:00:00Z"},
    }
    assert locations["S3"]["last_verified"] == "2026-03-01T12:00:00Z"
    assert locations["GCS"]["files"] == {
        "a.txt": {"state": "copied"},
        "b/c.txt": {"state": "not copied yet"},
    }
    assert story["lost"] == []  # local holds every file
    assert [row["result"] for row in story["history"]] == ["refused", "failed", "ok"]


def test_a_file_bad_on_every_copy_is_lost_in_the_story(catalog_db: pw.Database) -> None:
    an_item()
    StorageLocation.update(status="DM").where(StorageLocation.connector_name == "local").execute()
    local = StorageLocation.get(StorageLocation.connector_name == "local")
    LocationFile.create(
        storage_location=local,
        referenced_path=ReferencedPath.get(ReferencedPath.path == "b/c.txt"),
        validated_by="copy",
        problem="other size",
    )
    assert item_story("data-1")["lost"] == ["b/c.txt"]


def test_the_history_filters_by_item_time_action_and_failure(catalog_db: pw.Database) -> None:
    item = an_item()
    Action.create(actor="scheduler", action="unlock", target="local", started=T0)
    assert len(history()) == 4
    assert len(history(key="data-1")) == 3
    assert [row["error"] for row in history(failed=True)] == ["why 1"]
    assert [row["action"] for row in history(action="delete")] == ["delete"]
    assert [row["result"] for row in history(since=T0 + timedelta(hours=1))] == [
        "refused",
        "failed",
    ]
    assert len(history(limit=2)) == 2
    # The item gone from the catalog, its history stays, found by its key.
    item.delete_instance(recursive=False)
    assert len(history(key="data-1")) == 3
    assert history(key="never") == []
    with pytest.raises(ItemNotFoundError):
        item_story("data-1")


def _statements(caplog: pytest.LogCaptureFixture, read: Any) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements ``read()`` ran (peewee logs each at DEBUG)."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        read()
    return [record.msg for record in caplog.records if record.name == "peewee"]  # type: ignore[misc]


def _uses(database: pw.Database, index: str, sql: str, params: tuple[Any, ...]) -> bool:
    """Whether the plan of ``sql`` reads the action table through ``index``.

    SQLite keeps no statistics, and its choice is the one every catalog
    gets: it must be ``index``. PostgreSQL chooses by the table's size, and
    this one is small: asked for a plan without a scan of the whole table,
    it must find one through an index of the history.
    """
    if isinstance(database, pw.SqliteDatabase):
        rows = database.execute_sql(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return index in " / ".join(str(row[-1]) for row in rows)
    with database.atomic():
        database.execute_sql("SET LOCAL enable_seqscan = off")
        rows = database.execute_sql(f"EXPLAIN {sql}", params).fetchall()
    plan = " / ".join(row[0] for row in rows)
    return "Seq Scan" not in plan and "action_" in plan


def test_what_a_run_did_is_read_by_time_not_from_the_whole_history(
    catalog_db: pw.Database, caplog: pytest.LogCaptureFixture
) -> None:
    for n in range(20):
        Action.create(
            actor="worker",
            action="copy",
            item_key=f"old-{n}",
            started=T0 - timedelta(days=30, minutes=n),
            result="failed" if n % 2 else "ok",
            error="long ago" if n % 2 else None,
        )
    since = T0
    Action.create(actor="worker", action="copy", item_key="new-1", started=since, result="ok")
    Action.create(
        actor="worker",
        action="copy",
        item_key="new-2",
        started=since + timedelta(seconds=1),
        result="failed",
        target="S3",
        path="a.txt",
        error="refused by the backend",
    )
    Action.create(
        actor="worker", action="verify", item_key="new-3", started=since + timedelta(seconds=2)
    )
    assert outcome_since(since) == {"copy": {"ok": 1, "failed": 1}, "verify": {"ok": 1}}
    assert failures_since(since) == [
        {
            "action": "copy",
            "key": "new-2",
            "target": "S3",
            "path": "a.txt",
            "error": "refused by the backend",
        }
    ]
    # Each read goes by the index on the time, not through every action.
    for read in (lambda: outcome_since(since), lambda: failures_since(since)):
        statements = _statements(caplog, read)
        assert statements
        for sql, params in statements:
            assert _uses(catalog_db, "action_started", sql, params), sql


def test_the_kinds_and_the_latest_of_a_kind_or_of_the_failures_are_found_by_index(
    catalog_db: pw.Database, caplog: pytest.LogCaptureFixture
) -> None:
    for n, (action, result) in enumerate(
        [("copy", "ok"), ("verify", "ok"), ("copy", "failed"), ("delete", "ok")] * 5
    ):
        Action.create(
            actor="worker",
            action=action,
            item_key=f"data-{n}",
            started=T0 + timedelta(minutes=n),
            result=result,
            error="why" if result == "failed" else None,
        )
    assert action_names() == ["copy", "delete", "verify"]
    latest = history(action="delete", limit=2)
    assert [row["key"] for row in latest] == ["data-19", "data-15"]
    assert [row["key"] for row in history(failed=True, limit=3)] == [
        "data-18",
        "data-14",
        "data-10",
    ]
    reads = {
        "action_action_id": [action_names, lambda: history(action="delete", limit=2)],
        "action_failed": [lambda: history(failed=True, limit=3)],
    }
    for index, each in reads.items():
        for read in each:
            statements = _statements(caplog, read)
            assert statements
            for sql, params in statements:
                assert _uses(catalog_db, index, sql, params), sql


def test_no_kinds_in_an_empty_history(catalog_db: pw.Database) -> None:
    assert action_names() == []
