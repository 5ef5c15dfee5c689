"""Worker runtimes built by hand, as the wiring builds them from a configuration: folders."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import dramatiq
import peewee as pw

from connectors.local import LocalConnector
from workers.runtime import DeleteLimits, DeleteRules, Runtime


def never_delete(
    connector: str, *, data_slug: str, process_type: str, now: datetime
) -> DeleteLimits:
    """Delete rules under which nothing is ever deleted."""
    return DeleteLimits(cutoff=None, min_other_copies=1)


def folder_runtime(
    database: pw.Database,
    broker: dramatiq.Broker,
    root: Path,
    *,
    names: tuple[str, ...] = ("local", "backup"),
    delete_rules: DeleteRules = never_delete,
) -> Runtime:
    """A runtime whose connectors ``names`` are folders under ``root``, preferred in that order."""
    return Runtime(
        database=database,
        broker=broker,
        connectors={
            name: (lambda name=name: LocalConnector(name, path=root / name)) for name in names
        },
        preference=names,
        delete_rules=delete_rules,
    )
