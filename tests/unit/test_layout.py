"""The layout of SPEC §2, kept by reading every import of every module.

- each package imports only the packages below it (``ALLOWED``), and the
  scheduler of the workers only their queue contract (``SCHEDULER_MAY_USE``);
- the policy modules of the scheduler read no clock and import no database
  driver, network client or storage backend;
- no import circle, between modules of any package (imports inside
  functions included: a circle hidden in a function is still one).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("connectors", "catalog", "scheduler", "workers", "resolwe_storage")
ALLOWED = {
    "connectors": set(),
    "catalog": set(),
    "scheduler": {"catalog", "workers"},
    "workers": {"catalog", "connectors"},
    "resolwe_storage": set(PACKAGES),
}
#: What of ``workers`` the scheduler may import: the queue contract.
SCHEDULER_MAY_USE = {"workers.broker", "workers.messages", "workers.outage"}
#: The scheduler's pure policy, and what it must never reach for.
POLICY_MODULES = ("scheduler.policy", "scheduler.rules", "scheduler.planning")
IMPURE_MODULES = {
    "time",
    "socket",
    "sqlite3",
    "psycopg",
    "psycopg2",
    "redis",
    "dramatiq",
    "apscheduler",
    "boto3",
    "botocore",
    "google",
    "requests",
    "urllib3",
    "httpx",
    "connectors",
    "workers",
}
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path = ROOT) -> dict[str, ast.Module]:
    """Every module of our packages, by dotted name, parsed."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            tree.is_package = path.name == "__init__.py"  # type: ignore[attr-defined]
            found[module_name(path, root)] = tree
    return found


def imports(name: str, tree: ast.Module) -> set[str]:
    """The dotted names ``name`` imports, anywhere in it (``from a import b`` gives ``a.b``)."""
    found: set[str] = set()
    package = name if getattr(tree, "is_package", False) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def ours(names: Iterable[str], known: set[str]) -> set[str]:
    """The modules of ours among ``names`` (``a.b`` that names a function of ``a``: ``a``)."""
    result = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            result.add(name)
    return result


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the modules of ours it imports."""
    parsed = modules(root)
    known = set(parsed)
    return {name: ours(imports(name, tree), known) - {name} for name, tree in parsed.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Imports against the direction of SPEC §2."""
    wrong = []
    for module, targets in sorted(edges.items()):
        package = module.split(".")[0]
        for target in sorted(targets):
            other = target.split(".")[0]
            if other == package:
                continue
            if other not in ALLOWED[package]:
                wrong.append(f"{module} imports {target}")
            elif (package, other) == ("scheduler", "workers") and target not in SCHEDULER_MAY_USE:
                wrong.append(f"{module} imports {target}, not the queue contract")
    return wrong


def test_every_import_follows_the_dependency_direction() -> None:
    edges = graph()
    assert {name.split(".")[0] for name in edges} == set(PACKAGES)
    assert violations(edges) == []


def test_the_queue_contract_reaches_nothing_but_the_catalog() -> None:
    """What the scheduler imports of the workers brings no operation or connector with it."""
    edges = graph()
    seen, todo = set(), list(SCHEDULER_MAY_USE)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(edges[module])
    assert {name.split(".")[0] for name in seen} <= {"workers", "catalog"}
    assert seen & {"workers.operations", "workers.actors", "workers.runtime"} == set()


@pytest.mark.parametrize("module", POLICY_MODULES)
def test_the_policy_reads_no_clock_and_reaches_no_server(module: str) -> None:
    tree = modules()[module]
    reached = {name.split(".")[0] for name in imports(module, tree)}
    assert reached & IMPURE_MODULES == set()
    calls = {
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    }
    assert calls & CLOCK_CALLS == set()


def test_there_is_no_import_circle() -> None:
    assert circles(graph()) == []


def test_the_checks_see_a_forbidden_import_and_a_circle(tmp_path: Path) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "catalog" / "bad.py").write_text(
        "import os\nfrom scheduler.policy import explain\nimport connectors.registry as r\n"
    )
    (tmp_path / "scheduler" / "policy.py").write_text("def explain(): ...\n")
    (tmp_path / "scheduler" / "scan.py").write_text("from workers.actors import install\n")
    (tmp_path / "workers" / "actors.py").write_text("def install(): ...\n")
    (tmp_path / "connectors" / "registry.py").write_text("")
    (tmp_path / "resolwe_storage" / "a.py").write_text("def f():\n    from . import b\n")
    (tmp_path / "resolwe_storage" / "b.py").write_text("from resolwe_storage.a import f\n")
    edges = graph(tmp_path)
    assert violations(edges) == [
        "catalog.bad imports connectors.registry",
        "catalog.bad imports scheduler.policy",
        "scheduler.scan imports workers.actors, not the queue contract",
    ]
    assert circles(edges) == [["resolwe_storage.a", "resolwe_storage.b"]]
