"""Library errors become typed connector errors at the boundary, without secrets."""

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
from connectors.s3 import S3Connector

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def client_error(code: str, status: int) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {
            "Error": {"Code": code, "Message": f"signature for {SECRET} did not match"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "PutObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("NoSuchKey", 404, ObjectNotFound),
        ("404", 404, ObjectNotFound),
        ("NoSuchBucket", 404, ConfigurationError),
        ("AccessDenied", 403, AccessDenied),
        ("InvalidAccessKeyId", 403, AccessDenied),
        ("SignatureDoesNotMatch", 403, AccessDenied),
        ("SlowDown", 503, Throttled),
        ("Throttling", 400, Throttled),
        ("InternalError", 500, BackendUnavailable),
        ("ServiceUnavailable", 503, Throttled),
        ("BadDigest", 400, PermanentError),
    ],
)
def test_s3_client_errors(code: str, status: int, kind: type[ConnectorError]) -> None:
    connector = S3Connector("S3", bucket="b")
    error = connector._translate(client_error(code, status), "writing 'x'")
    assert type(error) is kind
    assert error.transient == (kind in (Throttled, BackendUnavailable))
    assert SECRET not in str(error) and "S3 'S3'" in str(error)


def test_s3_connection_errors_are_transient() -> None:
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    connector = S3Connector("S3", bucket="b")
    for exc in (
        EndpointConnectionError(endpoint_url="http://x"),
        ReadTimeoutError(endpoint_url="http://x"),
        ConnectionResetError(),
    ):
        assert isinstance(connector._translate(exc, "reading"), BackendUnavailable)


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
