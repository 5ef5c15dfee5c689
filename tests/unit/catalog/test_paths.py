"""Relative paths and urls (SPEC §3): refused before they reach the catalog or a backend."""

from __future__ import annotations

import pytest

from catalog.errors import CatalogError, InvalidPathError
from catalog.paths import MAX_PATH_LENGTH, check_relative_path


@pytest.mark.parametrize(
    "value",
    [
        "reads.fastq.gz",
        "1",
        "a/b/c.txt",
        "sub/dir/",
        "dir/",
        "name with spaces/file (1).txt",
        "..hidden/x",
        "a/..b/c..",
        ".config/settings",
        "ünïcode/файл",
        "x" * MAX_PATH_LENGTH,
    ],
)
def test_accepts_safe_relative_paths(value: str) -> None:
    assert check_relative_path(value) == value


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("", "non-empty"),
        ("/etc/passwd", "absolute"),
        ("/", "absolute"),
        ("//server/share", "absolute"),
        ("..", "'..' segment"),
        ("../escape", "'..' segment"),
        ("a/../../escape", "'..' segment"),
        ("a/b/..", "'..' segment"),
        ("a/../", "'..' segment"),
        (".", "'.' segment"),
        ("a/./b", "'.' segment"),
        ("a//b", "empty segment"),
        ("a/b//", "empty segment"),
        ("a\\b", "backslash"),
        ("..\\escape", "backslash"),
        ("C:/Windows", "drive path"),
        ("c:file", "drive path"),
        ("a\x00b", "NUL"),
        ("caf\udce9.txt", "not UTF-8"),
        ("x" * (MAX_PATH_LENGTH + 1), "longer than"),
    ],
)
def test_refuses_unsafe_paths(value: str, complaint: str) -> None:
    with pytest.raises(InvalidPathError, match=complaint) as caught:
        check_relative_path(value)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("path ")


def test_names_the_value_in_the_error() -> None:
    with pytest.raises(InvalidPathError, match=r"^url '/abs' is absolute"):
        check_relative_path("/abs", what="url")


def test_directory_paths_can_be_refused() -> None:
    assert check_relative_path("dir/file", allow_directory=False) == "dir/file"
    with pytest.raises(InvalidPathError, match="must not end with '/'"):
        check_relative_path("dir/", allow_directory=False)


@pytest.mark.parametrize("value", [None, 5, b"bytes"])
def test_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidPathError, match="non-empty string"):
        check_relative_path(value)  # type: ignore[arg-type]


def test_is_a_catalog_error_and_a_value_error() -> None:
    """Pydantic validators turn ValueErrors into validation errors; the CLI shows CatalogErrors."""
    assert issubclass(InvalidPathError, CatalogError)
    assert issubclass(InvalidPathError, ValueError)
