"""Start-up wiring: from the configuration to what each process runs with.

The only place that knows both the configuration and the packages below it:

- ``open_catalog``: the catalog database, opened, bound, migrated;
- ``build_connector``: a connector from its configuration entry;
- ``worker_runtime``: the ``workers.runtime.Runtime`` a worker process runs
  with (connectors by name, preference order, the delete rules);
- the scheduler needs only the policies (``Config.policies``), the catalog
  and the broker (``workers.broker.make_broker``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING

import peewee as pw

from catalog.database import bind, migrate, open_database, redact_url
from catalog.models import utcnow
from connectors.base import Connector
from connectors.registry import GCS, LOCAL, S3
from resolwe_storage.config import Config, ConnectorConfig
from resolwe_storage.errors import InputError
from scheduler.rules import (
    ConnectorPolicy,
    preference_order,
    resolve_delay,
    resolve_min_other_copies,
)

if TYPE_CHECKING:
    import dramatiq

    from workers.runtime import DeleteRules, Runtime

# The workers' stack (Dramatiq, Redis) is imported by the functions that
# build what a worker runs with, not here: commands that only read the
# catalog (``status``, ``plan``) start without it.


def open_catalog(url: str, *, auto_migrate: bool = True) -> pw.Database:
    """Open the catalog at ``url``, bind the models to it, and bring its schema up to date."""
    database = open_database(url)
    try:
        database.connect(reuse_if_open=True)
    except (pw.OperationalError, pw.InterfaceError, pw.ProgrammingError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise pw.OperationalError(f"cannot open {redact_url(url)}: {detail}") from None
    bind(database)
    if auto_migrate:
        migrate(database)
    return database


def worker_runtime(
    config: Config,
    database: pw.Database,
    broker: dramatiq.Broker,
    *,
    max_retries: int | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Runtime:
    """What the workers of this configuration run with; nothing is contacted yet.

    ``max_retries``: of a transient failure (None: ``workers.runtime``'s default).
    """
    from workers.runtime import DEFAULT_MAX_RETRIES, Runtime

    return Runtime(
        database=database,
        broker=broker,
        connectors={
            name: functools.partial(build_connector, entry)
            for name, entry in config.connectors.items()
        },
        preference=preference_order(config.policies),
        delete_rules=delete_rules(config.policies),
        removal_delay=config.removal_delay,
        max_retries=DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        clock=clock,
    )


def delete_rules(policies: Mapping[str, ConnectorPolicy]) -> DeleteRules:
    """The delete rules of ``policies`` as the workers re-check them (SPEC §5)."""
    from scheduler.policy import cutoff  # loaded for workers only: quick commands go without
    from workers.runtime import DeleteLimits

    def limits(connector: str, *, data_slug: str, process_type: str, now: datetime) -> DeleteLimits:
        policy = policies.get(connector)
        rule = policy.delete if policy is not None else None
        if rule is None:
            return DeleteLimits(cutoff=None, min_other_copies=0)
        facts = {"data_slug": data_slug, "process_type": process_type}
        return DeleteLimits(
            cutoff=cutoff(now, resolve_delay(rule, **facts).value),
            min_other_copies=resolve_min_other_copies(rule, **facts).value,
        )

    return limits


def build_connector(config: ConnectorConfig) -> Connector:
    """The connector ``config`` describes; nothing is contacted yet."""
    settings = config.settings
    if config.kind == LOCAL:
        from connectors.local import LocalConnector

        return LocalConnector(
            config.name,
            path=settings.path,  # type: ignore[attr-defined]
            public_url=settings.public_url,  # type: ignore[attr-defined]
            selinux_label=settings.selinux_label,  # type: ignore[attr-defined]
            fsync=settings.fsync,  # type: ignore[attr-defined]
            batch_fsync=settings.batch_fsync,  # type: ignore[attr-defined]
        )
    if config.kind == S3:
        from connectors.s3 import S3Connector

        return S3Connector(
            config.name,
            bucket=settings.bucket,  # type: ignore[attr-defined]
            region_name=settings.region_name,  # type: ignore[attr-defined]
            endpoint_url=settings.endpoint_url,  # type: ignore[attr-defined]
            credentials=settings.credentials,  # type: ignore[attr-defined]
            role_arn=settings.role_arn,  # type: ignore[attr-defined]
            multipart_threshold=settings.multipart_threshold,  # type: ignore[attr-defined]
            multipart_chunksize=settings.multipart_chunksize,  # type: ignore[attr-defined]
            max_pool_connections=settings.max_pool_connections,  # type: ignore[attr-defined]
            upload_checksums=settings.upload_checksums,  # type: ignore[attr-defined]
            **_given(
                connect_timeout=settings.connect_timeout,  # type: ignore[attr-defined]
                read_timeout=settings.read_timeout,  # type: ignore[attr-defined]
            ),
        )
    if config.kind == GCS:
        from connectors.gcs import GCSConnector

        return GCSConnector(
            config.name,
            bucket=settings.bucket,  # type: ignore[attr-defined]
            credentials=settings.credentials,  # type: ignore[attr-defined]
            endpoint_url=settings.endpoint_url,  # type: ignore[attr-defined]
            **_given(timeout=settings.timeout),  # type: ignore[attr-defined]
        )
    raise AssertionError(f"unknown connector kind {config.kind!r}")  # the config refuses it


def _given(**settings: object) -> dict[str, object]:
    """The settings the configuration states; the connector's defaults for the rest."""
    return {name: value for name, value in settings.items() if value is not None}


def configured(config: Config, name: str) -> ConnectorConfig:
    """The configuration of connector ``name``; InputError naming the choices otherwise."""
    entry = config.connectors.get(name)
    if entry is None:
        named = ", ".join(sorted(config.connectors)) or "none"
        raise InputError(f"connector {name!r} is not configured (configured: {named})")
    return entry


def connector_named(config: Config, name: str) -> Connector:
    """The configured connector ``name``; InputError naming the choices otherwise."""
    return build_connector(configured(config, name))
