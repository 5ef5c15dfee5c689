"""Confirming copies on their backends before a delete counts on them (SPEC §5).

Before a copy is deleted, the other copies it leaves are confirmed: each of
their files exists with the catalog's size, and the checksum its backend
states without reading the bytes matches where there is one. One listing of
a copy's folder answers this for all its files (S3 lists sizes and ETags,
GCS sizes, crc32c and md5, a local folder sizes).

An ETag proves a file only when it is the catalog's md5 (one part) or its
part-wise etag; any other ETag (another part size, server-side encryption
with KMS) proves nothing either way, and the file is asked about alone
(S3 states a full-object CRC32C on request where it keeps one), then, if
still undecided, read back. A problem is only ever what the backend
answered: an object missing, or of another size or checksum; an error
reaching the backend is raised, never taken for one.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from typing import Any

import peewee as pw

from catalog.models import ReferencedPath, StorageLocation
from catalog.sql import is_sqlite
from connectors.base import CRC32C, ETAG, MD5, Connector, ObjectInfo, confirm_absence
from connectors.errors import InvalidPath
from workers.verify import FileProblem, object_path, read_and_compare


def confirm_copy(
    location: StorageLocation, connector: Connector, entries: Sequence[ReferencedPath]
) -> list[FileProblem]:
    """The files of ``entries`` that ``location`` does not hold as the catalog says.

    Empty when the copy is confirmed. Raises the connector's error when the
    backend cannot answer (nothing is concluded then).
    """
    files = [entry for entry in entries if not entry.path.endswith("/")]
    if not files:
        return []
    listed = {
        info.path: info
        for prefix in _listed_prefixes(location, files)
        for info in connector.list(prefix)
    }
    problems = []
    for entry in files:
        where = object_path(location, entry.path)
        info = listed.get(where)
        if info is None:
            # Not under the folder as listed (a folder reached through a
            # link lists under its target's name): ask about the object.
            try:
                info = connector.stat(where)
            except InvalidPath as exc:
                # A link out of the connector's root: its bytes are not there
                # (as a verification finds, ``read_and_compare``).
                problems.append(FileProblem(entry.path, f"not under the connector's root: {exc}"))
                continue
        if info is None:
            confirm_absence(connector, where)  # a root not there answers nothing
            problems.append(FileProblem(entry.path, "missing"))
            continue
        problem = _judge(connector, where, info, entry)
        if problem is not None:
            problems.append(FileProblem(entry.path, problem))
    return problems


#: A job's files in up to this many folders (none inside another) may be
#: confirmed by a listing of each; in more, by one listing of the folder that
#: holds them all, rather than a request per folder.
DEFAULT_LISTED_FOLDERS = 8
#: Objects one listing request returns at most (S3's and GCS's page): a
#: listing costs a request a page, however few objects it holds.
DEFAULT_LISTING_PAGE = 1000


def _listed_prefixes(location: StorageLocation, files: Sequence[ReferencedPath]) -> list[str]:
    """The folders of the copy to list, which between them hold every one of ``files``.

    A delete's later jobs confirm only their own files; where those lie in
    a few folders of a large item, those folders are listed, not the whole
    copy (an item of 50,000 files in 50 folders: each job listed 50,000
    entries; a job of 128 files across two folders still listed them all).
    Where the folder that holds them all takes no more pages (by the
    catalog's count of the item's files), it is listed once instead: a
    small item's few folders cost one request, not one each.
    """
    folders = {posixpath.dirname(entry.path) for entry in files}
    # A folder inside another listed one is listed with it.
    tops = sorted(
        folder
        for folder in folders
        if folder and not any(parent in folders for parent in _parents(folder))
    )
    if "" in folders:
        tops = [""]
    elif len(tops) > 1:
        common = posixpath.commonpath(tops)
        item_id = files[0].file_storage_id
        together = _pages(_files_under(item_id, common))
        if (
            together == 1
            or len(tops) > DEFAULT_LISTED_FOLDERS
            or together <= sum(_pages(_files_under(item_id, top)) for top in tops)
        ):
            tops = [common]
    base = location.url.rstrip("/")
    return [f"{base}/{top}/" if top else f"{base}/" for top in tops]


def _files_under(item_id: int, folder: str) -> int:
    """The catalog's count of the item's paths under ``folder`` ("": all of them)."""
    query = ReferencedPath.select().where(ReferencedPath.file_storage == item_id)
    if folder:
        # The paths that begin with "folder/": a range in byte order ("0"
        # follows "/"), which a PostgreSQL collation other than "C" is not.
        path: Any = ReferencedPath.path
        if not is_sqlite(ReferencedPath._meta.database):
            path = pw.NodeList((path, pw.SQL('COLLATE "C"')))
        query = query.where((path >= f"{folder}/") & (path < f"{folder}0"))
    return int(query.count())


def _pages(objects: int) -> int:
    """The listing requests ``objects`` take (at least one)."""
    return max(1, -(-objects // DEFAULT_LISTING_PAGE))


def _parents(folder: str) -> Iterator[str]:
    """The folders that hold ``folder``, innermost first, the copy's own ("") excluded."""
    while "/" in folder:
        folder = folder.rsplit("/", 1)[0]
        yield folder


def _judge(connector: Connector, where: str, info: ObjectInfo, entry: ReferencedPath) -> str | None:
    """What is wrong with the object ``info`` describes (None: nothing we can tell)."""
    if entry.size is not None and info.size != entry.size:
        return f"size {info.size}, catalog says {entry.size}"
    stated = {kind: value for kind, value in info.hashes.items() if value}
    if not stated:
        return None  # a backend that states no hash: the size was all there is
    verdict = _by_hashes(stated, entry)
    if verdict is not _UNDECIDED:
        return verdict  # type: ignore[return-value]
    # An ETag that proves nothing either way: what the object alone states ...
    alone = connector.stat(where)
    if alone is None:
        confirm_absence(connector, where)
        return "missing"
    verdict = _by_hashes({k: v for k, v in alone.hashes.items() if v and k != ETAG}, entry)
    if verdict is not _UNDECIDED:
        return verdict  # type: ignore[return-value]
    # ... and else its bytes.
    problem, _ = read_and_compare(connector, where, entry)
    return problem


class _Undecided:
    pass


_UNDECIDED = _Undecided()


def _by_hashes(hashes: dict[str, str], entry: ReferencedPath) -> str | _Undecided | None:
    """A verdict from stated hashes: None (good), a problem, or undecided."""
    if entry.crc32c and CRC32C in hashes:
        if hashes[CRC32C] == entry.crc32c.lower():
            return None
        return f"crc32c {hashes[CRC32C]}, catalog says {entry.crc32c}"
    if entry.md5 and MD5 in hashes:
        if hashes[MD5] == entry.md5.lower():
            return None
        return f"md5 {hashes[MD5]}, catalog says {entry.md5}"
    if ETAG in hashes:
        known = {value.lower() for value in (entry.md5, entry.awss3etag) if value}
        if hashes[ETAG] in known:
            return None
    return _UNDECIDED
