"""What a worker process runs with: a value the start-up wiring builds and hands in.

No configuration file is read here: ``resolwe_storage`` builds a
``Runtime`` from the configuration (the connectors by name, their
preference order, the delete rules as ``scheduler.rules`` models them);
a test builds one by hand.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol

import dramatiq
import peewee as pw

from catalog.models import FileStorage, utcnow
from connectors.base import Connector
from connectors.errors import ConfigurationError
from workers.broker import Pending
from workers.operations import DeleteCheck

#: Retries of a transient failure before a job is given up (dead-lettered).
DEFAULT_MAX_RETRIES = 8

logger = logging.getLogger(__name__)


class DeleteLimits(NamedTuple):
    """A delete rule as it applies to one item at one moment."""

    #: The copy's ``last_update`` must lie before it; None: never delete.
    cutoff: datetime | None
    #: Copies that must remain elsewhere.
    min_other_copies: int


class DeleteRules(Protocol):
    """The delete rule of ``connector`` for an item (its slug and type) at ``now``.

    A connector without a delete rule gives no ``cutoff``: nothing of it is
    deleted.
    """

    def __call__(
        self, connector: str, *, data_slug: str, process_type: str, now: datetime
    ) -> DeleteLimits: ...


@dataclass
class Runtime:
    """The catalog, the broker, the connectors and the rules the actors of one process use."""

    database: pw.Database
    broker: dramatiq.Broker
    #: How to make each configured connector, by name (made once, when first needed).
    connectors: Mapping[str, Callable[[], Connector]]
    #: Connector names from most to least preferred.
    preference: Sequence[str]
    #: The delete rules a delete is re-checked against when it runs.
    delete_rules: DeleteRules
    #: Retries of a transient failure before the job is given up.
    max_retries: int = DEFAULT_MAX_RETRIES
    #: Days after an item's removal that its copies may go (negative: never).
    removal_delay: int = 0
    #: The time the rules are re-checked at (``run --now`` fixes it).
    clock: Callable[[], datetime] = utcnow
    pending: Pending = field(init=False)
    _made: dict[str, Connector] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.pending = Pending(self.broker)
        self.preference = tuple(self.preference)

    def connector(self, name: str) -> Connector:
        """The configured connector ``name``, made once per process."""
        with self._lock:
            found = self._made.get(name)
            if found is None:
                make = self.connectors.get(name)
                if make is None:
                    raise ConfigurationError(f"connector {name!r} is not configured")
                found = self._made[name] = make()
            return found

    def warm(self) -> None:
        """Make every configured connector and its client now, not in the first jobs.

        Building a client (boto3's takes a few hundred milliseconds of CPU)
        contacts nothing; a connector that cannot be made now fails in its
        jobs, with their retries, as before.
        """
        for name in self.connectors:
            try:
                getattr(self.connector(name), "client", None)
            except Exception as exc:
                logger.debug("connector %s not made in advance: %s", name, exc)

    def delete_check(self, item: FileStorage, connector: str, now: datetime) -> DeleteCheck:
        """The delete rule of ``connector`` for ``item``, as it stands at ``now``."""
        limits = self.delete_rules(
            connector, data_slug=item.data_slug, process_type=item.process_type, now=now
        )
        return DeleteCheck(
            cutoff=limits.cutoff,
            min_other_copies=limits.min_other_copies,
            preference=self.preference,
        )
