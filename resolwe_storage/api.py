"""A small Python API for other services: register items, request work, lock while reading.

    from resolwe_storage.api import StorageService

    storage = StorageService.from_config("storage.yaml")
    storage.register({"key": "data-1", "locations": [...], "files": [...]})
    storage.request_copy("data-1", to="S3")       # queued now, whatever the policy says
    with storage.reading("data-1") as location:   # not deleted while the block runs
        ...

Requests are queued on the configured broker as the scheduler's own jobs
are (``workers.messages`` is their contract, documented for a service in
another language that enqueues the same messages).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import peewee as pw

from catalog.importing import IMPORT_LOCK_REASON
from catalog.models import STATUS_PREPARING, AccessLog, FileStorage, StorageLocation, utcnow
from catalog.queries import item_files, record_access, reserve_location
from catalog.removal import REMOVED_STATUS, Removal, remove_items, restore_item
from catalog.streaming import ImportResult, import_document
from resolwe_storage.config import Config, load_config
from resolwe_storage.errors import InputError
from resolwe_storage.urls import DEFAULT_URL_EXPIRES, file_url, ok_copies
from resolwe_storage.wiring import configured, open_catalog
from workers.broker import (
    BrokerUnavailable,
    Pending,
    answering,
    enqueue_many,
    make_broker,
    unreachable,
)
from workers.errors import LocationGoneError
from workers.messages import QUEUE_VERIFY, copy_messages, verify_messages
from workers.operations import close_access_log, open_access_log

#: Tries to lock a copy for reading when the chosen one is being deleted meanwhile.
DEFAULT_LOCK_ATTEMPTS = 3
#: Tries to close a read lock while the catalog does not answer (a read lock
#: never expires: one left open keeps its copy from every delete for good).
DEFAULT_CLOSE_ATTEMPTS = 4
#: Seconds before the second try to close it, doubling after (the first is at once).
DEFAULT_CLOSE_PAUSE_S = 0.5


class StorageService:
    """The catalog and the broker of one configuration, for another service's use."""

    def __init__(self, config: Config, database: pw.Database, broker: dramatiq.Broker) -> None:
        self.config = config
        self.database = database
        self.broker = broker

    @classmethod
    def from_config(cls, path: str | Path | None = None) -> StorageService:
        """Load the configuration (``path``, else the environment), open catalog and broker."""
        config = load_config(path)
        if config.broker is None:
            raise InputError(
                "requests need a broker that workers share: set broker: redis://... "
                "(or RESOLWE_STORAGE_BROKER)"
            )
        return cls(config, open_catalog(config.database), make_broker(config.broker))

    def register(self, *items: dict[str, Any]) -> ImportResult:
        """Register (or update) items, each in the import document's item shape.

        Refused (``InputError``, nothing stored) for a removed item's key,
        unless the item says it is removed too: its copies go after the grace
        whatever is registered, so new bytes registered under it would go
        with them. ``restore`` it first, or register under another key.
        """
        _refuse_removed(items)
        return import_document(
            {"items": list(items)},
            connectors=self.config.connectors.keys(),
            database=self.database,
            actor="api",
        )

    def remove(self, keys: str | Iterable[str]) -> list[Removal]:
        """Remove items (SPEC §5 "unreferenced"): they count nowhere; copies go after the grace.

        ``keys``: one key, or several. All or nothing: an unknown key removes
        none. Idempotent.
        """
        chosen = [keys] if isinstance(keys, str) else list(keys)
        with self.database.atomic():
            return remove_items(chosen, now=utcnow(), actor="api")

    def restore(self, key: str) -> None:
        """Undo the removal of item ``key`` while its grace lasts (``RestoreRefused`` after)."""
        with self.database.atomic():
            restore_item(key, now=utcnow(), removal_delay=self.config.removal_delay, actor="api")

    def request_copy(self, key: str, *, to: str) -> int:
        """Queue a copy of item ``key`` to connector ``to`` now; returns the jobs queued.

        Refused when the item has no ``OK`` copy to copy from, or already has a
        location on ``to`` (of any status: a copy there is done or under way).
        """
        configured(self.config, to)
        with self.database.atomic():
            item, sources = ok_copies(self.config, key, purpose="to copy from")
            source = sources[0]
            record_access([source.id], now=utcnow())
            if reserve_location(item.id, to, url=source.url) is None:
                there = StorageLocation.get(
                    (StorageLocation.file_storage == item) & (StorageLocation.connector_name == to)
                )
                raise InputError(f"item {key!r} already has a location on {to!r} ({there.status})")
            files = item_files([item.id])[item.id]
        try:
            with answering(self.broker, what="nothing was queued or reserved"):
                return enqueue_many(self.broker, copy_messages(item.id, to, files))
        except BrokerUnavailable:
            with self.database.atomic():
                StorageLocation.delete().where(
                    (StorageLocation.file_storage == item)
                    & (StorageLocation.connector_name == to)
                    & (StorageLocation.status == STATUS_PREPARING)
                ).execute()
            raise

    def request_verify(self, key: str, *, connector: str | None = None) -> int:
        """Queue a verification of item ``key``'s OK copies (or of the one on ``connector``).

        Returns the jobs queued; a verification already queued is not queued again.
        """
        if connector is not None:
            configured(self.config, connector)
        item, copies = ok_copies(self.config, key, connector=connector, purpose="to verify")
        names = [loc.connector_name for loc in copies]
        pending = Pending(self.broker)
        keys = [Pending.key(QUEUE_VERIFY, item.id, name) for name in names]
        files = item_files([item.id])[item.id]
        jobs = [verify_messages(item.id, name, files) for name in names]
        with answering(self.broker, what="nothing was queued"):
            fresh = pending.claim(keys, [len(location_jobs) for location_jobs in jobs])
        try:
            with answering(self.broker, what="nothing was queued"):
                return enqueue_many(
                    self.broker,
                    [
                        message
                        for location_jobs, new in zip(jobs, fresh, strict=True)
                        if new
                        for message in location_jobs
                    ],
                )
        except BrokerUnavailable:
            with contextlib.suppress(*unreachable()):
                for key, new in zip(keys, fresh, strict=True):
                    if new:
                        pending.release(key)
            raise

    @contextmanager
    def reading(
        self, key: str, *, connector: str | None = None, reason: str = "read"
    ) -> Iterator[StorageLocation]:
        """Lock item ``key``'s preferred OK copy (or the one on ``connector``) for the block.

        The location is not deleted while the block runs (an open access log,
        as the original's); yields it, so the caller knows where to read. The
        read is the copy's last access (``catalog.queries.record_access``).
        """
        if reason == IMPORT_LOCK_REASON:
            # An import closes the open locks of this reason as its own.
            raise InputError(f"reason {reason!r} is reserved for the locks an import makes")
        if connector is not None:
            configured(self.config, connector)
        for attempt in range(DEFAULT_LOCK_ATTEMPTS):
            _, locations = ok_copies(self.config, key, connector=connector, purpose="to read")
            try:
                log = open_access_log(locations[0], reason)
            except LocationGoneError:
                if attempt + 1 == DEFAULT_LOCK_ATTEMPTS:
                    raise
                continue
            break
        try:
            # Inside: a lock left open by a failed write would never expire.
            record_access([log.storage_location.id], now=utcnow())
            yield log.storage_location
        finally:
            self._close_lock(log)

    def _close_lock(self, log: AccessLog) -> None:
        """Close the read lock ``log``, tried again while the catalog does not answer.

        A connection cut meanwhile (a server restarted, an idle connection
        ended) is made again; the last failure is raised. Inside the
        caller's transaction nothing can be made again: it is raised at once.
        """
        for attempt in range(DEFAULT_CLOSE_ATTEMPTS):
            try:
                close_access_log(log)
                return
            except (pw.OperationalError, pw.InterfaceError):
                if attempt + 1 == DEFAULT_CLOSE_ATTEMPTS or self.database.in_transaction():
                    raise
            # The next statement connects afresh (a broken connection stays
            # broken); closing it may fail as the connection did.
            with contextlib.suppress(Exception):
                self.database.close()
            if attempt:
                time.sleep(DEFAULT_CLOSE_PAUSE_S * 2 ** (attempt - 1))

    def url(
        self,
        key: str,
        path: str,
        *,
        expires: int = DEFAULT_URL_EXPIRES,
        connector: str | None = None,
    ) -> str:
        """A URL of file ``path`` of item ``key``: public, or presigned for ``expires`` seconds.

        From the preferred OK copy, or the one on ``connector``; as ``url KEY PATH``.
        """
        if connector is not None:
            configured(self.config, connector)
        return file_url(self.config, key, path, expires=expires, connector=connector)


def _refuse_removed(items: Sequence[dict[str, Any]]) -> None:
    """Refuse the first of ``items`` whose key is a removed item's, unless it says removed."""
    keys = [
        raw["key"]
        for raw in items
        if isinstance(raw, dict)
        and isinstance(raw.get("key"), str)
        and raw.get("status") != REMOVED_STATUS
        and raw.get("removed") is None
    ]
    if not keys:
        return
    removed = dict(
        FileStorage.select(FileStorage.key, FileStorage.removed)
        .where(FileStorage.key.in_(keys) & FileStorage.removed.is_null(False))
        .tuples()
    )
    for key in keys:
        if key in removed:
            raise InputError(
                f"item {key!r} was removed {removed[key]:%Y-%m-%dT%H:%M:%SZ}: its copies go "
                "after the grace; restore it first, or register under another key"
            )
