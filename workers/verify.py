"""Verifying a copy: re-hash its files and compare them with the catalog.

A job verifies some files of a location (``verify_files``; small files
share a job, as copies do), the command line all of them at once
(``verify_location``). Every file is checked, and every problem reported
(not just the first). Each file's outcome is recorded on its own
(``catalog.integrity``): one found intact is verified now; one missing, or
of another size or checksum, is bad, and its copy damaged (``DM``) until
repaired. The location's ``last_verified`` is that of its least recently
verified file. Each run leaves one row in the action history.

Only the backend's answer is evidence: an object that is not there, or
whose bytes differ. An error reaching or reading it (a timeout, a refused
credential) says nothing about the bytes: what was found before it is
recorded, and the error raised, for the job to be retried.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from catalog.integrity import (
    content_of,
    describe_lost,
    keys_of,
    lost_files,
    record_bad,
    record_good,
    settle,
    still_current,
)
from catalog.models import STATUS_DAMAGED, Action, ReferencedPath, StorageLocation
from catalog.paths import files_label
from catalog.queries import locked_item
from connectors.base import ETAG, Connector, confirm_absence, read_run
from connectors.errors import InvalidPath, ObjectNotFound
from connectors.hashing import DEFAULT_CHUNK_SIZE, crc32c_stream, etag_differs, hash_stream

#: ``Action.result`` of a verification that found a file not as the catalog says.
DAMAGED = "damaged"


class FileProblem(NamedTuple):
    """One file of a location that is not as the catalog says."""

    path: str
    problem: str


@dataclass
class VerifyReport:
    """What verifying one location found."""

    key: str | None
    connector: str
    url: str
    files: int = 0
    bytes: int = 0
    problems: list[FileProblem] = field(default_factory=list)
    #: The location's status after the verification (``OK``, or ``DM``: damaged).
    status: str = ""
    #: Files of the item that are good nowhere now (lost), if any.
    lost: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "connector": self.connector,
            "url": self.url,
            "files": self.files,
            "bytes": self.bytes,
            "ok": self.ok,
            "status": self.status,
            "problems": [{"path": p.path, "problem": p.problem} for p in self.problems],
            "lost": self.lost,
        }


def object_path(location: StorageLocation, path: str) -> str:
    """Where a file of the item lies on the location's connector."""
    return f"{location.url.rstrip('/')}/{path}"


def verify_location(
    location: StorageLocation, connector: Connector, *, now: datetime, actor: str = "verify"
) -> VerifyReport:
    """Re-hash every file of ``location`` on ``connector`` against the catalog."""
    files = (
        ReferencedPath.select()
        .where(ReferencedPath.file_storage == location.file_storage_id)
        .order_by(ReferencedPath.path)
    )
    return verify_files(location, connector, list(files), now=now, actor=actor, whole=True)


def verify_files(
    location: StorageLocation,
    connector: Connector,
    entries: Sequence[ReferencedPath],
    *,
    now: datetime,
    actor: str = "verify",
    whole: bool = False,
) -> VerifyReport:
    """Re-hash the files ``entries`` of ``location`` on ``connector`` against the catalog.

    crc32c is compared where the catalog has it (it is the cheap one), else
    md5; sizes always. Records each file as verified at ``now`` or bad, and
    the location's status and ``last_verified`` as its files say; one
    history row (naming the files unless ``whole``: they are all of the
    item's). When the backend cannot be read, what was found so far is
    recorded (no history row: the job is retried) and the error raised.
    """
    item = location.file_storage
    report = VerifyReport(item.key, location.connector_name, location.url)
    began = time.monotonic()
    read = {entry.id: content_of(entry) for entry in entries}
    intact: list[tuple[int, str]] = []
    damaged: list[tuple[int, str]] = []
    try:
        with read_run(connector):  # small local files: one thread of the process at a time
            for entry in entries:
                if entry.path.endswith("/"):
                    continue  # a folder: nothing to hash
                report.files += 1
                path = object_path(location, entry.path)
                problem, kind = read_and_compare(connector, path, entry)
                if problem is not None:
                    report.problems.append(FileProblem(entry.path, problem))
                    damaged.append((entry.id, problem))
                else:
                    intact.append((entry.id, kind))
                    report.bytes += entry.size or 0
    except BaseException:
        with locked_item(item.id):
            _record(location, intact, damaged, read, now=now)
        raise
    with locked_item(item.id):
        status, changed = _record(location, intact, damaged, read, now=now)
        report.status = status or ""
        if changed:
            # A new version of these was registered while they were read:
            # what was found of them is no evidence either way.
            paths = {entry.id: entry.path for entry in entries}
            gone = {paths[path_id] for path_id in changed}
            report.problems = [p for p in report.problems if p.path not in gone]
        if report.status == STATUS_DAMAGED:
            report.lost = lost_files([item.id]).get(item.id, [])
        error = None
        if not report.ok:
            error = _summary(report)
            if report.lost:
                error += "; LOST: " + describe_lost({item.id: report.lost}, keys_of([item.id]))
        Action.create(
            actor=actor,
            action="verify",
            item_key=item.key,
            file_storage=item,
            target=location.connector_name,
            path=None if whole else _paths(entries),
            result="ok" if report.ok else DAMAGED,
            bytes=report.bytes,
            duration_ms=int((time.monotonic() - began) * 1000),
            error=error,
        )
    return report


def _record(
    location: StorageLocation,
    intact: Sequence[tuple[int, str]],
    damaged: Sequence[tuple[int, str]],
    read: Mapping[int, tuple[object, ...]],
    *,
    now: datetime,
) -> tuple[str | None, set[int]]:
    """Record what a verification found, under the item's lock.

    ``read``: each file's size and hashes as they were read before its
    bytes. Returns the location's status after, and the files not recorded
    because the catalog's hashes of them changed meanwhile.
    """
    if not intact and not damaged:
        return settle(location.id, now=now), set()
    found = [path_id for path_id, _ in (*intact, *damaged)]
    current = still_current({path_id: read[path_id] for path_id in found})
    record_good(location.id, [f for f in intact if f[0] in current], now=now, verified_at=now)
    record_bad(location.id, [f for f in damaged if f[0] in current], now=now)
    return settle(location.id, now=now), set(found) - current


def _paths(entries: Sequence[ReferencedPath]) -> str | None:
    """The files of a partial verification, for the history."""
    if not entries:
        return None
    return files_label([entry.path for entry in entries])


def read_and_compare(
    connector: Connector, path: str, entry: ReferencedPath
) -> tuple[str | None, str]:
    """Why the object at ``path`` is not the catalog's ``entry`` (None if it is), and the hash kind.

    The kind is the strongest thing compared: ``crc32c``, ``md5``, ``etag``
    (bytes the catalog knows by their S3 etag alone) or ``size``. A
    problem is the backend's answer (no such object, other bytes); any
    other error of the backend is raised.
    """
    # Bytes known by their S3 etag alone are hashed with its part size.
    by_etag = not entry.crc32c and not entry.md5 and bool(entry.awss3etag)
    wants_md5 = (not entry.crc32c and bool(entry.md5)) or by_etag
    kind = "crc32c" if entry.crc32c else "md5" if entry.md5 else ETAG if by_etag else "size"
    try:
        stream = connector.open_read(path)
    except ObjectNotFound:
        confirm_absence(connector, path)  # a root not there answers nothing
        return "missing", kind
    except InvalidPath as exc:
        # A link leading out of the connector's root: its bytes are not there.
        return f"not readable under the connector's root: {exc}", kind
    with stream:
        hashes = None
        if wants_md5:
            hashes = hash_stream(stream, chunk_size=entry.chunk_size or DEFAULT_CHUNK_SIZE)
            size, crc = hashes.size, hashes.crc32c
        else:
            size, crc = crc32c_stream(stream)
    if entry.size is not None and size != entry.size:
        return f"size {size}, catalog says {entry.size}", kind
    if hashes is not None and by_etag:
        found = etag_differs(hashes, entry.awss3etag)
        return (None if found is None else f"etag {found}, catalog says {entry.awss3etag}"), kind
    if hashes is not None:
        md5 = hashes.md5
        return (None if md5 == entry.md5.lower() else f"md5 {md5}, catalog says {entry.md5}"), kind
    if entry.crc32c and crc != entry.crc32c.lower():
        return f"crc32c {crc}, catalog says {entry.crc32c}", kind
    return None, kind


def _summary(report: VerifyReport) -> str:
    first = report.problems[0]
    more = len(report.problems) - 1
    return f"{first.path}: {first.problem}" + (f" (and {more} more)" if more else "")
