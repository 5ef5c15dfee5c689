"""Removing items the producer says are gone, and restoring them within the grace.

SPEC §5 "unreferenced items": a removed item stops counting anywhere (no
copy, verification, repair or rule delete is planned for it, no URL or
read lock is given); once the removal grace has passed the scheduler
deletes every copy of it, the preferred and the last included, but never
a locked one, and then the item's rows (``workers.operations.
remove_location``, ``scheduler.scan``). Its history stays, by key. Within
the grace, ``restore`` undoes the removal as if it never was.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from catalog.errors import CatalogError
from catalog.models import Action, FileStorage
from catalog.queries import item_by_key

#: The import document's item status that removes the item.
REMOVED_STATUS = "removed"


class RestoreRefused(CatalogError):
    """The item cannot be restored: it is not removed, or its grace is over."""


class Removal(NamedTuple):
    """One item's removal: its key, when, and whether this call removed it (or it already was)."""

    key: str
    removed: datetime
    new: bool


def remove_items(keys: Sequence[str], *, now: datetime, actor: str) -> list[Removal]:
    """Mark the items ``keys`` removed at ``now`` (idempotent); every key must exist.

    Runs in the caller's transaction: an unknown key (ItemNotFoundError)
    removes nothing.
    """
    removals = []
    for key in keys:
        item = item_by_key(key)
        if item.removed is not None:
            removals.append(Removal(key, item.removed, False))
            continue
        mark_removed(item, now=now, actor=actor)
        removals.append(Removal(key, now, True))
    return removals


def mark_removed(item: FileStorage, *, now: datetime, actor: str) -> None:
    """Mark ``item`` removed at ``now`` (it is not yet), in the history too."""
    FileStorage.update(removed=now).where(FileStorage.id == item.id).execute()
    item.removed = now
    Action.create(
        actor=actor, action="mark removed", item_key=item.key, file_storage=item, result="ok"
    )


def restore_item(key: str, *, now: datetime, removal_delay: int, actor: str) -> datetime:
    """Undo the removal of item ``key`` while its grace lasts; when it had been removed.

    RestoreRefused when it is not removed, or the grace is over (its copies
    may be going already).
    """
    item = item_by_key(key)
    if item.removed is None:
        raise RestoreRefused(f"item {key!r} is not removed")
    # A negative delay: the grace never ends.
    ends = None if removal_delay < 0 else item.removed + timedelta(days=removal_delay)
    if ends is not None and now >= ends:
        raise RestoreRefused(
            f"item {key!r} was removed {item.removed:%Y-%m-%dT%H:%M:%SZ}; its grace of "
            f"{removal_delay} day(s) is over and its copies are being deleted"
        )
    FileStorage.update(removed=None).where(FileStorage.id == item.id).execute()
    Action.create(actor=actor, action="restore", item_key=key, file_storage=item, result="ok")
    return item.removed
