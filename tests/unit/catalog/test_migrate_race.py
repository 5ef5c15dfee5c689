"""Many processes starting at once migrate a new catalog exactly once."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

import pytest

from catalog.database import MIGRATIONS_DIR, migrate, open_database
from tests.conftest import POSTGRES_ADMIN_URL, server_missing

PROCESSES = 4


#: Every migration the product ships, in order.
ALL_MIGRATIONS = sorted(path.stem for path in MIGRATIONS_DIR.glob("[0-9]*.py"))


def _migrate(url: str, barrier: object, results: object) -> None:
    database = open_database(url)
    database.connect()
    barrier.wait()  # type: ignore[attr-defined]
    try:
        results.put(("ok", migrate(database)))  # type: ignore[attr-defined]
    except Exception as exc:  # reported to the test, which fails on it
        results.put(("error", repr(exc)))  # type: ignore[attr-defined]


def race(url: str) -> list[tuple[str, object]]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(target=_migrate, args=(url, barrier, results)) for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    return outcomes


def check(outcomes: list[tuple[str, object]]) -> None:
    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    applied = sorted((value for _, value in outcomes), key=len)
    assert applied[-1] == ALL_MIGRATIONS
    assert all(value == [] for value in applied[:-1])


def test_concurrent_first_use_on_sqlite(tmp_path: Path) -> None:
    check(race(f"sqlite:///{tmp_path / 'new.sqlite3'}"))


@pytest.mark.postgres
def test_concurrent_first_use_on_postgres() -> None:
    admin = open_database(POSTGRES_ADMIN_URL)
    try:
        admin.connect()
    except Exception as exc:
        server_missing("PostgreSQL", str(exc).splitlines()[0])
    name = f"resolwe_storage_race_{uuid.uuid4().hex[:10]}"
    admin.execute_sql(f'CREATE DATABASE "{name}"')
    try:
        check(race(f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"))
    finally:
        admin.execute_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
