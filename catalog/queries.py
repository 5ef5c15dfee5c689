"""Named, reusable catalog queries."""

from __future__ import annotations

from typing import Any

import peewee as pw

from catalog.errors import ItemNotFoundError
from catalog.models import AccessLog, FileStorage, StorageLocation


def item_by_key(key: str) -> FileStorage:
    """The item with ``key``; ItemNotFoundError if there is none."""
    item = FileStorage.get_or_none(FileStorage.key == key)
    if item is None:
        raise ItemNotFoundError(f"no item with key {key!r} in the catalog")
    return item


def open_lock_counts(item: FileStorage) -> dict[int, int]:
    """Open access logs per location id of ``item``."""
    rows = (
        AccessLog.select(AccessLog.storage_location, pw.fn.COUNT(AccessLog.id))
        .join(StorageLocation)
        .where((StorageLocation.file_storage == item) & AccessLog.finished.is_null())
        .group_by(AccessLog.storage_location)
        .tuples()
    )
    return {location_id: count for location_id, count in rows}


def status_summary() -> dict[str, Any]:
    """Counts of items by status, and of locations by connector and status."""
    items: dict[str, int] = {
        status: count
        for status, count in FileStorage.select(FileStorage.status, pw.fn.COUNT(FileStorage.id))
        .group_by(FileStorage.status)
        .tuples()
    }
    locations: dict[str, dict[str, int]] = {}
    for connector, status, count in (
        StorageLocation.select(
            StorageLocation.connector_name, StorageLocation.status, pw.fn.COUNT(StorageLocation.id)
        )
        .group_by(StorageLocation.connector_name, StorageLocation.status)
        .tuples()
    ):
        locations.setdefault(connector, {})[status] = count
    locks = AccessLog.select().where(AccessLog.finished.is_null()).count()
    return {
        "items": {"total": sum(items.values()), "by_status": dict(sorted(items.items()))},
        "locations": {name: dict(sorted(v.items())) for name, v in sorted(locations.items())},
        "open_access_logs": locks,
    }
