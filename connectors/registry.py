"""The connector kinds, under their configuration names and the original aliases."""

from __future__ import annotations

LOCAL = "local"
S3 = "s3"
GCS = "gcs"

#: Every name a configuration may give in ``connector:``, mapped to its kind.
#: The dotted paths are the original Resolwe class paths, so that an existing
#: ``STORAGE_CONNECTORS`` block can be pasted in unchanged.
ALIASES: dict[str, str] = {
    LOCAL: LOCAL,
    "resolwe.storage.connectors.localconnector.LocalFilesystemConnector": LOCAL,
    S3: S3,
    "resolwe.storage.connectors.s3connector.AwsS3Connector": S3,
    GCS: GCS,
    "resolwe.storage.connectors.googleconnector.GoogleConnector": GCS,
}


def connector_kind(name: str) -> str | None:
    """The kind (``local``, ``s3``, ``gcs``) a ``connector:`` value names, or None."""
    return ALIASES.get(name)
