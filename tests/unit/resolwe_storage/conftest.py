"""Every test here starts in an empty working folder.

The developer's ``RESOLWE_STORAGE_*`` settings are kept out of every test by
``tests/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the default catalog file (``resolwe-storage.sqlite3``) out of the checkout."""
    monkeypatch.chdir(tmp_path)
