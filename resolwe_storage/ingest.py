"""Registering a folder under a local connector as one item, hashing every file once."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import peewee as pw

from catalog.models import utcnow
from catalog.streaming import import_document
from connectors.hashing import DEFAULT_CHUNK_SIZE, hash_stream
from connectors.registry import LOCAL
from resolwe_storage.config import Config
from resolwe_storage.errors import InputError


def _walk(root: Path, top: Path) -> Iterator[tuple[str, Path]]:
    """Yield (relative '/'-path, real path) of every file below ``top``, sorted.

    A symbolic link to a file is followed only while it stays inside ``top``:
    a copy of the item must hold its own bytes, and a link into another
    item's folder would break when that item's copy here is deleted.
    """
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        here = Path(dirpath)
        for name in list(dirnames):
            link = here / name
            if link.is_symlink():
                raise InputError(f"{link}: is a symbolic link to a folder; refusing to follow it")
        for name in sorted(filenames):
            path = here / name
            real = path.resolve()
            if not real.is_relative_to(root):
                raise InputError(f"{path}: links outside the connector root {root}")
            if not real.is_relative_to(top):
                raise InputError(f"{path}: links outside the item's folder {top}")
            if not real.is_file():
                raise InputError(f"{path}: not a regular file")
            yield path.relative_to(top).as_posix(), real


def ingest_directory(
    config: Config,
    database: pw.Database,
    *,
    connector: str,
    directory: Path,
    key: str,
    data_slug: str = "",
    process_type: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Hash every file under ``directory`` and register the item with its location.

    ``directory`` must lie under the root of the local connector ``connector``;
    its path relative to that root becomes the location's url. The catalog is
    written in one transaction once every file is hashed, so a failure midway
    stores nothing.
    """
    settings = config.connectors.get(connector)
    if settings is None:
        named = ", ".join(sorted(config.connectors)) or "none"
        raise InputError(f"connector {connector!r} is not configured (configured: {named})")
    if settings.kind != LOCAL:
        raise InputError(f"connector {connector!r} is {settings.kind}, not a local connector")
    root = Path(settings.settings.path).resolve()  # type: ignore[attr-defined]
    top = directory.resolve()
    if not top.is_dir():
        raise InputError(f"{directory}: not a folder")
    if not top.is_relative_to(root) or top == root:
        raise InputError(
            f"{directory}: not a folder under the root {root} of connector {connector!r}"
        )
    url = top.relative_to(root).as_posix()
    _check_place(connector, url, key)

    files = list(_walk(root, top))
    total = sum(real.stat().st_size for _, real in files)
    entries: list[dict[str, Any]] = []
    with click.progressbar(
        length=total,
        label=f"hashing {len(files)} file(s)",
        file=sys.stderr,
        show_pos=False,
        hidden=not progress,
    ) as bar:
        for relative, real in files:
            with real.open("rb") as stream:
                before = os.fstat(stream.fileno())
                hashes = hash_stream(stream, chunk_size=DEFAULT_CHUNK_SIZE, progress=bar.update)
                after = os.fstat(stream.fileno())
            if _identity(before) != _identity(after) or hashes.size != after.st_size:
                # Bytes half old and half new: their hashes describe no version.
                raise InputError(f"{real}: changed while it was hashed; ingest it once it is done")
            entries.append(
                {
                    "path": relative,
                    "size": hashes.size,
                    "md5": hashes.md5,
                    "crc32c": hashes.crc32c,
                    "awss3etag": hashes.awss3etag,
                    "chunk_size": hashes.chunk_size,
                }
            )
    now = utcnow().isoformat()
    document = {
        "items": [
            {
                "key": key,
                "data_slug": data_slug,
                "process_type": process_type,
                "status": "OK",
                "created": now,
                "locations": [
                    {"connector": connector, "url": url, "status": "OK", "last_update": now}
                ],
                "files": entries,
            }
        ]
    }
    created, last_update, locks, known, bad = _existing_times(key, connector, url)
    for entry in entries:
        found = bad.get(entry["path"])
        ingested = (entry["size"], entry["md5"], entry["crc32c"])
        if found is not None and any(
            known_value is not None and known_value != value
            for known_value, value in zip(found[:3], ingested, strict=True)
        ):
            # Bytes known bad here (corrupt, or an older version than another
            # copy's) are no new version: the good copies would be made stale
            # and then repaired from these.
            raise InputError(
                f"{directory}: {entry['path']!r} is recorded bad on this copy ({found[3]}); "
                "verify or repair it first"
            )
    gone = sorted(set(known) - {entry["path"] for entry in entries})
    if gone:
        # The item's file is no longer in the folder: the copy here cannot be
        # asserted whole (an item's files are never dropped by a new version).
        raise InputError(
            f"{directory}: item {key!r} has file {gone[0]!r}, which is not in the folder"
            + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")
        )
    # Locks an import left on the copy are another reader's: kept.
    document["items"][0]["locations"][0]["open_access_logs"] = locks
    # Re-ingesting refreshes the hashes; the item keeps its creation time and
    # the location its last access, so re-ingesting unchanged files changes nothing.
    if created is not None:
        document["items"][0]["created"] = created
    if last_update is not None:
        document["items"][0]["locations"][0]["last_update"] = last_update
    result = import_document(
        document, connectors=set(config.connectors), database=database, actor="ingest"
    )
    outcome = "created" if result.created else ("updated" if result.updated else "unchanged")
    return {"key": key, "url": url, "files": len(entries), "bytes": total, "result": outcome}


def _identity(found: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written to or replaced."""
    return (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def _check_place(connector: str, url: str, key: str) -> None:
    """Refuse a folder that overlaps another item's location on ``connector``, or whose
    copy of the item is being written or deleted (the workers' business).

    A folder inside another item's, or holding one, would share its files: a
    delete of either copy would remove the other's bytes.
    """
    from catalog.models import (
        STATUS_DAMAGED,
        STATUS_DONE,
        FileStorage,
        StorageLocation,
    )

    ancestors = [url.rsplit("/", depth)[0] for depth in range(1, url.count("/") + 1)]
    for location in (
        StorageLocation.select(StorageLocation, FileStorage)
        .join(FileStorage)
        .where(
            (StorageLocation.connector_name == connector)
            & (
                StorageLocation.url.in_([url, f"{url}/", *ancestors, *(f"{a}/" for a in ancestors)])
                | StorageLocation.url.startswith(f"{url}/")
            )
        )
    ):
        theirs = location.url.rstrip("/")
        related = theirs == url or theirs in ancestors or theirs.startswith(f"{url}/")
        if not related:
            continue  # a case-insensitive match of startswith
        if location.file_storage.key != key:
            raise InputError(
                f"{connector}:{url} overlaps {connector}:{theirs}, another item's location "
                f"(item {location.file_storage.key!r})"
            )
        if theirs == url and location.status not in (STATUS_DONE, STATUS_DAMAGED):
            raise InputError(
                f"{connector}:{url}: the copy of item {key!r} there is {location.status} "
                "(being written or deleted); ingest it once that is done"
            )


def _existing_times(
    key: str, connector: str, url: str
) -> tuple[
    str | None,
    str | None,
    int,
    list[str],
    dict[str, tuple[int | None, str | None, str | None, str]],
]:
    """The item's creation time, its location's last access and open import locks, the
    item's files (not folders), and the files bad on the location (the catalog's size,
    md5, crc32c, and why), if already registered."""
    from catalog.importing import IMPORT_LOCK_REASON
    from catalog.models import (
        AccessLog,
        FileStorage,
        LocationFile,
        ReferencedPath,
        StorageLocation,
    )

    item = FileStorage.get_or_none(FileStorage.key == key)
    if item is None:
        return None, None, 0, [], {}
    location = StorageLocation.get_or_none(
        (StorageLocation.file_storage == item)
        & (StorageLocation.connector_name == connector)
        & (StorageLocation.url == url)
    )
    last_update = location.last_update.isoformat() if location is not None else None
    locks = (
        AccessLog.select()
        .where(
            (AccessLog.storage_location == location)
            & AccessLog.finished.is_null()
            & (AccessLog.reason == IMPORT_LOCK_REASON)
        )
        .count()
        if location is not None
        else 0
    )
    elsewhere = StorageLocation.get_or_none(
        (StorageLocation.file_storage == item)
        & (StorageLocation.connector_name == connector)
        & (StorageLocation.url != url)
    )
    if elsewhere is not None:
        return item.created.isoformat(), last_update, locks, [], {}  # the import refuses it
    known = [
        path
        for (path,) in ReferencedPath.select(ReferencedPath.path)
        .where(ReferencedPath.file_storage == item)
        .tuples()
        if not path.endswith("/")
    ]
    bad = (
        {
            path: (size, md5, crc32c, problem)
            for path, size, md5, crc32c, problem in ReferencedPath.select(
                ReferencedPath.path,
                ReferencedPath.size,
                ReferencedPath.md5,
                ReferencedPath.crc32c,
                LocationFile.problem,
            )
            .join(LocationFile, on=(LocationFile.referenced_path == ReferencedPath.id))
            .where(
                (LocationFile.storage_location == location) & LocationFile.problem.is_null(False)
            )
            .tuples()
        }
        if location is not None
        else {}
    )
    return item.created.isoformat(), last_update, locks, known, bad
