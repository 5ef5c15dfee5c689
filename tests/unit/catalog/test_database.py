"""Opening the catalog from a URL, hiding passwords, and migrating it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import peewee as pw
import pytest

import catalog.database
from catalog.database import (
    DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
    MIGRATIONS_DIR,
    migrate,
    open_database,
    pending_migrations,
    redact_url,
)
from catalog.errors import CatalogError, DatabaseURLError
from catalog.queries import writing

#: Every migration the product ships, in order.
ALL_MIGRATIONS = sorted(path.stem for path in MIGRATIONS_DIR.glob("[0-9]*.py"))


def pragma(database: pw.Database, name: str) -> object:
    return database.execute_sql(f"PRAGMA {name}").fetchone()[0]


def test_sqlite_pragmas(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    assert isinstance(database, pw.SqliteDatabase)
    database.connect()
    try:
        assert pragma(database, "journal_mode") == "wal"
        assert pragma(database, "busy_timeout") == DEFAULT_SQLITE_BUSY_TIMEOUT_MS
        assert pragma(database, "foreign_keys") == 1
    finally:
        database.close()


def test_sqlite_relative_and_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three slashes: relative to the working directory; four: absolute. Parents are made."""
    monkeypatch.chdir(tmp_path)
    relative = open_database("sqlite:///sub/relative.sqlite3")
    assert relative.database == "sub/relative.sqlite3"
    assert (tmp_path / "sub").is_dir()
    absolute = open_database(f"sqlite:///{tmp_path}/abs/c.sqlite3")
    assert absolute.database == f"{tmp_path}/abs/c.sqlite3"
    assert (tmp_path / "abs").is_dir()


def test_sqlite_in_memory() -> None:
    database = open_database("sqlite:///:memory:")
    database.connect()
    try:
        assert migrate(database) == ALL_MIGRATIONS
        assert pending_migrations(database) == []
    finally:
        database.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_postgresql_url(scheme: str) -> None:
    """Nothing connects yet: the URL's parts become the connection parameters."""
    database = open_database(f"{scheme}://alice:p%40ss@db.example:6543/catalog?sslmode=require")
    assert isinstance(database, pw.PostgresqlDatabase)
    assert database.database == "catalog"
    assert database.connect_params == {
        "user": "alice",
        "password": "p@ss",
        "host": "db.example",
        "port": 6543,
        "sslmode": "require",
    }


def test_postgresql_socket_url() -> None:
    """libpq's own idiom: no host in the URL, the socket folder as ?host=."""
    database = open_database("postgresql:///catalog?host=/var/run/postgresql")
    assert database.connect_params["host"] == "/var/run/postgresql"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("mysql://u@h/db", "unsupported scheme 'mysql'"),
        ("catalog.sqlite3", "unsupported scheme ''"),
        ("sqlite://host/x.sqlite3", "a sqlite URL has no host"),
        ("sqlite://", "no file path given"),
        ("postgresql://u@h:5432/", "no database name given"),
        ("postgresql://u@h:notaport/db", "bad port"),
        ("postgresql://u@h:5432/db?port=5433", "'port' is given twice"),
        ("postgresql://u:pw@h/db?password=other", "'password' is given twice"),
        ("postgresql://u@h/db?dbname=other", "'dbname' is given twice"),
        ("postgresql://u@h/db?no_such_option=1", 'invalid connection option "no_such_option"'),
    ],
)
def test_unusable_urls(url: str, complaint: str) -> None:
    with pytest.raises(DatabaseURLError, match=complaint) as caught:
        open_database(url)
    assert isinstance(caught.value, CatalogError)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cr3t@h:1/db?port=2",
        "postgresql://u:s3cr3t@h:bad/db",
        "postgresql://u:s3cr3t@h/",
        "sqlite://u:s3cr3t@h/x",
        "postgresql://u@h/db?password=s3cr3t&bogus=1",
        "mysql://u:s3cr3t@h/db",
    ],
)
def test_errors_never_show_the_password(url: str) -> None:
    with pytest.raises(DatabaseURLError) as caught:
        open_database(url)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://alice:s3cr3t@host:5432/db", "postgresql://alice:***@host:5432/db"),
        ("postgresql://:s3cr3t@host/db", "postgresql://:***@host/db"),
        ("postgresql://bob:bob@host/db", "postgresql://bob:***@host/db"),
        ("postgresql://alice:p%40s3cr3t@host/db", "postgresql://alice:***@host/db"),
        (
            "postgresql://alice@host/db?sslmode=require&password=s3cr3t",
            "postgresql://alice@host/db?sslmode=require&password=***",
        ),
        ("postgresql://alice@host/db", "postgresql://alice@host/db"),
        (
            "postgresql://alice@host/db?sslmode=require",
            "postgresql://alice@host/db?sslmode=require",
        ),
        ("sqlite:///catalog.sqlite3", "sqlite:///catalog.sqlite3"),
        ("sqlite:////abs/catalog.sqlite3", "sqlite:////abs/catalog.sqlite3"),
        ("sqlite://u:s3cr3t@/catalog.sqlite3", "sqlite://u:***@/catalog.sqlite3"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_migrate_a_new_sqlite_catalog(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'new.sqlite3'}")
    database.connect()
    try:
        assert pending_migrations(database) == ALL_MIGRATIONS
        assert migrate(database) == ALL_MIGRATIONS
        assert pending_migrations(database) == []
        assert migrate(database) == []
        assert set(database.get_tables()) >= {
            "file_storage",
            "storage_location",
            "referenced_path",
            "access_log",
            "action",
            "migratehistory",
        }
    finally:
        database.close()


def test_migrate_is_idempotent(catalog_db: pw.Database) -> None:
    """On an up-to-date catalog (both engines) migrating again does nothing."""
    assert pending_migrations(catalog_db) == []
    assert migrate(catalog_db) == []
    assert migrate(catalog_db) == []
    assert pending_migrations(catalog_db) == []
    history = catalog_db.execute_sql("SELECT name FROM migratehistory").fetchall()
    assert [name for (name,) in history] == ALL_MIGRATIONS


def test_an_items_files_have_one_index_that_finds_them_by_item(catalog_db: pw.Database) -> None:
    """The unique (file_storage_id, path) index; the foreign key's own one is gone (009)."""
    indexes = {
        index.name: (tuple(index.columns), index.unique)
        for index in catalog_db.get_indexes("referenced_path")
    }
    assert ("file_storage_id",) not in {columns for columns, _ in indexes.values()}
    assert (("file_storage_id", "path"), True) in indexes.values()


def test_foreign_keys_are_enforced(catalog_db: pw.Database) -> None:
    """A location cannot point at an item that does not exist (SQLite needs the pragma)."""
    from catalog.models import StorageLocation

    with pytest.raises(pw.IntegrityError), catalog_db.atomic():
        StorageLocation.create(file_storage=12345, connector_name="local", url="x")


def _first_writer(database: pw.Database) -> tuple[list[str], threading.Event]:
    """A thread holding a writing transaction until told; the statements begun, as they start."""
    events: list[str] = []
    held, release = threading.Event(), threading.Event()

    def traced(name: str) -> None:
        database.connection().set_trace_callback(lambda sql: events.append(f"{name}: {sql}"))

    def first() -> None:
        traced("first")
        with writing(database):
            database.execute_sql("CREATE TABLE IF NOT EXISTS t (x)")
            held.set()
            release.wait(10)
        database.close()

    threading.Thread(target=first, daemon=True).start()
    assert held.wait(10)
    return events, release


def test_writers_of_one_process_queue_for_the_write_lock(tmp_path: Path) -> None:
    """A second writer begins only once the first has committed, not while it holds the lock."""
    database = open_database(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    events, release = _first_writer(database)
    done = threading.Event()

    def second() -> None:
        database.connection().set_trace_callback(lambda sql: events.append(f"second: {sql}"))
        with writing(database):
            database.execute_sql("INSERT INTO t VALUES (1)")
        database.close()
        done.set()

    threading.Thread(target=second, daemon=True).start()
    time.sleep(0.2)  # in SQLite's busy handler by now, had it not queued
    assert not any(event.startswith("second: BEGIN") for event in events)
    release.set()
    assert done.wait(10)
    begins = [e for e in events if "BEGIN" in e or "COMMIT" in e]
    assert begins == [
        "first: BEGIN IMMEDIATE",
        "first: COMMIT",
        "second: BEGIN IMMEDIATE",
        "second: COMMIT",
    ]


def test_a_queued_writer_times_out_as_sqlite_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog.database, "DEFAULT_SQLITE_BUSY_TIMEOUT_MS", 100)
    database = open_database(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    _, release = _first_writer(database)
    try:
        with pytest.raises(pw.OperationalError, match="database is locked"), writing(database):
            pass
        assert not database.in_transaction()
    finally:
        release.set()


def test_the_write_turn_is_given_up_on_commit_rollback_and_failure(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'c.sqlite3'}")
    with writing(database):
        database.execute_sql("CREATE TABLE t (x UNIQUE)")
    with pytest.raises(ZeroDivisionError), writing(database):
        database.execute_sql("INSERT INTO t VALUES (1)")
        raise ZeroDivisionError
    with pytest.raises(pw.IntegrityError), writing(database):
        database.execute_sql("INSERT INTO t VALUES (2)")
        database.execute_sql("INSERT INTO t VALUES (2)")
    with writing(database) as transaction:  # committed and begun again inside the block
        database.execute_sql("INSERT INTO t VALUES (3)")
        transaction.commit()
    # Each turn was given back: another thread writes at once.
    wrote = threading.Event()

    def other() -> None:
        with writing(database):
            database.execute_sql("INSERT INTO t VALUES (4)")
        database.close()
        wrote.set()

    threading.Thread(target=other, daemon=True).start()
    assert wrote.wait(10)
    assert [row[0] for row in database.execute_sql("SELECT x FROM t ORDER BY x")] == [3, 4]


#: A process of its own that holds SQLite's write lock until its input ends.
_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute("INSERT INTO t VALUES ('other process')")
print("held", flush=True)
sys.stdin.read()
connection.execute("COMMIT")
print("committed", flush=True)
"""


def _other_process_writing(path: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_a_writer_looks_again_for_a_lock_another_process_holds(tmp_path: Path) -> None:
    """Not in SQLite's busy handler, asleep for up to 100 ms at a time: begun again, soon."""
    path = tmp_path / "c.sqlite3"
    database = open_database(f"sqlite:///{path}")
    with writing(database):
        database.execute_sql("CREATE TABLE t (x)")
    holder = _other_process_writing(path)
    statements: list[str] = []
    try:
        wrote = threading.Event()

        def ours() -> None:
            database.connection().set_trace_callback(statements.append)
            with writing(database):
                # SQLite's own wait is back for the statements of the transaction.
                assert pragma(database, "busy_timeout") == DEFAULT_SQLITE_BUSY_TIMEOUT_MS
                database.execute_sql("INSERT INTO t VALUES ('ours')")
            database.close()
            wrote.set()

        writer = threading.Thread(target=ours, daemon=True)
        writer.start()
        time.sleep(0.1)
        assert not wrote.is_set()
        assert holder.stdout is not None
        holder.stdin.close()  # type: ignore[union-attr]
        assert holder.stdout.readline() == "committed\n"
        writer.join(10)
        assert wrote.is_set()
    finally:
        holder.kill()
        holder.wait()
    begins = statements.count("BEGIN IMMEDIATE")
    assert begins > 5, f"begun {begins} times in 100 ms: asleep in SQLite's busy handler"
    rows = [row[0] for row in database.execute_sql("SELECT x FROM t ORDER BY rowid")]
    assert rows == ["other process", "ours"]
    assert pragma(database, "busy_timeout") == DEFAULT_SQLITE_BUSY_TIMEOUT_MS


def test_a_writer_gives_up_on_another_process_s_lock_as_sqlite_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog.database, "DEFAULT_SQLITE_BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "c.sqlite3"
    database = open_database(f"sqlite:///{path}")
    with writing(database):
        database.execute_sql("CREATE TABLE t (x)")
    holder = _other_process_writing(path)
    try:
        with pytest.raises(pw.OperationalError, match="database is locked"), writing(database):
            pass
        assert not database.in_transaction()
        assert pragma(database, "busy_timeout") == 100  # SQLite's own wait is back
        # The turn was given back: this process's next writer is not kept out.
        holder.stdin.close()  # type: ignore[union-attr]
        assert holder.stdout is not None and holder.stdout.readline() == "committed\n"
        with writing(database):
            database.execute_sql("INSERT INTO t VALUES ('ours')")
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    ("dsn", "text"),
    [
        # libpq's errors quote a token it cannot decode, or the whole URI.
        ("postgresql://u:s3cr3t%zz@h/db", 'invalid percent-encoded token: "s3cr3t%zz"'),
        ("postgresql://u:s3cr3t@[::1]x/db", 'unexpected character "x" in URI: "{dsn}"'),
        ("postgresql://u:p%40s3cr3t@h/db", 'password "p@s3cr3t" refused'),
        ("postgresql://u@h/db?password=s3cr3t", "no answer from {dsn}"),
        ("host=h user=u password=s3cr3t dbname=db", "could not connect: {dsn}"),
        ("host=h user=u password='s3 cr3t' dbname=db", "could not connect: {dsn}"),
    ],
)
def test_hide_dsn_takes_the_password_out_of_a_drivers_error(dsn: str, text: str) -> None:
    from catalog.database import hide_dsn, redact_dsn

    assert "s3cr3t" not in hide_dsn(dsn, text.format(dsn=dsn))
    assert "s3cr3t" not in redact_dsn(dsn) and "3 cr3t" not in redact_dsn(dsn)


def test_redact_url_of_a_url_python_cannot_parse_hides_the_password() -> None:
    assert redact_url("postgresql://u:s3cr3t@[::1/db") == "postgresql://u:***@[::1/db"
