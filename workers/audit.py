"""The consistency audit: what the catalog expects on a connector against what it holds.

One pass merges the catalog's expected objects (``catalog.queries.
expected_objects``) with the backend's listing, both in key order, in
bounded memory, and finds:

- **lost**: a copy that counts (or a damaged one) should hold a file, and
  the backend has no such object;
- **mismatched**: the object's size, or a checksum the listing states
  (GCS crc32c and md5, an S3 ETag that is an md5), is not the catalog's;
- **dark**: an object no location of the catalog accounts for.

Copies under way (``PR``, ``UP``) and being deleted (``DE``) are not judged.
What the pass finds goes to a temporary file; then, the catalog's read
finished, each lost or mismatched file is asked about again (``stat``, and a
read-back where only an S3 ETag disagreed: with SSE-KMS it is no md5) and
only the backend's second answer is recorded: the file bad on that copy,
the copy damaged (``catalog.integrity``), so that the scan repairs it. A
backend that does not answer ends the audit of that connector with its
error, and nothing more is concluded.

Dark objects are reported, never deleted, unless asked (``delete_dark``):
then those last written before the grace period are removed, except under
a location that is under way, being deleted, or locked, and each removal
goes to the history.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import peewee as pw

from catalog.integrity import content_of, lost_files, record_bad, settle, still_current
from catalog.models import (
    STATUS_DAMAGED,
    STATUS_DONE,
    AccessLog,
    Action,
    ReferencedPath,
    StorageLocation,
)
from catalog.paths import files_label
from catalog.queries import ExpectedObject, expected_objects, locked_item
from connectors.base import CRC32C, ETAG, MD5, Connector, ObjectInfo, confirm_absence
from workers.verify import read_and_compare

#: What an audit finds.
LOST, MISMATCHED, DARK = "lost", "mismatched", "dark"
#: Findings asked about again and recorded per catalog transaction.
DEFAULT_AUDIT_BATCH = 500
#: Who the history says did it.
ACTOR = "audit"
#: Locations whose files an audit judges: copies that count, and damaged ones.
JUDGED = (STATUS_DONE, STATUS_DAMAGED)

logger = logging.getLogger(__name__)


@dataclass
class AuditReport:
    """What the audit of one connector found and did."""

    connector: str
    #: Objects the backend listed.
    objects: int = 0
    #: Files the catalog expects there (on copies that count or damaged ones).
    expected: int = 0
    lost: int = 0
    mismatched: int = 0
    dark: int = 0
    dark_bytes: int = 0
    #: Dark objects removed (``delete_dark``), and those kept: too young, or
    #: under a location under way, being deleted or locked.
    dark_deleted: int = 0
    dark_kept: int = 0
    #: Items with a copy found damaged here, by key (at most a few shown).
    damaged_items: list[str] = field(default_factory=list)
    #: Of those, the items left with a file that is good nowhere (lost), by
    #: key (``#id`` without one): those files.
    lost_items: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.mismatched)

    def as_json(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "objects": self.objects,
            "expected": self.expected,
            "lost": self.lost,
            "mismatched": self.mismatched,
            "dark": self.dark,
            "dark_bytes": self.dark_bytes,
            "dark_deleted": self.dark_deleted,
            "dark_kept": self.dark_kept,
            "seconds": round(self.seconds, 3),
        }


#: One finding, as the report file and ``--json`` give it.
Finding = dict[str, Any]


def audit_connector(
    connector: Connector,
    database: pw.Database,
    *,
    now: datetime,
    delete_dark_before: datetime | None = None,
    found: Callable[[Finding], None] = lambda _: None,
) -> AuditReport:
    """Audit ``connector`` against the catalog; ``found`` receives each confirmed finding.

    ``delete_dark_before``: remove the dark objects last written before it
    (None: remove nothing).
    """
    began = time.monotonic()
    report = AuditReport(connector.name)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as pending:
        with database.atomic():
            for candidate in _merge(expected_objects(connector.name), connector.list(), report):
                pending.write(json.dumps(candidate) + "\n")
        pending.seek(0)
        for batch in _batches(pending):
            judged = [c for c in batch if c["kind"] != DARK]
            if judged:
                _record(connector, judged, report, now=now, found=found)
            dark = [c for c in batch if c["kind"] == DARK]
            if dark:
                _dark(
                    connector, database, dark, report, delete_before=delete_dark_before, found=found
                )
    report.seconds = time.monotonic() - began
    return report


def _merge(
    expected: Iterator[ExpectedObject], listed: Iterator[ObjectInfo], report: AuditReport
) -> Iterator[Finding]:
    """The candidates of one pass over both streams, in key order (not yet confirmed)."""
    want = next(expected, None)
    have = next(listed, None)
    if have is not None:
        report.objects += 1
    while want is not None or have is not None:
        if have is None or (want is not None and want.key < have.path):
            if want.status in JUDGED:  # type: ignore[union-attr]
                report.expected += 1
                yield _candidate(LOST, want, "missing: the backend has no such object")  # type: ignore[arg-type]
            want = next(expected, None)
            continue
        if want is None or have.path < want.key:
            yield {
                "kind": DARK,
                "key": have.path,
                "size": have.size,
                "modified": _when(have.modified),
            }
            have = next(listed, None)
            if have is not None:
                report.objects += 1
            continue
        # The same key: every location expecting it is compared with the object.
        while want is not None and want.key == have.path:
            if want.status in JUDGED:
                report.expected += 1
                problem = _differs(want, have)
                if problem is not None:
                    yield _candidate(
                        MISMATCHED, want, problem, etag_only=problem.startswith("etag")
                    )
            want = next(expected, None)
        have = next(listed, None)
        if have is not None:
            report.objects += 1


def _candidate(kind: str, want: ExpectedObject, problem: str, **extra: Any) -> Finding:
    return {
        "kind": kind,
        "key": want.key,
        "item": want.item_key,
        "path": want.path,
        "problem": problem,
        "location_id": want.location_id,
        "path_id": want.path_id,
        "item_id": want.item_id,
        **extra,
    }


def _differs(want: ExpectedObject, have: ObjectInfo) -> str | None:
    """Why the listed object is not the catalog's file, by what the listing states; or None."""
    if want.size is not None and have.size != want.size:
        return f"size {have.size}, the catalog says {want.size}"
    hashes = have.hashes
    if want.crc32c and CRC32C in hashes and hashes[CRC32C] != want.crc32c.lower():
        return f"crc32c {hashes[CRC32C]}, the catalog says {want.crc32c}"
    if want.md5 and MD5 in hashes and hashes[MD5] != want.md5.lower():
        return f"md5 {hashes[MD5]}, the catalog says {want.md5}"
    etag = hashes.get(ETAG)
    if want.md5 and etag and "-" not in etag and etag != want.md5.lower():
        return f"etag {etag} is not the catalog's md5 {want.md5}"
    return None


def _when(moment: datetime | None) -> str | None:
    return None if moment is None else f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def _batches(pending: IO[str]) -> Iterator[list[Finding]]:
    batch: list[Finding] = []
    for line in pending:
        batch.append(json.loads(line))
        if len(batch) >= DEFAULT_AUDIT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _confirm(
    connector: Connector, candidate: Finding
) -> tuple[str | None, tuple[object, ...] | None]:
    """The backend's second answer: why the file is still not there as the catalog says, or None.

    And the catalog's size and hashes it was judged by (``content_of``),
    None for an object that is not there, whatever its version. A
    transient error is raised: nothing is concluded from it.
    """
    info = connector.stat(candidate["key"])
    if info is None:
        confirm_absence(connector, candidate["key"])  # a root not there answers nothing
        return "missing: the backend has no such object (audit)", None
    if candidate["kind"] == LOST:
        return None, None  # written meanwhile
    entry = ReferencedPath.get_or_none(ReferencedPath.id == candidate["path_id"])
    if entry is None:
        return None, None  # the file left the item meanwhile
    content = content_of(entry)
    if entry.size is not None and info.size != entry.size:
        return f"size {info.size}, the catalog says {entry.size} (audit)", content
    if candidate.get("etag_only"):
        # An S3 ETag is no md5 under SSE-KMS: the bytes decide.
        problem, _ = read_and_compare(connector, candidate["key"], entry)
        return (None if problem is None else f"{problem} (audit, read back)"), content
    recheck = ExpectedObject(
        candidate["key"], entry.size, entry.md5, entry.crc32c, 0, entry.id, "", 0, None, entry.path
    )
    problem = _differs(recheck, info)
    return (None if problem is None else f"{problem} (audit)"), content


def _record(
    connector: Connector,
    candidates: Sequence[Finding],
    report: AuditReport,
    *,
    now: datetime,
    found: Callable[[Finding], None],
) -> None:
    """Ask again about each candidate; record the confirmed ones as bad, per location."""
    confirmed: dict[int, list[tuple[Finding, str, tuple[object, ...] | None]]] = {}
    for candidate in candidates:
        problem, content = _confirm(connector, candidate)
        if problem is not None:
            confirmed.setdefault(candidate["location_id"], []).append((candidate, problem, content))
    for location_id, judged in confirmed.items():
        item_id = judged[0][0]["item_id"]
        with locked_item(item_id):
            location = StorageLocation.get_or_none(StorageLocation.id == location_id)
            if location is None or location.status not in JUDGED:
                continue  # deleted or being replaced meanwhile: nothing to say
            # A file of which a new version was registered since it was
            # judged: the old hashes say nothing of it now.
            current = still_current({f["path_id"]: c for f, _, c in judged if c is not None})
            findings = [(f, p) for f, p, c in judged if c is None or f["path_id"] in current]
            if not findings:
                continue
            record_bad(
                location_id,
                [(finding["path_id"], problem) for finding, problem in findings],
                now=now,
            )
            settle(location_id, now=now)
            first = findings[0][1]
            more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
            # The last good copy of a file gone: said loudly, it is no repair's.
            lost = lost_files([item_id]).get(item_id, [])
            if lost:
                report.lost_items[findings[0][0]["item"] or f"#{item_id}"] = lost
            Action.create(
                actor=ACTOR,
                action="audit",
                item_key=findings[0][0]["item"],
                file_storage=item_id,
                target=connector.name,
                path=files_label([finding["path"] for finding, _ in findings]),
                result="damaged",
                error=f"{findings[0][0]['path']}: {first}{more}"
                + (f"; LOST: no good copy anywhere of {files_label(lost)}" if lost else ""),
            )
        key = findings[0][0]["item"]
        if key is not None and key not in report.damaged_items:
            report.damaged_items.append(key)
        for finding, problem in findings:
            if finding["kind"] == LOST or problem.startswith("missing"):
                report.lost += 1
                kind = LOST
            else:
                report.mismatched += 1
                kind = MISMATCHED
            found(
                {
                    "connector": connector.name,
                    "kind": kind,
                    "key": finding["key"],
                    "item": finding["item"],
                    "path": finding["path"],
                    "problem": problem,
                }
            )
    logger.debug("%s: %d candidate(s) asked about again", connector.name, len(candidates))


def _dark(
    connector: Connector,
    database: pw.Database,
    candidates: Sequence[Finding],
    report: AuditReport,
    *,
    delete_before: datetime | None,
    found: Callable[[Finding], None],
) -> None:
    """Report the dark objects; remove those asked for that no location in motion covers.

    Asked again of the catalog as it is now: an object that became a file of
    an item since the pass began (an import meanwhile) is not dark.
    """
    holders = _holders(connector.name, [candidate["key"] for candidate in candidates])
    removed: list[Finding] = []
    for candidate in candidates:
        holder = holders.get(candidate["key"])
        if holder is not None and holder.pop("expected"):
            continue  # catalogued since the pass began (an import meanwhile): not dark
        report.dark += 1
        report.dark_bytes += candidate["size"]
        finding = {
            "connector": connector.name,
            "kind": DARK,
            "key": _shown(candidate["key"]),
            "size": candidate["size"],
            "modified": candidate["modified"],
            "under": holder,
            "deleted": False,
        }
        if delete_before is not None:
            old = candidate["modified"] is not None and candidate["modified"] < _when(delete_before)
            if old and _movable(holder) and _movable(_holder_now(connector.name, candidate)):
                connector.delete(candidate["key"])
                finding["deleted"] = True
                report.dark_deleted += 1
                removed.append(finding)
            else:
                report.dark_kept += 1
        found(finding)
    if removed:
        with database.atomic():
            Action.insert_many(
                [
                    {
                        "actor": ACTOR,
                        "action": "delete dark",
                        "target": connector.name,
                        "path": finding["key"],
                        "bytes": finding["size"],
                        "result": "ok",
                        "error": None,
                    }
                    for finding in removed
                ]
            ).execute()


def _movable(holder: dict[str, Any] | None) -> bool:
    """Whether a dark object under ``holder`` (None: under no location) may be removed."""
    return holder is None or (
        holder["status"] in JUDGED and not holder["locked"] and not holder.get("expected")
    )


def _holder_now(connector_name: str, candidate: Finding) -> dict[str, Any] | None:
    """The object's holder asked again just before its removal, not a batch ago.

    The removals of a batch take a while (a request each); meanwhile the scan
    may place a copy there, whose job takes an object already there with
    the right hashes as its own.
    """
    return _holders(connector_name, [candidate["key"]]).get(candidate["key"])


def _holders(connector_name: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The location (by its url) each object key lies under, if any: its item, status, lock."""
    prefixes: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split("/")
        # A folder named in other bytes than UTF-8 is no url of the catalog.
        prefixes[key] = [
            url
            for url in ("/".join(parts[:depth]) for depth in range(len(parts) - 1, 0, -1))
            if _utf8(url)
        ]
    # A url may be stored with a trailing ``/`` (the pass reads it without).
    wanted = sorted(
        {form for urls in prefixes.values() for url in urls for form in (url, f"{url}/")}
    )
    locations: dict[str, StorageLocation] = {}
    for start in range(0, len(wanted), DEFAULT_AUDIT_BATCH):
        chunk = wanted[start : start + DEFAULT_AUDIT_BATCH]
        for location in StorageLocation.select().where(
            (StorageLocation.connector_name == connector_name) & StorageLocation.url.in_(chunk)
        ):
            locations[location.url.rstrip("/")] = location
    locked = {
        log.storage_location_id
        for log in AccessLog.select(AccessLog.storage_location).where(
            AccessLog.storage_location.in_([loc.id for loc in locations.values()])
            & AccessLog.finished.is_null()
        )
    }
    held: dict[str, dict[str, Any]] = {}
    for key, urls in prefixes.items():
        for url in urls:  # the deepest first
            location = locations.get(url)
            if location is not None:
                path = key[len(url.rstrip("/")) + 1 :]
                held[key] = {
                    "url": url,
                    "item": location.file_storage.key,
                    "status": location.status,
                    "locked": location.id in locked,
                    # A file of the item now (registered since the pass began).
                    "expected": _utf8(path)
                    and ReferencedPath.select()
                    .where(
                        (ReferencedPath.file_storage == location.file_storage_id)
                        & (ReferencedPath.path == path)
                    )
                    .exists(),
                }
                break
    return held


def _utf8(text: str) -> bool:
    """Whether ``text`` is UTF-8, as every path of the catalog is.

    A local folder may hold names of other bytes (another tool wrote them):
    Python reads them with lone surrogates, which no database takes.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(key: str) -> str:
    """``key`` as a report and the history show it: other bytes than UTF-8 as ``\\xNN``."""
    return key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
