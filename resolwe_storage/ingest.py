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
                hashes = hash_stream(stream, chunk_size=DEFAULT_CHUNK_SIZE, progress=bar.update)
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
    created, last_update = _existing_times(key, connector, url)
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


def _existing_times(key: str, connector: str, url: str) -> tuple[str | None, str | None]:
    """The item's creation time and its location's last access, if already registered."""
    from catalog.models import FileStorage, StorageLocation

    item = FileStorage.get_or_none(FileStorage.key == key)
    if item is None:
        return None, None
    location = StorageLocation.get_or_none(
        (StorageLocation.file_storage == item)
        & (StorageLocation.connector_name == connector)
        & (StorageLocation.url == url)
    )
    last_update = location.last_update.isoformat() if location is not None else None
    return item.created.isoformat(), last_update
