"""Shared fixtures: a fresh catalog on SQLite and, where the server runs, on PostgreSQL.

PostgreSQL tests use ``$RESOLWE_STORAGE_TEST_POSTGRES`` (default: the local
server's ``postgres`` database as user ``postgres``) to create a private
database for the session. Without a server they are skipped, except under
``CI=true``, where a missing server is a failure.

No test sees the developer's ``RESOLWE_STORAGE_*`` settings (the catalog,
the broker, the configuration file, the log level...): they are taken out of
the environment for the session and again for every test, so neither the
code under test nor the processes the tests start read them. Only the
settings of the tests themselves, ``RESOLWE_STORAGE_TEST_*``, stay.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import peewee as pw
import pytest

from catalog.database import bind, migrate, open_database
from catalog.models import ALL_MODELS

#: Real servers the integration tests start themselves.
pytest_plugins = ["tests.servers.moto", "tests.servers.fakegcs"]

POSTGRES_ADMIN_URL = os.environ.get(
    "RESOLWE_STORAGE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Our settings, which no test may inherit from the developer's shell ...
OUR_PREFIX = "RESOLWE_STORAGE_"
#: ... except those of the tests themselves.
TEST_PREFIX = "RESOLWE_STORAGE_TEST_"


def our_settings() -> list[str]:
    """The names of ``RESOLWE_STORAGE_*`` variables in the environment, but the test ones."""
    return [
        name
        for name in os.environ
        if name.startswith(OUR_PREFIX) and not name.startswith(TEST_PREFIX)
    ]


@pytest.fixture(scope="session", autouse=True)
def _without_our_settings_for_the_session() -> Iterator[None]:
    """Out of the environment before any session fixture starts a server or process."""
    with pytest.MonkeyPatch.context() as patch:
        for name in our_settings():
            patch.delenv(name)
        yield


@pytest.fixture(autouse=True)
def _without_our_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Out of the environment for every test (were one put back since)."""
    for name in our_settings():
        monkeypatch.delenv(name)


def server_missing(what: str, reason: str) -> None:
    """Skip a test for want of a server; under CI=true, fail it instead."""
    if IN_CI:
        pytest.fail(f"{what} is required under CI=true: {reason}")
    pytest.skip(f"{what} not available: {reason}")


@contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a new PostgreSQL database named ``prefix`` and a random part, dropped after."""
    admin = open_database(POSTGRES_ADMIN_URL)
    try:
        admin.connect()
    except pw.OperationalError as exc:
        server_missing("PostgreSQL", str(exc).strip().splitlines()[0])
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin.execute_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    finally:
        admin.execute_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a private PostgreSQL database, created for this test session."""
    with new_postgres_database("resolwe_storage_test") as url:
        yield url


@pytest.fixture(scope="session")
def _postgres_catalog(postgres_url: str) -> Iterator[pw.Database]:
    database = open_database(postgres_url)
    database.connect()
    migrate(database)
    yield database
    database.close()


def _truncate(database: pw.Database) -> None:
    tables = ", ".join(model._meta.table_name for model in ALL_MODELS)
    database.execute_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pw.Database]:
    """A migrated, empty, bound catalog: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        database = open_database(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
        database.connect()
        migrate(database)
        bind(database)
        yield database
        database.close()
    else:
        database = request.getfixturevalue("_postgres_catalog")
        _truncate(database)
        bind(database)
        yield database
        database.rollback() if database.in_transaction() else None


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    with new_postgres_database("resolwe_storage_fresh") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new catalog, not yet made: once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[pw.Database]:
    """A migrated, empty, bound SQLite catalog."""
    database = open_database(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    database.connect()
    migrate(database)
    bind(database)
    yield database
    database.close()
