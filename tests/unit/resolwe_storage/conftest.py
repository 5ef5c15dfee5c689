"""Every test here starts in an empty working folder, without our environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from resolwe_storage.config import ENV_BROKER, ENV_CONFIG, ENV_DATABASE


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the developer's settings out, and the default catalog file out of the checkout."""
    for name in (ENV_CONFIG, ENV_DATABASE, ENV_BROKER):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
