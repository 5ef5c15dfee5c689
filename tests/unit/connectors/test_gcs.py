"""GCS library errors become typed connector errors at the boundary, without secrets."""

from __future__ import annotations

import pytest

from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ConfigurationError,
    ConnectorError,
    ObjectNotFound,
    PermanentError,
    Throttled,
)
from connectors.gcs import GCSConnector

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("NotFound", ObjectNotFound),
        ("Forbidden", AccessDenied),
        ("Unauthorized", AccessDenied),
        ("TooManyRequests", Throttled),
        ("InternalServerError", BackendUnavailable),
        ("ServiceUnavailable", BackendUnavailable),
        ("BadGateway", BackendUnavailable),
        ("GatewayTimeout", BackendUnavailable),
        ("BadRequest", PermanentError),
    ],
)
def test_gcs_api_errors(name: str, kind: type[ConnectorError]) -> None:
    from google.api_core import exceptions as api

    connector = GCSConnector("GCS", bucket="b")
    exc = getattr(api, name)(f"token {SECRET} rejected")
    error = connector._translate(exc, "reading 'x'")
    assert type(error) is kind
    assert SECRET not in str(error)


def test_gcs_missing_bucket_on_upload_is_configuration() -> None:
    from google.api_core import exceptions as api

    connector = GCSConnector("GCS", bucket="b")
    assert isinstance(connector._translate(api.NotFound("x"), "writing 'x'"), ConfigurationError)
