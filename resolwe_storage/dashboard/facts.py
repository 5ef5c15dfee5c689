"""What the dashboard shows, read from Redis and the catalog when a page is asked for.

Every figure is Redis's or the catalog's at the time of the request, but
the catalog's counts (``telemetry.catalog_facts``: grouped queries over
whole tables, seconds on a catalog of millions of items), which the page
takes from the dashboard's ``telemetry.CatalogCollector`` with their age:
read in the request where that is quick, behind the pages where it is not.
The lists of damaged and lost items are read at the request. ``Redactor`` takes out of
every text the page shows what would say where a backend keeps its data or
how to get in (local paths, buckets, endpoints, credentials, the database's
and the broker's addresses).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from catalog.database import redact_url
from catalog.models import Action, utcnow
from resolwe_storage.config import Config
from workers.broker import LAST_SCAN_KEY

#: Minutes over which the overview counts the actions done.
THROUGHPUT_WINDOWS = (5, 60)
#: The queue each action of the history runs on.
ACTION_QUEUES = {
    "copy": "copy",
    "repair": "copy",
    "delete": "delete",
    "remove": "delete",
    "verify": "verify",
    "audit": "verify",
}
#: Items named in the lists of damaged and lost items.
SHOWN = 20

#: ``scheme://user:password@``: the user may be empty, the password hold a "/".
_CREDENTIALS_IN_URL = re.compile(r"(\w+://)[^/@\s:]*:[^@\s]*@")


class Redactor:
    """Replaces in texts what the configuration says a backend is reached by, with its name."""

    def __init__(self, config: Config) -> None:
        found: list[tuple[str, str]] = []
        for name, connector in config.connectors.items():
            settings = connector.settings
            for field in (
                "path",
                "bucket",
                "endpoint_url",
                "credentials",
                "role_arn",
                "public_url",
            ):
                value = getattr(settings, field, None)
                if isinstance(value, str) and value:
                    found.append((value.rstrip("/") or value, f"<{name}>"))
        for url, label in ((config.database, "<catalog>"), (config.broker, "<broker>")):
            if url:
                found.append((url, label))
                found.append((redact_url(url), label))
        # Longest first: a path inside another is replaced whole.
        self.secrets = sorted(set(found), key=lambda pair: -len(pair[0]))
        self._labels = dict(self.secrets)
        # Whole names only: a bucket ``data`` is taken out of ``s3://data/x``,
        # not out of an item's key ``data-1`` or a file ``metadata``.
        alternatives = "|".join(re.escape(secret) for secret, _ in self.secrets)
        self._pattern = (
            re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])") if self.secrets else None
        )

    def __call__(self, text: Any) -> Any:
        if not isinstance(text, str):
            return text
        if self._pattern is not None:
            text = self._pattern.sub(lambda found: self._labels[found.group(0)], text)
        return _CREDENTIALS_IN_URL.sub(r"\1<redacted>@", text)


class QueueRow(NamedTuple):
    queue: str
    queued: int
    delayed: int
    running: int
    dead: int
    #: Seconds the first job in line has waited (None: none waits).
    oldest: float | None
    #: Actions done in the last ``THROUGHPUT_WINDOWS`` minutes (the history; None: not known).
    done: tuple[int | None, ...]


def throughput(now: datetime) -> dict[str, tuple[int, ...]]:
    """Per queue, the actions the history recorded in each of the last windows of minutes."""
    counts: dict[str, list[int]] = {queue: [0] * len(THROUGHPUT_WINDOWS) for queue in _queues()}
    widest = max(THROUGHPUT_WINDOWS)
    since = now - timedelta(minutes=widest)
    rows = (
        Action.select(Action.action, Action.started)
        .where((Action.started >= since) & Action.action.in_(list(ACTION_QUEUES)))
        .tuples()
    )
    for action, started in rows:
        queue = ACTION_QUEUES[action]
        age = now - started
        for n, minutes in enumerate(THROUGHPUT_WINDOWS):
            if age <= timedelta(minutes=minutes):
                counts[queue][n] += 1
    return {queue: tuple(values) for queue, values in counts.items()}


def _queues() -> tuple[str, ...]:
    from workers.messages import QUEUES

    return tuple(QUEUES)


def queue_rows(
    broker: Any, now: datetime, done: Mapping[str, tuple[int, ...]] | None
) -> list[QueueRow]:
    """Every queue's counts from Redis, its oldest job's wait, and its throughput
    (``throughput``; None: not known, the catalog did not answer)."""
    from workers.monitor import oldest_queued, queue_stats

    unknown = (None,) * len(THROUGHPUT_WINDOWS)
    rows = []
    for stats in queue_stats(broker, _queues()):
        first = oldest_queued(broker, stats.queue)
        waited = (now.timestamp() - first.timestamp()) if first is not None else None
        rows.append(
            QueueRow(
                stats.queue,
                stats.queued,
                stats.delayed,
                stats.running,
                stats.dead,
                max(0.0, waited) if waited is not None else None,
                done[stats.queue] if done is not None else unknown,
            )
        )
    return rows


def storage(config: Config, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The counts of ``facts`` (``catalog_facts``, read when it says), with what is read
    now: the first items damaged and lost, and whether deletes are paused."""
    from catalog.integrity import keys_of, lost_files
    from catalog.models import StorageLocation
    from catalog.settings import deletes_paused

    damaged_ids = [
        item
        for (item,) in StorageLocation.select(StorageLocation.file_storage)
        .where(StorageLocation.status == "DM")
        .distinct()
        .order_by(StorageLocation.file_storage)
        .limit(SHOWN)
        .tuples()
    ]
    lost = lost_files(limit=SHOWN)
    keys = keys_of([*damaged_ids, *lost])
    pause = deletes_paused()
    return {
        **facts,
        "damaged_keys": [keys.get(item) or f"#{item}" for item in damaged_ids],
        "lost_keys": [
            {"key": keys.get(item) or f"#{item}", "files": paths} for item, paths in lost.items()
        ],
        "pause": pause,
        "connectors": sorted(set(config.connectors) | set(facts["copies"])),
    }


def last_scan(broker: Any) -> dict[str, Any] | None:
    """The report of the scheduler's last scan, as it left it in Redis (None: none yet)."""
    raw = broker.client.get(LAST_SCAN_KEY)
    if raw is None:
        return None
    try:
        report: dict[str, Any] = json.loads(raw)
    except ValueError:
        return None
    return report


def file_count(actor: str, args: list[Any]) -> int | None:
    """Files a job names (None: every file of its items)."""
    import dramatiq

    from workers.actors import describe

    message = dramatiq.Message(
        queue_name="", actor_name=actor, args=tuple(args), kwargs={}, options={}
    )
    work = describe(message)
    return work.files if work is not None else None


#: Values shown as they are: an item's key names it, and is never where its data is.
NOT_REDACTED = frozenset({"key"})


def redacted(row: Mapping[str, Any], redact: Redactor) -> dict[str, Any]:
    """``row`` with every text value redacted, but the item's key."""
    return {name: value if name in NOT_REDACTED else redact(value) for name, value in row.items()}


def now() -> datetime:
    return utcnow()
