"""Helpers to put items, described as policy facts, into the catalog."""

from __future__ import annotations

from collections.abc import Iterable

from catalog.models import AccessLog, FileStorage, StorageLocation
from scheduler.policy import ItemFacts


def store(items: Iterable[ItemFacts]) -> None:
    """Write ``items`` with their locations and open access logs to the bound catalog."""
    for facts in items:
        item = FileStorage.create(
            key=facts.key,
            data_slug=facts.data_slug,
            process_type=facts.process_type,
            status=facts.status,
            created=facts.created,
        )
        for number, loc in enumerate(facts.locations):
            location = StorageLocation.create(
                file_storage=item,
                connector_name=loc.connector,
                url=f"{facts.key}/{number}",
                status=loc.status,
                last_update=loc.last_update,
                last_verified=loc.last_verified,
            )
            for _ in range(loc.open_access_logs):
                AccessLog.create(storage_location=location, reason="test")
            # A finished access log is history, never a lock.
            AccessLog.create(storage_location=location, reason="done", finished=loc.last_update)
