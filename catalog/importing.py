"""Registering items from an import document (SPEC §6), atomically and idempotently.

The whole document is validated before anything is written, then written in
one transaction: a document with one bad entry stores nothing. Items are
matched by ``key``, locations by (connector, url), files by path, so importing
the same document twice leaves the catalog as the first import did.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
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
from catalog.models import (
    DEFAULT_CHUNK_SIZE,
    AccessLog,
    Action,
    FileStorage,
    ReferencedPath,
    StorageLocation,
    utcnow,
)
from catalog.paths import check_relative_path

#: Reason recorded on the access logs an import document asks for.
IMPORT_LOCK_REASON = "import"


def parse_time(value: Any) -> datetime:
    """Parse ISO-8601 text into naive UTC; a time without zone is UTC."""
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
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


Time = Annotated[datetime, BeforeValidator(parse_time)]
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_HEX8 = re.compile(r"^[0-9a-f]{8}$")
_ETAG = re.compile(r"^[0-9a-f]{32}(-[1-9][0-9]*)?$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocationDocument(_Strict):
    connector: StrictStr
    url: StrictStr
    status: Literal["PR", "UP", "OK", "DE"] = "OK"
    last_update: Time | None = None
    last_verified: Time | None = None
    open_access_logs: Annotated[StrictInt, Field(ge=0)] = 0

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_relative_path(value.rstrip("/") or value, what="url")


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
    locations: list[LocationDocument] = []
    files: list[FileDocument] = []


class ImportDocument(_Strict):
    items: list[ItemDocument]


@dataclass(frozen=True)
class ImportResult:
    """What an import did: items created, updated, and left as they were."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0

    def as_json(self) -> dict[str, int]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}


def _location_of(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def validate_document(document: Any, *, connectors: Collection[str]) -> ImportDocument:
    """Validate a parsed import document; raise ImportDocumentError naming the spot."""
    if not isinstance(document, dict):
        raise ImportDocumentError(
            f"expected a JSON object with an 'items' list, got {type(document).__name__}"
        )
    try:
        parsed = ImportDocument.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        elif first["type"] == "missing":
            message = "required key is missing"
        more = len(exc.errors()) - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ImportDocumentError(f"{_location_of(first['loc'])}: {message}{tail}") from None

    keys: dict[str, int] = {}
    places: dict[tuple[str, str], str] = {}
    for index, item in enumerate(parsed.items):
        where = f"items.{index}"
        if item.key in keys:
            raise ImportDocumentError(
                f"{where}.key: {item.key!r} appears twice (also items.{keys[item.key]})"
            )
        keys[item.key] = index
        on_connector: set[str] = set()
        for number, location in enumerate(item.locations):
            spot = f"{where}.locations.{number}"
            if location.connector not in connectors:
                named = ", ".join(sorted(connectors)) or "none"
                raise ImportDocumentError(
                    f"{spot}.connector: {location.connector!r} is not a configured connector "
                    f"(configured: {named})"
                )
            if location.connector in on_connector:
                raise ImportDocumentError(
                    f"{spot}: a second location on {location.connector!r} for one item"
                )
            on_connector.add(location.connector)
            place = (location.connector, location.url)
            if place in places and places[place] != item.key:
                raise ImportDocumentError(
                    f"{spot}: {location.connector}:{location.url} also belongs to "
                    f"item {places[place]!r}"
                )
            places[place] = item.key
        paths: set[str] = set()
        for number, file in enumerate(item.files):
            if file.path in paths:
                raise ImportDocumentError(
                    f"{where}.files.{number}.path: {file.path!r} appears twice"
                )
            paths.add(file.path)
    return parsed


def import_document(
    document: Any,
    *,
    connectors: Collection[str],
    database: pw.Database,
    actor: str = "import",
) -> ImportResult:
    """Validate ``document`` and register its items in one transaction.

    ``connectors`` are the configured connector names; a location on any other
    is an error. Nothing is stored unless everything is valid.
    """
    parsed = validate_document(document, connectors=connectors)
    created = updated = unchanged = 0
    try:
        with database.atomic():
            for index, item in enumerate(parsed.items):
                outcome = _import_item(item, where=f"items.{index}", actor=actor)
                if outcome == "created":
                    created += 1
                elif outcome == "updated":
                    updated += 1
                else:
                    unchanged += 1
    except pw.IntegrityError:
        # The checks above read the catalog first; a concurrent writer can
        # still register the same key or location between read and write.
        raise ImportDocumentError(
            "another writer registered one of these items or locations at the same time; "
            "nothing was stored, import again"
        ) from None
    return ImportResult(created, updated, unchanged)


def _assign(model: pw.Model, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(model, name) != value:
            setattr(model, name, value)
            changed = True
    return changed


def _import_item(item: ItemDocument, *, where: str, actor: str) -> str:
    fields = {
        "data_slug": item.data_slug,
        "process_type": item.process_type,
        "status": item.status,
        "created": item.created,
    }
    storage = FileStorage.get_or_none(FileStorage.key == item.key)
    outcome = "unchanged"
    if storage is None:
        storage = FileStorage.create(key=item.key, **fields)
        outcome = "created"
    elif _assign(storage, fields):
        storage.save()
        outcome = "updated"

    for number, doc in enumerate(item.locations):
        if _import_location(storage, doc, where=f"{where}.locations.{number}") and (
            outcome == "unchanged"
        ):
            outcome = "updated"
    for doc in item.files:
        if _import_file(storage, doc) and outcome == "unchanged":
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


def _import_location(storage: FileStorage, doc: LocationDocument, *, where: str) -> bool:
    values = {
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
        location = StorageLocation.create(
            file_storage=storage, connector_name=doc.connector, url=doc.url, **values
        )
        changed = True
    elif _assign(location, values):
        location.save()
        changed = True
    return _reconcile_locks(location, doc.open_access_logs) or changed


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


def _import_file(storage: FileStorage, doc: FileDocument) -> bool:
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
        ReferencedPath.create(file_storage=storage, path=doc.path, **values)
        return True
    # Omitted means unknown, not changed: what the document leaves out is
    # kept, unless what it gives contradicts what is stored (then the file
    # changed, and a hash left out belongs to the old bytes).
    given = {name: value for name, value in values.items() if name in doc.model_fields_set}
    changed = any(
        getattr(existing, name) is not None and getattr(existing, name) != value
        for name, value in given.items()
    )
    if _assign(existing, values if changed else given):
        existing.save()
        return True
    return False


def register_files(storage: FileStorage, files: Iterable[dict[str, Any]]) -> None:
    """Upsert ``files`` (dicts with ``path`` and hashes) of ``storage``."""
    for values in files:
        doc = FileDocument.model_validate(values)
        _import_file(storage, doc)


__all__ = [
    "ImportDocument",
    "ImportResult",
    "InvalidPathError",
    "import_document",
    "parse_time",
    "register_files",
    "validate_document",
]
