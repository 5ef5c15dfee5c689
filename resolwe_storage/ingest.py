"""Registering a folder under a local connector as one item, hashing every file once."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import peewee as pw

from catalog.models import STATUS_DAMAGED, STATUS_DONE, FileStorage, utcnow
from catalog.paths import check_relative_path
from catalog.queries import ingest_state, locations_around
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
            relative = path.relative_to(top).as_posix()
            check_relative_path(relative)  # before hours of hashing, not after
            yield relative, real


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
    if not key:
        # Checked before the hashing, which may take hours, not after it.
        raise InputError("--key: an item's key must not be empty")
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
    url = check_relative_path(top.relative_to(root).as_posix(), what="url")
    _check_place(connector, url, key)

    files = list(_walk(root, top))
    total = sum(real.stat().st_size for _, real in files)
    entries: list[dict[str, Any]] = []
    #: What each file was when its hashes were taken (``_identity``).
    hashed: dict[str, tuple[int, ...]] = {}
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
            hashed[relative] = _identity(after)
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
    state = ingest_state(key, connector, url)
    for entry in entries:
        found = state.bad.get(entry["path"])
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
    gone = sorted(set(state.files) - {entry["path"] for entry in entries})
    if gone:
        # The item's file is no longer in the folder: the copy here cannot be
        # asserted whole (an item's files are never dropped by a new version).
        raise InputError(
            f"{directory}: item {key!r} has file {gone[0]!r}, which is not in the folder"
            + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")
        )
    # Locks an import left on the copy are another reader's: kept.
    document["items"][0]["locations"][0]["open_access_logs"] = state.import_locks
    # Re-ingesting refreshes the hashes; the item keeps its creation time and
    # the location its last access, so re-ingesting unchanged files changes nothing.
    if state.created is not None:
        document["items"][0]["created"] = state.created.isoformat()
    if state.last_update is not None:
        document["items"][0]["locations"][0]["last_update"] = state.last_update.isoformat()
    # Last before the catalog is written: hashing may have taken hours, and
    # the folder, the item's removal or its copy's delete may be new since.
    _check_unchanged(root, top, hashed)
    _check_place(connector, url, key)
    result = import_document(
        document, connectors=set(config.connectors), database=database, actor="ingest"
    )
    outcome = "created" if result.created else ("updated" if result.updated else "unchanged")
    return {"key": key, "url": url, "files": len(entries), "bytes": total, "result": outcome}


def _identity(found: os.stat_result) -> tuple[int, ...]:
    """What changes when a file is written to or replaced."""
    return (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def _check_unchanged(root: Path, top: Path, hashed: dict[str, tuple[int, ...]]) -> None:
    """Refuse a folder whose files are no longer those hashed (``hashed``: their identities).

    A file hashed early and rewritten or removed while later ones were
    hashed would be recorded good on a copy that no longer holds those
    bytes; a file added meanwhile says the producer is still writing.
    """
    found: dict[str, tuple[int, ...] | None] = {}
    for relative, real in _walk(root, top):
        try:
            found[relative] = _identity(real.stat())
        except OSError:  # gone since the walk saw it
            found[relative] = None
    for relative in sorted(set(found) | set(hashed)):
        if found.get(relative) != hashed.get(relative):
            raise InputError(
                f"{top / relative}: changed while the folder was hashed; ingest it once it is done"
            )


def _check_place(connector: str, url: str, key: str) -> None:
    """Refuse a folder that overlaps another item's location on ``connector``, or whose
    copy of the item is being written or deleted (the workers' business).

    A folder inside another item's, or holding one, would share its files: a
    delete of either copy would remove the other's bytes. A removed item's
    copies go after its grace whatever is registered, so bytes ingested
    under its key would go with them.
    """
    removed = FileStorage.select(FileStorage.removed).where(FileStorage.key == key).scalar()
    if removed is not None:
        raise InputError(
            f"item {key!r} was removed {removed:%Y-%m-%dT%H:%M:%SZ}: its copies go after the "
            "grace; restore it first, or ingest under another key"
        )
    for theirs, owner, status in locations_around(connector, url):
        if owner != key:
            raise InputError(
                f"{connector}:{url} overlaps {connector}:{theirs}, another item's location "
                f"(item {owner!r})"
            )
        if theirs == url and status not in (STATUS_DONE, STATUS_DAMAGED):
            raise InputError(
                f"{connector}:{url}: the copy of item {key!r} there is {status} "
                "(being written or deleted); ingest it once that is done"
            )
