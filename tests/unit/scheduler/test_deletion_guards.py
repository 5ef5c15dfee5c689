"""The deletion guards: a cap per scan on each connector, and a pause of every delete.

A policy typo that makes thousands of deletes due deletes at most the cap
per scan; paused, no scan queues a delete and no delete job queued before
removes anything. On SQLite and PostgreSQL, with the in-process broker.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import peewee as pw
from dramatiq.brokers.stub import StubBroker

from catalog.models import Action, FileStorage, ReferencedPath, StorageLocation
from catalog.removal import remove_items
from catalog.settings import deletes_paused, pause_deletes, resume_deletes
from connectors.local import LocalConnector
from scheduler.rules import ConnectorPolicy, Rule
from scheduler.scan import scan
from tests.runtimes import folder_runtime
from workers import process
from workers.messages import QUEUE_DELETE
from workers.operations import REFUSED
from workers.runtime import DeleteLimits

NOW = datetime(2026, 6, 1)


def policies(**delete: int | None) -> dict[str, ConnectorPolicy]:
    """``local`` preferred; ``backup`` deletes after a day, with ``delete`` caps."""
    return {
        "local": ConnectorPolicy("local", priority=0),
        "backup": ConnectorPolicy("backup", priority=10, delete=Rule(delay=1, **delete)),
    }


def items_on_both(count: int, *, size: int = 4) -> None:
    """``count`` items with one file of ``size`` bytes, OK on local and on backup for a while."""
    old = NOW - timedelta(days=10)
    FileStorage.insert_many(
        [{"key": f"item-{n:05d}", "created": old} for n in range(count)]
    ).execute()
    ids = [item.id for item in FileStorage.select(FileStorage.id).order_by(FileStorage.id)]
    ReferencedPath.insert_many(
        [{"file_storage": item_id, "path": "a.txt", "size": size} for item_id in ids]
    ).execute()
    StorageLocation.insert_many(
        [
            {
                "file_storage": item_id,
                "connector_name": name,
                "url": str(item_id),
                "status": "OK",
                "last_update": old,
            }
            for item_id in ids
            for name in ("local", "backup")
        ]
    ).execute()


def queued_deletes(broker: StubBroker) -> int:
    broker.declare_queue(QUEUE_DELETE)
    return len(broker.queues[QUEUE_DELETE].queue)


def test_a_mass_deletion_goes_no_faster_than_the_cap_per_scan(catalog_db: pw.Database) -> None:
    items_on_both(5_000)
    broker = StubBroker()
    first = scan(policies(max_per_scan=1_000), catalog_db, broker, now=NOW)
    assert (first.deletes, first.held) == (1_000, {"backup": 4_000})
    assert queued_deletes(broker) == 1_000
    assert "4000 deletes held back (cap per scan)" in first.summary()
    assert json.loads(json.dumps(first.as_json()))["held_deletes"] == {"backup": 4_000}
    # The next scan takes the next thousand; those queued are not queued again.
    second = scan(policies(max_per_scan=1_000), catalog_db, broker, now=NOW)
    assert (second.deletes, second.pending, second.held) == (1_000, 1_000, {"backup": 3_000})
    assert queued_deletes(broker) == 2_000


def test_the_bytes_cap_lets_the_first_delete_through_however_large(
    catalog_db: pw.Database,
) -> None:
    items_on_both(5, size=1_000)
    broker = StubBroker()
    report = scan(policies(max_bytes_per_scan=2_500), catalog_db, broker, now=NOW)
    assert (report.deletes, report.held) == (2, {"backup": 3})
    tight = scan(policies(max_bytes_per_scan=10), catalog_db, StubBroker(), now=NOW)
    assert tight.deletes == 1  # larger than the cap, but never held back for good


def test_no_cap_is_no_cap(catalog_db: pw.Database) -> None:
    items_on_both(50)
    report = scan(policies(max_per_scan=None), catalog_db, StubBroker(), now=NOW)
    assert (report.deletes, report.held) == (50, {})


def test_a_mass_removal_goes_no_faster_than_its_cap_per_scan(catalog_db: pw.Database) -> None:
    """A document that wrongly says 300 items are gone: their copies, the last included.

    Removal needs no delete rule and no other copy, so it is capped on its
    own (``removal: {max_per_scan}``): the operator has scans' time to see
    it, and to pause deletes.
    """
    items_on_both(150)
    remove_items([f"item-{n:05d}" for n in range(150)], now=NOW, actor="test")
    broker = StubBroker()
    later = NOW + timedelta(minutes=1)  # past the grace (0 days)
    first = scan(policies(), catalog_db, broker, now=later, removal_cap=100)
    assert (first.removals, first.held_removals) == (100, 200)
    assert queued_deletes(broker) == 100
    assert "200 removals held back (cap per scan)" in first.summary()
    assert json.loads(json.dumps(first.as_json()))["held_removals"] == 200
    second = scan(policies(), catalog_db, broker, now=later, removal_cap=100)
    assert (second.removals, second.pending, second.held_removals) == (100, 100, 100)
    uncapped = scan(policies(), catalog_db, broker, now=later, removal_cap=None)
    assert (uncapped.removals, uncapped.held_removals) == (100, 0)


def test_paused_no_scan_queues_a_delete_and_no_queued_delete_runs(
    catalog_db: pw.Database, tmp_path: Path
) -> None:
    items_on_both(3)
    broker = StubBroker()
    # Queued before the pause, run after it.
    assert scan(policies(), catalog_db, broker, now=NOW).deletes == 3
    pause = pause_deletes(note="policy under review")
    assert deletes_paused() == pause
    report = scan(policies(), catalog_db, broker, now=NOW + timedelta(days=1))
    assert (report.deletes, report.deletes_paused) == (0, True)
    for name in ("local", "backup"):
        for location in StorageLocation.select().where(StorageLocation.connector_name == name):
            LocalConnector(name, path=tmp_path / name).write(
                f"{location.url}/a.txt", io.BytesIO(b"abcd")
            )

    def due(connector: str, **_: object) -> DeleteLimits:
        return DeleteLimits(cutoff=NOW, min_other_copies=1)

    worker = process.start(
        folder_runtime(catalog_db, broker, tmp_path, delete_rules=due),  # type: ignore[arg-type]
        threads=2,
    )
    try:
        broker.join(QUEUE_DELETE, fail_fast=True)
    finally:
        worker.stop()
    refused = Action.select().where(Action.result == REFUSED)
    assert refused.count() == 3
    assert {row.error for row in refused} == {
        f"deletes are paused since {pause.since:%Y-%m-%dT%H:%M:%SZ}: policy under review"
    }
    assert StorageLocation.select().where(StorageLocation.connector_name == "backup").count() == 3
    assert len(list((tmp_path / "backup").rglob("a.txt"))) == 3
    # Resumed, the next scan queues them again (the refused jobs freed their markers).
    assert resume_deletes() and deletes_paused() is None
    assert scan(policies(), catalog_db, broker, now=NOW).deletes == 3


def test_the_cap_holds_across_the_ranges_a_scan_plans_in_turn(catalog_db: pw.Database) -> None:
    """A scan plans a range of items at a time; the cap is the whole scan's, not a range's."""
    items_on_both(50)
    broker = StubBroker()
    first = scan(policies(max_per_scan=10), catalog_db, broker, now=NOW, plan_range=7)
    assert (first.items, first.deletes, first.held) == (50, 10, {"backup": 40})
    assert queued_deletes(broker) == 10
    second = scan(policies(max_per_scan=10), catalog_db, broker, now=NOW, plan_range=7)
    assert (second.deletes, second.pending, second.held) == (10, 10, {"backup": 30})
    assert queued_deletes(broker) == 20
