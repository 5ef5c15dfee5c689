"""Verifying a location: re-hash its files and compare them with the catalog.

Every file is checked, and every problem reported (not just the first). A
location found whole gets ``last_verified``; each run leaves one row in the
action history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from catalog.models import Action, ReferencedPath, StorageLocation
from connectors.base import Connector
from connectors.errors import ConnectorError
from connectors.hashing import crc32c_stream, hash_stream


@dataclass(frozen=True)
class FileProblem:
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
            "problems": [{"path": p.path, "problem": p.problem} for p in self.problems],
        }


def object_path(location: StorageLocation, path: str) -> str:
    """Where a file of the item lies on the location's connector."""
    return f"{location.url.rstrip('/')}/{path}"


def verify_location(
    location: StorageLocation, connector: Connector, *, now: datetime, actor: str = "verify"
) -> VerifyReport:
    """Re-hash every file of ``location`` on ``connector`` against the catalog.

    crc32c is compared where the catalog has it (it is the cheap one), else
    md5; sizes always. Marks the location verified at ``now`` when all agree.
    """
    item = location.file_storage
    report = VerifyReport(item.key, location.connector_name, location.url)
    began = time.monotonic()
    files = (
        ReferencedPath.select()
        .where(ReferencedPath.file_storage == item)
        .order_by(ReferencedPath.path)
    )
    for entry in files:
        if entry.path.endswith("/"):
            continue  # a folder: nothing to hash
        report.files += 1
        problem = _check(connector, object_path(location, entry.path), entry)
        if problem is not None:
            report.problems.append(FileProblem(entry.path, problem))
        elif entry.size is not None:
            report.bytes += entry.size
    with location._meta.database.atomic():
        if report.ok:
            StorageLocation.update(last_verified=now).where(
                StorageLocation.id == location.id
            ).execute()
        Action.create(
            actor=actor,
            action="verify",
            item_key=item.key,
            file_storage=item,
            target=location.connector_name,
            result="ok" if report.ok else "failed",
            bytes=report.bytes,
            duration_ms=int((time.monotonic() - began) * 1000),
            error=None if report.ok else _summary(report),
        )
    return report


def _check(connector: Connector, path: str, entry: ReferencedPath) -> str | None:
    """Why the object at ``path`` is not the catalog's ``entry``, or None."""
    try:
        stream = connector.open_read(path)
    except ConnectorError as exc:
        return str(exc) if not exc.transient else f"could not read: {exc}"
    wants_md5 = not entry.crc32c and bool(entry.md5)
    try:
        with stream:
            if wants_md5:
                hashes = hash_stream(stream)
                size, md5, crc = hashes.size, hashes.md5, hashes.crc32c
            else:
                size, crc = crc32c_stream(stream)
    except ConnectorError as exc:
        return f"could not read: {exc}"
    if entry.size is not None and size != entry.size:
        return f"size {size}, catalog says {entry.size}"
    if wants_md5:
        return None if md5 == entry.md5.lower() else f"md5 {md5}, catalog says {entry.md5}"
    if entry.crc32c and crc != entry.crc32c.lower():
        return f"crc32c {crc}, catalog says {entry.crc32c}"
    return None


def _summary(report: VerifyReport) -> str:
    first = report.problems[0]
    more = len(report.problems) - 1
    return f"{first.path}: {first.problem}" + (f" (and {more} more)" if more else "")
