"""Helpers to put items, described as policy facts, into the catalog."""

from __future__ import annotations

from collections.abc import Iterable

from catalog.models import AccessLog, FileStorage, LocationFile, ReferencedPath, StorageLocation
from scheduler.policy import ItemFacts


def store(items: Iterable[ItemFacts]) -> None:
    """Write ``items`` with their locations, files and open access logs to the bound catalog.

    An ``OK`` or ``DM`` location gets a bad row for each of its
    ``damaged_files``, and for every other file of the item a good row or
    (every other one) none: a file as its import asserted it.
    """
    for facts in items:
        item = FileStorage.create(
            key=facts.key,
            data_slug=facts.data_slug,
            process_type=facts.process_type,
            status=facts.status,
            created=facts.created,
            removed=facts.removed,
        )
        paths = {
            path: ReferencedPath.create(file_storage=item, path=path, size=1).id
            for path in facts.files
        }
        for number, loc in enumerate(facts.locations):
            location = StorageLocation.create(
                file_storage=item,
                connector_name=loc.connector,
                url=f"{facts.key}/{number}",
                status=loc.status,
                last_update=loc.last_update,
                last_verified=loc.last_verified,
            )
            if loc.status in ("OK", "DM"):
                for index, (path, path_id) in enumerate(sorted(paths.items())):
                    bad = path in loc.damaged_files
                    if not bad and index % 2:
                        continue  # as imported: no row
                    LocationFile.create(
                        storage_location=location,
                        referenced_path=path_id,
                        validated_by="crc32c",
                        problem="missing" if bad else None,
                    )
            for _ in range(loc.open_access_logs):
                AccessLog.create(storage_location=location, reason="test")
            # A finished access log is history, never a lock.
            AccessLog.create(storage_location=location, reason="done", finished=loc.last_update)
