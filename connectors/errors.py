"""Errors raised by connectors and the transfer engine.

Backends translate their libraries' errors at the boundary (``raise ... from
exc``); whether a worker retries is a property of the error's type, never of
its message. Messages name the connector and path and never a credential.

::

    ConnectorError                  anything a connector or transfer cannot do
    ├── TransientError              worth retrying: it may pass on its own
    │   ├── BackendUnavailable      timeouts, connection resets, 5xx
    │   └── Throttled               the backend asked us to slow down
    └── PermanentError              retrying will not help
        ├── ObjectNotFound          the object (usually a copy's source) is missing
        ├── AccessDenied            credentials refused or lacking permission
        ├── InvalidPath             absolute, '..', or escaping the root (before any I/O)
        ├── ConfigurationError      a connector that cannot be set up as configured
        ├── Unsupported             a capability this backend does not have
        └── ChecksumMismatch        bytes written differ from bytes read or expected
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every connector error; its message is one line, free of secrets."""

    #: Whether retrying the same operation may succeed.
    transient = False


class TransientError(ConnectorError):
    """A failure that may pass: retry with backoff."""

    transient = True


class BackendUnavailable(TransientError):
    """The backend timed out, reset the connection or answered 5xx."""


class Throttled(TransientError):
    """The backend asked us to slow down (S3 SlowDown, HTTP 429, ...)."""


class PermanentError(ConnectorError):
    """A failure that retrying will not fix."""


class ObjectNotFound(PermanentError):
    """The object does not exist."""


class AccessDenied(PermanentError):
    """The credentials were refused or lack a permission."""


class InvalidPath(PermanentError, ValueError):
    """A path that is absolute, has a '..' segment or escapes the connector root."""


class ConfigurationError(PermanentError):
    """The connector cannot be set up as configured (missing bucket, bad credentials file)."""


class Unsupported(PermanentError):
    """The backend lacks the capability asked for."""


class ChecksumMismatch(PermanentError):
    """What was written is not what was read, or not what the catalog expects.

    The bad destination object has been removed by the time this is raised.
    """
