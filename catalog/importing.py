"""Registering items from an import document (SPEC §6), atomically and idempotently.

The whole document is validated before anything is written, then written in
one transaction: a document with one bad entry stores nothing. Items are
matched by ``key``, locations by (connector, url), files by path, so importing
the same document twice leaves the catalog as the first import did.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import peewee as pw
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from catalog.errors import ImportDocumentError, InvalidPathError
from catalog.integrity import (
    ASSERTED,
    NOT_COPIED,
    STALE,
    content_changed,
    record_bad,
    settle,
)
from catalog.models import (
    DEFAULT_CHUNK_SIZE,
    IMPORT_LOCK_REASON,
    ITEM_STATUS_DONE,
    STATUS_DAMAGED,
    STATUS_DELETING,
    STATUS_DONE,
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
    utcnow,
)
from catalog.paths import check_relative_path
from catalog.queries import locations_at
from catalog.removal import REMOVED_STATUS, mark_removed
from catalog.sql import is_sqlite


def parse_time(value: Any) -> datetime:
    """Parse ISO-8601 text into naive UTC; a time without zone is UTC."""
    if type(value) is str and value.endswith("Z"):
        # The common form (``...Z``, as exports write): naive is UTC already.
        try:
            moment = datetime.fromisoformat(value[:-1])
        except ValueError:
            pass  # told below, of the whole text
        else:
            if moment.tzinfo is None:
                return moment
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"expected an ISO-8601 time, got {value!r}") from None
    else:
        raise ValueError(f"expected an ISO-8601 time string, got {value!r}")
    if moment.tzinfo is not None:
        offset = moment.utcoffset()
        moment = (moment - offset if offset else moment).replace(tzinfo=None)
    return moment


Time = Annotated[datetime, BeforeValidator(parse_time)]
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX8 = re.compile(r"^[0-9a-f]{8}$")
_ETAG = re.compile(r"^[0-9a-f]{32}(-[1-9][0-9]*)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_nul(value: str) -> str:
    """Refuse a NUL character: PostgreSQL cannot store one in text, and no name needs it."""
    if "\x00" in value:
        raise ValueError(f"{value!r} contains a NUL character")
    return value


class LocationDocument(_Strict):
    connector: StrictStr
    url: StrictStr
    status: Literal["PR", "UP", "OK", "DE", "DM"] = "OK"
    last_update: Time | None = None
    last_verified: Time | None = None
    open_access_logs: Annotated[StrictInt, Field(ge=0)] = 0
    #: Of a damaged copy (``DM``): its files that are not good, and why.
    damaged: dict[StrictStr, Annotated[StrictStr, Field(min_length=1)]] = {}

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_relative_path(value.rstrip("/") or value, what="url")

    @field_validator("connector")
    @classmethod
    def _connector(cls, value: str) -> str:
        return _no_nul(value)

    @field_validator("damaged")
    @classmethod
    def _damaged(cls, value: dict[str, str]) -> dict[str, str]:
        for path, problem in value.items():
            check_relative_path(path, what="path", allow_directory=False)
            _no_nul(problem)
        return value


class FileDocument(_Strict):
    path: StrictStr
    size: Annotated[StrictInt, Field(ge=0)] | None = None
    md5: StrictStr | None = None
    crc32c: StrictStr | None = None
    awss3etag: StrictStr | None = None
    chunk_size: Annotated[StrictInt, Field(ge=1)] = DEFAULT_CHUNK_SIZE

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return check_relative_path(value, what="path")

    @field_validator("md5")
    @classmethod
    def _md5(cls, value: str | None) -> str | None:
        return _hash(value, _HEX32, "32 hex digits")

    @field_validator("crc32c")
    @classmethod
    def _crc32c(cls, value: str | None) -> str | None:
        return _hash(value, _HEX8, "8 hex digits")

    @field_validator("awss3etag")
    @classmethod
    def _etag(cls, value: str | None) -> str | None:
        return _hash(value, _ETAG, "32 hex digits, optionally followed by -PARTS")


def _hash(value: str | None, pattern: re.Pattern[str], expected: str) -> str | None:
    if value is None or value == "":
        return None
    lowered = value.strip().strip('"').lower()
    if not pattern.match(lowered):
        raise ValueError(f"expected {expected}, got {value!r}")
    return lowered


class ItemDocument(_Strict):
    key: Annotated[StrictStr, Field(min_length=1)]
    data_slug: StrictStr = ""
    process_type: StrictStr = ""
    status: Annotated[StrictStr, Field(min_length=1)] = "OK"
    created: Time
    #: When the item was removed (an export's); ``"status": "removed"`` removes it now.
    removed: Time | None = None
    locations: list[LocationDocument] = []
    files: list[FileDocument] = []

    @field_validator("key", "data_slug", "process_type", "status")
    @classmethod
    def _text(cls, value: str) -> str:
        return _no_nul(value)


def _location_of(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def describe_error(exc: ValidationError, *, prefix: str = "") -> str:
    """The first problem ``exc`` found, as one line naming its place (after ``prefix``)."""
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    place = ".".join(part for part in (prefix, _location_of(first["loc"])) if part)
    return f"{place}: {message}{tail}"


def import_one(raw: dict[str, Any], *, where: str, actor: str, verified_at: datetime | None) -> str:
    """Register one item (checked before) with every rule, in the caller's transaction.

    ``created``, ``updated`` or ``unchanged``.
    """
    try:
        item = ItemDocument.model_validate(raw)
    except ValidationError as exc:
        raise ImportDocumentError(describe_error(exc, prefix=where)) from None
    return _import_item(item, where=where, actor=actor, verified_at=verified_at)


def _assign(model: pw.Model, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(model, name) != value:
            setattr(model, name, value)
            changed = True
    return changed


def _import_item(
    item: ItemDocument, *, where: str, actor: str, verified_at: datetime | None
) -> str:
    fields = {
        "data_slug": item.data_slug,
        "process_type": item.process_type,
        "status": item.status,
        "created": item.created,
    }
    removing = item.status == REMOVED_STATUS or item.removed is not None
    if item.status == REMOVED_STATUS:
        # "removed" is no producer status: the item keeps the one it had.
        fields["status"] = ITEM_STATUS_DONE
    query = FileStorage.select().where(FileStorage.key == item.key)
    if not is_sqlite(FileStorage._meta.database):
        query = query.for_update()
    storage = query.first()
    existed = storage is not None
    outcome = "unchanged"
    if item.status == REMOVED_STATUS and storage is not None:
        del fields["status"]
    if storage is None:
        storage = FileStorage.create(key=item.key, **fields)
        outcome = "created"
    elif _assign(storage, fields):
        storage.save()
        outcome = "updated"
    if removing and storage.removed is None:
        # At the time given (an export's: its grace goes on), else now.
        mark_removed(storage, now=item.removed or utcnow(), actor=actor)
        outcome = "updated" if outcome == "unchanged" else outcome

    changed: list[int] = []
    added: list[int] = []
    for doc in item.files:
        kind, path_id = _import_file(storage, doc)
        if kind is None:
            continue
        if outcome == "unchanged":
            outcome = "updated"
        if kind == "changed":
            changed.append(path_id)
        elif kind == "created" and existed:
            added.append(path_id)
    asserted: dict[int, LocationDocument] = {}
    places: dict[int, str] = {}
    for number, doc in enumerate(item.locations):
        place = f"{where}.locations.{number}"
        location, touched = _import_location(storage, doc, where=place)
        if touched and outcome == "unchanged":
            outcome = "updated"
        if location is not None and doc.status in (STATUS_DONE, STATUS_DAMAGED):
            if location.status == STATUS_DAMAGED and _unproven(location.id):
                continue  # a copy this catalog deleted, named again: not asserted
            asserted[location.id] = doc
            places[location.id] = place
    if _record_integrity(storage, asserted, changed, added, verified_at, places=places) and (
        outcome == "unchanged"
    ):
        outcome = "updated"
    if outcome != "unchanged":
        now = utcnow()
        Action.create(
            started=now,
            finished=now,
            actor=actor,
            action="register",
            item_key=item.key,
            file_storage=storage,
            result=outcome,
        )
    return outcome


def _record_integrity(
    storage: FileStorage,
    asserted: dict[int, LocationDocument],
    changed: list[int],
    added: list[int],
    verified_at: datetime | None,
    *,
    places: dict[int, str] | None = None,
) -> bool:
    """What changed content does to the item's copies, and the damage a document states.

    The asserted locations hold the new version of ``changed`` and ``added``
    files; the others are damaged. Returns whether any location's files or
    status changed. ``places``: where each asserted location stands in the
    document (``items.N.locations.M``), for the errors.
    """
    now = utcnow()
    touched = False
    when = [doc.last_verified or verified_at for doc in asserted.values()]
    stamp = min((moment for moment in when if moment is not None), default=None)
    for paths, problem in ((changed, STALE), (added, NOT_COPIED)):
        if paths:
            content_changed(
                storage.id,
                paths,
                asserted=set(asserted),
                problem=problem,
                now=now,
                verified_at=stamp,
            )
            touched = True
    damaged = {location_id: doc for location_id, doc in asserted.items() if doc.damaged}
    if not damaged:
        return touched
    before = dict(
        StorageLocation.select(StorageLocation.id, StorageLocation.status)
        .where(StorageLocation.id.in_(list(damaged)))
        .tuples()
    )
    paths_of = dict(
        ReferencedPath.select(ReferencedPath.path, ReferencedPath.id)
        .where(ReferencedPath.file_storage == storage)
        .tuples()
    )
    for location_id, doc in damaged.items():
        unknown = sorted(set(doc.damaged) - set(paths_of))
        if unknown:
            place = (places or {}).get(location_id)
            raise ImportDocumentError(
                f"{place}.damaged: {unknown[0]!r} is not a file of the item"
                if place
                else f"item {storage.key!r}: damaged file {unknown[0]!r} is not a file of the item"
            )
        bad = [(paths_of[path], problem) for path, problem in sorted(doc.damaged.items())]
        unlinked = [path_id for path_id, problem in bad if problem == UNLINKED]
        if unlinked:
            # A file the source never had on this copy, written here since
            # (a repair): the source's old word does not undo it.
            written = set(
                LocationFile.select(LocationFile.referenced_path)
                .where(
                    (LocationFile.storage_location == location_id)
                    & LocationFile.referenced_path.in_(unlinked)
                    & LocationFile.problem.is_null()
                    & LocationFile.validated_by.not_in(["", ASSERTED])
                )
                .tuples()
                .iterator()
            )
            bad = [(path_id, problem) for path_id, problem in bad if (path_id,) not in written]
        record_bad(location_id, bad, now=now)
        if settle(location_id, now=now) != before.get(location_id):
            touched = True
    return touched


#: The history's actions by which this catalog removed a copy's files (``workers``).
_DELETING_ACTIONS = ("delete", "remove")
#: Why a copy this catalog deleted, named again by a document, does not count.
DELETED_HERE = "missing: this catalog deleted this copy at {when}; a document names it again"


def _deleted_here(key: str, connector: str) -> datetime | None:
    """When this catalog last deleted files of item ``key``'s copy on ``connector``, if it did."""
    found = (
        Action.select(pw.fn.MAX(pw.fn.COALESCE(Action.finished, Action.started)))
        .where(
            (Action.item_key == key)
            & Action.action.in_(_DELETING_ACTIONS)
            & (Action.target == connector)
            & (Action.result == "ok")
        )
        .scalar()
    )
    return parse_time(found) if found is not None else None


def _unproven(location_id: int) -> bool:
    """Whether the location's files are bad as ``DELETED_HERE`` says (not proven since)."""
    return bool(
        LocationFile.select()
        .where(
            (LocationFile.storage_location == location_id)
            & LocationFile.problem.startswith("missing: this catalog deleted this copy")
        )
        .exists()
    )


def _import_location(
    storage: FileStorage, doc: LocationDocument, *, where: str
) -> tuple[StorageLocation | None, bool]:
    """The location ``doc`` describes, created or updated; and whether it changed.

    A location the catalog knows to be damaged stays so when the document
    says ``OK``: the document asserts, a verification found otherwise. Its
    last update (last access) never moves back. A copy this catalog deleted
    (its history says so) is not brought back by a document that says
    nothing newer of it (its ``last_update`` is not later than the delete):
    None. One it names as changed since is created damaged, each file
    ``DELETED_HERE``: counted once a verification or a repair proves it.
    """
    values: dict[str, Any] = {
        "status": doc.status,
        "last_update": doc.last_update or storage.created,
        "last_verified": doc.last_verified,
    }
    location = StorageLocation.get_or_none(
        (StorageLocation.connector_name == doc.connector) & (StorageLocation.url == doc.url)
    )
    changed = False
    if location is not None and location.file_storage_id != storage.id:
        owner = FileStorage.get_by_id(location.file_storage_id)
        raise ImportDocumentError(
            f"{where}: {doc.connector}:{doc.url} already belongs to item {owner.key!r}"
        )
    if location is None:
        other = StorageLocation.get_or_none(
            (StorageLocation.file_storage == storage)
            & (StorageLocation.connector_name == doc.connector)
        )
        if other is not None:
            raise ImportDocumentError(
                f"{where}: item {storage.key!r} already has a location on {doc.connector!r} "
                f"at url {other.url!r}"
            )
        for _, theirs, key in locations_at(doc.connector, [doc.url]):
            # Inside or around another item's location: the two would share
            # files, and a delete of one's copy would remove the other's.
            how = "inside" if doc.url.startswith(f"{theirs}/") else "around"
            raise ImportDocumentError(
                f"{where}: {doc.connector}:{doc.url} lies {how} item {key!r}'s location "
                f"{doc.connector}:{theirs}"
            )
        deleted = (
            _deleted_here(storage.key, doc.connector)
            if doc.status in (STATUS_DONE, STATUS_DAMAGED)
            else None
        )
        if deleted is not None and values["last_update"] <= deleted:
            return None, False  # the document's view is older than this catalog's delete
        location = StorageLocation.create(
            file_storage=storage, connector_name=doc.connector, url=doc.url, **values
        )
        if deleted is not None:
            now = utcnow()
            problem = DELETED_HERE.format(when=f"{deleted:%Y-%m-%dT%H:%M:%SZ}")
            files = ReferencedPath.select(ReferencedPath.id).where(
                (ReferencedPath.file_storage == storage) & ~ReferencedPath.path.endswith("/")
            )
            record_bad(location.id, [(entry.id, problem) for entry in files], now=now)
            settle(location.id, now=now)
            location = StorageLocation.get_by_id(location.id)
        changed = True
    else:
        if location.last_update is not None and values["last_update"] < location.last_update:
            # A later access recorded here stands (``catalog.queries.record_access``).
            del values["last_update"]
        if location.status == STATUS_DELETING:
            # Its delete is under way (its files going): that is ours to
            # finish or stop; a document cannot make it a copy again.
            del values["status"]
        elif location.status == STATUS_DAMAGED and doc.status == STATUS_DONE:
            del values["status"]
        if location.last_verified is not None and location.status in (
            STATUS_DONE,
            STATUS_DAMAGED,
        ):
            # What the catalog found by verifying wins over what a document says.
            del values["last_verified"]
        if _assign(location, values):
            # Its status may have changed: a copy under way made OK lacks rows.
            location.files_recorded = False
            location.save()
            changed = True
    return location, _reconcile_locks(location, doc.open_access_logs) or changed


#: Why a file of a copy Resolwe holds as done is not counted on it: Resolwe links
#: each file to the copies that hold it, and does not link it to this one.
UNLINKED = "missing: the source does not link this file to this copy"
#: Why a copy only the source vouched for no longer counts once the source drops it.
UNLISTED = "missing: the source no longer lists this copy (deleted there)"


def withdraw_unlisted(listed: Mapping[int, Collection[str]], *, now: datetime) -> set[int]:
    """Of the items ``listed`` (item id -> the connectors of the copies its source lists),
    the copies the source vouched for and no longer lists: not counted; the items with one.

    For a source that lists every copy it has (``import --from-resolwe``):
    a copy (``OK`` or damaged) on a connector not listed of which no file was
    proven here (by a transfer, a repair, a verification, or an ingest's
    hashing: ``verified`` or a ``validated_by`` of its own) counted on the
    source's word alone, which it has taken back (Resolwe deleted its files,
    then the row): each file is ``UNLISTED`` (damaged, counted again once a
    verification or repair proves it) and the source's locks on it are
    closed with it. A copy made or proven here stands, and so does one being
    written or deleted (ours to finish). A few statements for a batch of
    items, not a few an item.
    """
    proven = LocationFile.select().where(
        (LocationFile.storage_location == StorageLocation.id)
        & (LocationFile.verified.is_null(False) | LocationFile.validated_by.not_in(["", ASSERTED]))
    )
    ids = list(listed)
    withdrawn: list[StorageLocation] = []
    for start in range(0, len(ids), _BATCH):
        withdrawn += [
            location
            for location in StorageLocation.select()
            .where(
                StorageLocation.file_storage.in_(ids[start : start + _BATCH])
                & StorageLocation.status.in_([STATUS_DONE, STATUS_DAMAGED])
                & ~pw.fn.EXISTS(proven)
            )
            .order_by(StorageLocation.id)
            if location.connector_name not in listed[location.file_storage_id]
        ]
    if not withdrawn:
        return set()
    items = sorted({location.file_storage_id for location in withdrawn})
    files: dict[int, list[tuple[int, str]]] = {}
    for start in range(0, len(items), _BATCH):
        for entry in ReferencedPath.select(ReferencedPath.id, ReferencedPath.file_storage).where(
            ReferencedPath.file_storage.in_(items[start : start + _BATCH])
            & ~ReferencedPath.path.endswith("/")
        ):
            files.setdefault(entry.file_storage_id, []).append((entry.id, UNLISTED))
    touched: set[int] = set()
    for location in withdrawn:
        bad = files.get(location.file_storage_id)
        if not bad:
            continue  # a copy of no file holds nothing to count
        record_bad(location.id, bad, now=now)
        settle(location.id, now=now)
        _reconcile_locks(location, 0)
        touched.add(location.file_storage_id)
    return touched


#: Items looked at per statement by ``withdraw_unlisted``.
_BATCH = 500


def _reconcile_locks(location: StorageLocation, wanted: int) -> bool:
    """Make the location hold exactly ``wanted`` open import locks."""
    open_logs = list(
        AccessLog.select()
        .where(
            (AccessLog.storage_location == location)
            & AccessLog.finished.is_null()
            & (AccessLog.reason == IMPORT_LOCK_REASON)
        )
        .order_by(AccessLog.id)
    )
    if len(open_logs) == wanted:
        return False
    if len(open_logs) < wanted:
        AccessLog.insert_many(
            [{"storage_location": location.id, "reason": IMPORT_LOCK_REASON}]
            * (wanted - len(open_logs))
        ).execute()
    else:
        surplus = [log.id for log in open_logs[wanted:]]
        AccessLog.update(finished=utcnow()).where(AccessLog.id.in_(surplus)).execute()
    return True


#: What identifies a file's content: a hash of other bytes means other bytes.
_CONTENT = ("size", "md5", "crc32c")


def _import_file(storage: FileStorage, doc: FileDocument) -> tuple[str | None, int]:
    """Create or update the file ``doc`` of ``storage``; what happened, and its id.

    ``created``, ``changed`` (its content: another size or hash), ``updated``
    (hashes filled in, the same bytes) or None (nothing to do).
    """
    values = {
        "size": doc.size,
        "md5": doc.md5,
        "crc32c": doc.crc32c,
        "awss3etag": doc.awss3etag,
        "chunk_size": doc.chunk_size,
    }
    existing = ReferencedPath.get_or_none(
        (ReferencedPath.file_storage == storage) & (ReferencedPath.path == doc.path)
    )
    if existing is None:
        return "created", ReferencedPath.create(file_storage=storage, path=doc.path, **values).id
    # Omitted means unknown, not changed: what the document leaves out is
    # kept, unless the file changed (then a hash left out belongs to the
    # old bytes).
    given = {name: value for name, value in values.items() if name in doc.model_fields_set}
    same_parts = "chunk_size" not in given or given["chunk_size"] == existing.chunk_size
    # The size and hashes both sides know: what the bytes are judged by.
    judged = [
        name
        for name in _CONTENT
        if getattr(existing, name) is not None and given.get(name) is not None
    ]
    etag_differs = (
        existing.awss3etag is not None
        and given.get("awss3etag") is not None
        and existing.awss3etag != given["awss3etag"]
    )
    # An S3 etag of another part size may be another etag of the same
    # bytes: the size and hashes given judge that. With none of them it
    # tells nothing, and the file is taken as changed: the other copies
    # are copied again from the document's, rather than kept counting for
    # bytes nobody can say they hold.
    content = any(getattr(existing, name) != given[name] for name in judged) or (
        etag_differs and (same_parts or not judged)
    )
    if _assign(existing, values if content else given):
        existing.save()
        return ("changed" if content else "updated"), existing.id
    return None, existing.id


__all__ = [
    "InvalidPathError",
    "import_one",
    "parse_time",
    "withdraw_unlisted",
]
