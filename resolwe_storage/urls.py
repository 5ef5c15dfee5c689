"""URLs of an item's files, and its OK copies in order of preference."""

from __future__ import annotations

from datetime import timedelta

from catalog.models import (
    STATUS_DAMAGED,
    STATUS_DONE,
    FileStorage,
    ReferencedPath,
    StorageLocation,
    utcnow,
)
from catalog.paths import check_relative_path
from catalog.queries import hold_for_url, item_by_key, locked_item, record_access
from connectors.base import PresignedUrls, PublicUrls
from resolwe_storage.config import Config
from resolwe_storage.errors import InputError
from resolwe_storage.wiring import connector_named
from scheduler.rules import preference_order
from workers.verify import object_path

#: Lifetime of a presigned URL when none is asked for (seconds).
DEFAULT_URL_EXPIRES = 3600
#: The longest a presigned URL may live (seconds): 7 days, SigV4's and GCS V4's limit.
MAX_URL_EXPIRES = 7 * 24 * 3600


def ok_copies(
    config: Config,
    key: str,
    *,
    damaged: bool = False,
    connector: str | None = None,
    purpose: str | None = None,
) -> tuple[FileStorage, list[StorageLocation]]:
    """The item ``key`` and its OK locations on configured connectors, preferred first.

    ``damaged``: its damaged ones (``DM``) too, after them. ``connector``:
    only the one there. ``purpose`` (e.g. "to read"): InputError saying so
    when there is none.
    """
    item = item_by_key(key)
    if item.removed is not None:
        raise InputError(
            f"item {key!r} was removed {item.removed:%Y-%m-%dT%H:%M:%SZ}: it has no copy to use"
        )
    rank = {name: n for n, name in enumerate(preference_order(config.policies))}
    statuses = [STATUS_DONE, STATUS_DAMAGED] if damaged else [STATUS_DONE]
    locations = [
        location
        for location in StorageLocation.select().where(
            (StorageLocation.file_storage == item) & StorageLocation.status.in_(statuses)
        )
        if location.connector_name in rank
    ]
    if connector is not None:
        locations = [loc for loc in locations if loc.connector_name == connector]
    if purpose is not None and not locations:
        where = f" on {connector!r}" if connector else ""
        kind = "OK or damaged" if damaged else "OK"
        raise InputError(f"item {key!r} has no {kind} copy{where} {purpose}")
    locations.sort(key=lambda loc: (loc.status != STATUS_DONE, rank[loc.connector_name]))
    return item, locations


def file_url(
    config: Config,
    key: str,
    path: str,
    *,
    expires: int = DEFAULT_URL_EXPIRES,
    connector: str | None = None,
) -> str:
    """A URL of file ``path`` of item ``key``: public, or presigned for ``expires`` seconds.

    From the item's most preferred OK copy on a connector that gives URLs,
    or its copy on ``connector``. Signing is local: nothing is contacted.
    The copy's last access is recorded. InputError says why there is none.
    """
    check_relative_path(path, what="PATH")
    if path.endswith("/"):
        # A folder entry is no object on any backend: its URL would serve nothing.
        raise InputError(f"PATH {path!r} is a folder of the item; a URL is of one file")
    if not 1 <= expires <= MAX_URL_EXPIRES:
        raise InputError(
            f"expires: a presigned URL lives between 1 and {MAX_URL_EXPIRES} seconds, not {expires}"
        )
    database = FileStorage._meta.database
    with database.atomic():
        item, locations = ok_copies(config, key, connector=connector)
        known = ReferencedPath.get_or_none(
            (ReferencedPath.file_storage == item) & (ReferencedPath.path == path)
        )
    if known is None:
        raise InputError(f"item {key!r} has no file {path!r}")
    if not locations:
        where = f" on {connector!r}" if connector else ""
        raise InputError(f"item {key!r} has no OK copy{where} to give a URL of")
    # The most preferred copy whose connector gives URLs (a local folder
    # without public_url gives none).
    gone = 0
    for location in locations:
        backend = connector_named(config, location.connector_name)
        target = object_path(location, path)
        lasts = False  # whether the URL ends (a presigned one), and holds the copy till then
        if isinstance(backend, PublicUrls) and getattr(backend, "base_url", None):
            url = backend.public_url(target)
        elif isinstance(backend, PresignedUrls):
            url = backend.presigned_url(target, expires=expires)
            lasts = True
        else:
            continue
        # A URL handed out is a read of that copy: its last access, recorded
        # under the item's lock and only while the copy still counts. A delete
        # decided since the look-up (DE), or damage found, would leave the URL
        # pointing at bytes about to go; a delete decided after it sees the
        # access (SPEC §5 condition 3).
        with locked_item(item.id) as current:
            if current is None or current.removed is not None:
                raise InputError(f"item {key!r} was removed: it has no copy to use")
            still = StorageLocation.get_or_none(StorageLocation.id == location.id)
            if still is None or still.status != STATUS_DONE:
                gone += 1
                continue
            now = utcnow()
            record_access([location.id], now=now)
            if lasts:
                # A delete delay shorter than the URL's life would break it:
                # the copy is held until the URL ends.
                hold_for_url(location.id, now=now, until=now + timedelta(seconds=expires))
        return url
    if gone == len(locations):
        where = f" on {connector!r}" if connector else ""
        raise InputError(f"item {key!r} has no OK copy{where} to give a URL of")
    names = ", ".join(repr(location.connector_name) for location in locations)
    raise InputError(
        f"no copy of item {key!r} is on a connector that gives URLs ({names}; "
        "a local connector needs public_url)"
    )
