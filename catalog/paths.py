"""Validation of the relative paths and urls the catalog stores.

A stored path is relative, '/'-separated, has no empty, '.' or '..' segment,
no backslash or NUL, and is UTF-8 (no lone surrogates: a file name of other
bytes, as Python reads it); a directory path ends with a single '/'. Anything
else is refused before it reaches the catalog or any storage backend.
"""

from __future__ import annotations

from collections.abc import Sequence

from catalog.errors import InvalidPathError

#: Longest path we store; every backend we support accepts at least this.
MAX_PATH_LENGTH = 1024


def check_relative_path(value: str, *, what: str = "path", allow_directory: bool = True) -> str:
    """Return ``value`` if it is a safe relative path, else raise InvalidPathError.

    ``what`` names the value in the error message (``"url"``, ``"path"``).
    """
    if not isinstance(value, str) or not value:
        raise InvalidPathError(f"{what} must be a non-empty string")
    if len(value) > MAX_PATH_LENGTH:
        raise InvalidPathError(f"{what} {value[:40]!r}... is longer than {MAX_PATH_LENGTH}")
    if "\x00" in value:
        raise InvalidPathError(f"{what} {value!r} contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidPathError(
                f"{what} {value!r} is not UTF-8 (a name in another encoding?)"
            ) from None
    if "\\" in value:
        raise InvalidPathError(f"{what} {value!r} contains a backslash; use '/'")
    if value.startswith("/"):
        raise InvalidPathError(f"{what} {value!r} is absolute; it must be relative")
    if len(value) >= 2 and value[1] == ":" and value[0].isalpha():
        raise InvalidPathError(f"{what} {value!r} looks like a drive path; it must be relative")
    body = value[:-1] if value.endswith("/") else value
    if value.endswith("/") and not allow_directory:
        raise InvalidPathError(f"{what} {value!r} must not end with '/'")
    for segment in body.split("/"):
        if segment == "..":
            raise InvalidPathError(f"{what} {value!r} has a '..' segment")
        if segment == ".":
            raise InvalidPathError(f"{what} {value!r} has a '.' segment")
        if segment == "":
            raise InvalidPathError(f"{what} {value!r} has an empty segment")
    return value


def files_label(paths: Sequence[str]) -> str:
    """Files of one job, for the history and messages: ``a``, or ``a and 9 more``."""
    return paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"
