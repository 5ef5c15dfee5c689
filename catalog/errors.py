"""Errors raised by the catalog.

::

    CatalogError                 anything the catalog refuses or cannot do
    ├── DatabaseURLError         a database URL we cannot use
    ├── InvalidPathError         a path or url that is absolute, has '..', ...
    ├── ImportDocumentError      an import document that does not validate
    ├── ReadingProcessFailed     an import's reading process ended without a word
    ├── ItemNotFoundError        no item with the given key
    └── LocationConflictError    a location's url is another item's already
"""


class CatalogError(Exception):
    """Base of every error the catalog raises; its message is one line for a user."""


class DatabaseURLError(CatalogError):
    """The database URL names an unsupported scheme or is malformed."""


class InvalidPathError(CatalogError, ValueError):
    """A path or url is not a safe relative, '/'-separated path."""


class ImportDocumentError(CatalogError):
    """An import document is malformed or contradicts the catalog."""


class ReadingProcessFailed(CatalogError):
    """The process reading an import's items (``catalog.forked``) ended before its end."""


class ItemNotFoundError(CatalogError):
    """No item carries the given key."""


class LocationConflictError(CatalogError):
    """A connector's url is held by another item's location."""
