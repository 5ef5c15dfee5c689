"""The catalog's tables.

Names follow the original Resolwe storage app (``FileStorage``,
``StorageLocation``, ``ReferencedPath``, ``AccessLog``) so that its users find
their vocabulary here; ``Action`` is new: the history of what was done.

All timestamps are naive UTC. The models are bound to a database at start-up
(:func:`catalog.database.bind`), never at import.
"""

from __future__ import annotations

from datetime import UTC, datetime

import peewee as pw

#: Bound at start-up to the real database by ``catalog.database.bind``.
database_proxy = pw.DatabaseProxy()

#: Location status codes, as in the original ...
STATUS_PREPARING = "PR"
STATUS_UPLOADING = "UP"
STATUS_DONE = "OK"
STATUS_DELETING = "DE"
#: ... and ours: a copy of which some file is missing, different or stale
#: (``catalog.integrity`` draws the states and their transitions).
STATUS_DAMAGED = "DM"
LOCATION_STATUSES = (
    STATUS_PREPARING,
    STATUS_UPLOADING,
    STATUS_DONE,
    STATUS_DELETING,
    STATUS_DAMAGED,
)

#: The one producer status that makes an item finished and eligible for policies.
ITEM_STATUS_DONE = "OK"

#: Reason recorded on the access logs an import document asks for (``open_access_logs``):
#: an import reconciles the open locks of this reason as its own.
IMPORT_LOCK_REASON = "import"

#: Part size the S3 etag is computed with when the producer says nothing.
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024


def utcnow() -> datetime:
    """Return the current time as naive UTC, the catalog's time format."""
    return datetime.now(UTC).replace(tzinfo=None)


class BaseModel(pw.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False
        # ``save()`` of a row read before writes only the columns set since:
        # another writer's change to the rest (an access recorded without the
        # item's lock, ``catalog.queries.record_access``) is not put back.
        only_save_dirty = True


class FileStorage(BaseModel):
    """One data item: a set of files produced together."""

    id = pw.BigAutoField()
    key = pw.TextField(null=True, unique=True)
    data_slug = pw.TextField(default="")
    process_type = pw.TextField(default="")
    status = pw.TextField(default=ITEM_STATUS_DONE)
    created = pw.DateTimeField(default=utcnow)
    #: When the producer said the item is gone (None: it is not); every copy
    #: is deleted after the removal grace, then the item (``catalog.removal``).
    removed = pw.DateTimeField(null=True)
    #: A digest of the item's text in the document that last imported it
    #: (``catalog.streaming``): the same text again is passed over.
    import_digest = pw.CharField(max_length=32, null=True)

    class Meta:
        table_name = "file_storage"


class StorageLocation(BaseModel):
    """One copy of an item on one connector, under ``url`` in its root."""

    id = pw.BigAutoField()
    file_storage = pw.ForeignKeyField(
        FileStorage, backref="storage_locations", on_delete="CASCADE", index=False
    )
    connector_name = pw.TextField()
    url = pw.TextField()
    status = pw.CharField(max_length=2, default=STATUS_PREPARING)
    last_update = pw.DateTimeField(default=utcnow)
    #: When every file of this copy was last re-hashed and found intact.
    last_verified = pw.DateTimeField(null=True)
    #: Every file of the item has a ``LocationFile`` row here, as
    #: ``catalog.integrity.settle`` last found (migration 013); False: not
    #: known. Cleared by whatever may leave a file without one.
    files_recorded = pw.BooleanField(default=False)

    class Meta:
        table_name = "storage_location"
        indexes = (
            (("connector_name", "url"), True),
            # One location per item and connector (migration 002); the
            # planner's per-item sums rely on it.
            (("file_storage", "connector_name"), True),
            (("connector_name", "status", "last_update"), False),
        )


class ReferencedPath(BaseModel):
    """One file (or directory, ``path`` ending in ``/``) of an item."""

    id = pw.BigAutoField()
    # No index of its own: the unique (file_storage, path) serves lookups by item.
    file_storage = pw.ForeignKeyField(
        FileStorage, backref="files", on_delete="CASCADE", index=False
    )
    path = pw.TextField()
    size = pw.BigIntegerField(null=True)
    md5 = pw.TextField(null=True)
    crc32c = pw.TextField(null=True)
    awss3etag = pw.TextField(null=True)
    chunk_size = pw.BigIntegerField(default=DEFAULT_CHUNK_SIZE)

    class Meta:
        table_name = "referenced_path"
        indexes = ((("file_storage", "path"), True),)


class AccessLog(BaseModel):
    """A read of a location; while ``finished`` is null it is a lock."""

    id = pw.BigAutoField()
    storage_location = pw.ForeignKeyField(
        StorageLocation, backref="access_logs", on_delete="CASCADE"
    )
    started = pw.DateTimeField(default=utcnow)
    finished = pw.DateTimeField(null=True)
    reason = pw.TextField(default="")
    #: A worker's lock ends by itself after this (the worker may have died);
    #: None: only closing it ends it.
    expires = pw.DateTimeField(null=True)

    class Meta:
        table_name = "access_log"


class Action(BaseModel):
    """The history: who did what to which item, when, and how it ended.

    Rows keep the item's ``key`` and the connector names as text so that the
    history outlives the items and locations it speaks of.
    """

    id = pw.BigAutoField()
    started = pw.DateTimeField(default=utcnow)
    finished = pw.DateTimeField(null=True)
    actor = pw.TextField()
    action = pw.TextField()
    item_key = pw.TextField(null=True)
    file_storage = pw.ForeignKeyField(
        FileStorage, null=True, backref="actions", on_delete="SET NULL"
    )
    source = pw.TextField(null=True)
    target = pw.TextField(null=True)
    path = pw.TextField(null=True)
    result = pw.TextField(default="ok")
    bytes = pw.BigIntegerField(null=True)
    duration_ms = pw.IntegerField(null=True)
    error = pw.TextField(null=True)

    class Meta:
        table_name = "action"
        # By time: what happened since a moment (migration 011). Migration
        # 012 adds (action, id) and the failures' ids (a partial index).
        indexes = ((("item_key", "started"), False), (("started",), False))


class LocationFile(BaseModel):
    """One file of one location: good there, or known bad (new; per-location state).

    A good row (``problem`` null) says the file's bytes on the location are
    the item's current version, written by a validated transfer or found
    good by a verification (``validated_by`` says what proved it, and
    ``verified`` when it was last looked at). A row with a ``problem`` says
    what is wrong (missing, different, stale). No row means: on a copy that
    counts or a damaged one, the file as the import asserted it; on a copy
    under way, not copied yet; ``catalog.integrity`` draws the whole of it.
    On a location being deleted (``DE``) the rows are the files not yet
    removed: the location goes when the last one does.
    """

    id = pw.BigAutoField()
    storage_location = pw.ForeignKeyField(
        StorageLocation, backref="files", on_delete="CASCADE", index=False
    )
    referenced_path = pw.ForeignKeyField(ReferencedPath, on_delete="CASCADE")
    copied = pw.DateTimeField(default=utcnow)
    validated_by = pw.TextField()
    #: When the file was last re-hashed there and found intact (a validated
    #: transfer counts); None: never.
    verified = pw.DateTimeField(null=True)
    #: Why the file is not good there (None: it is): missing, other size or
    #: checksum, stale (the item's file changed after this copy was made).
    problem = pw.TextField(null=True)
    #: When ``problem`` was found.
    problem_found = pw.DateTimeField(null=True)

    class Meta:
        table_name = "location_file"
        indexes = ((("storage_location", "referenced_path"), True),)


class Setting(BaseModel):
    """A switch an operator sets at run time, kept in the catalog so that every process sees it.

    ``catalog.settings`` names them (deletes paused, ...).
    """

    name = pw.TextField(primary_key=True)
    value = pw.TextField()
    #: Who set it and why, for ``status``.
    note = pw.TextField(default="")
    updated = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "setting"


ALL_MODELS: tuple[type[BaseModel], ...] = (
    FileStorage,
    StorageLocation,
    ReferencedPath,
    AccessLog,
    Action,
    LocationFile,
    Setting,
)
