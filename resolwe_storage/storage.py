"""Building connectors from the configuration (the only place that knows both)."""

from __future__ import annotations

from connectors.base import Connector
from connectors.registry import GCS, LOCAL, S3
from resolwe_storage.config import Config, ConnectorConfig
from resolwe_storage.errors import InputError


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


def connector_named(config: Config, name: str) -> Connector:
    """The configured connector ``name``; InputError naming the choices otherwise."""
    entry = config.connectors.get(name)
    if entry is None:
        named = ", ".join(sorted(config.connectors)) or "none"
        raise InputError(f"connector {name!r} is not configured (configured: {named})")
    return build_connector(entry)
