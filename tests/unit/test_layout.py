"""The dependency direction of SPEC §2, kept by reading every import of every package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("connectors", "catalog", "scheduler", "workers", "resolwe_storage")
ALLOWED = {
    "connectors": set(),
    "catalog": set(),
    "scheduler": {"catalog"},
    "workers": {"catalog", "connectors"},
    "resolwe_storage": set(PACKAGES),
}


def imported_packages(package: str, root: Path = ROOT) -> dict[str, set[str]]:
    """Our top-level packages imported by each module of ``package``."""
    found: dict[str, set[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(root))] = names & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_follow_the_dependency_direction(package: str) -> None:
    modules = imported_packages(package)
    assert modules, f"{package} has no modules"
    for module, uses in modules.items():
        forbidden = uses - ALLOWED[package] - {package}
        assert not forbidden, f"{module} imports {sorted(forbidden)}, against SPEC §2"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "bad.py").write_text(
        "import os\nfrom scheduler.policy import explain\nimport connectors.registry as r\n"
    )
    assert imported_packages("catalog", tmp_path) == {"catalog/bad.py": {"scheduler", "connectors"}}
