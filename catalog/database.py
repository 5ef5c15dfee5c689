"""Opening the catalog database, binding the models to it, migrating it.

SQLite is the embedded default; PostgreSQL is chosen by a ``postgresql://`` URL.
The database is bound at start-up by the caller, never at import.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import peewee as pw

if TYPE_CHECKING:
    from peewee_migrate import Router

from catalog.errors import DatabaseURLError
from catalog.models import (
    AccessLog,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
    database_proxy,
)
from catalog.pgdriver import use_psycopg2

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# A datetime goes to SQLite as its text (``2026-01-05 00:00:00+00:00``), as
# sqlite3's own adapter did before it was deprecated (Python 3.12), for
# peewee's statements and the written-out ones (``catalog.sql``) alike.
sqlite3.register_adapter(datetime, str)

#: How long an SQLite writer waits for a lock held by another process.
DEFAULT_SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Seconds between a writer's first looks for a write lock another process holds, and at most.
DEFAULT_SQLITE_WRITER_POLL_S = 0.0002
DEFAULT_SQLITE_WRITER_POLL_MAX_S = 0.002
#: SQLite page cache per connection (negative: KiB), enough for the policy indexes.
DEFAULT_SQLITE_CACHE_KIB = 200_000
#: Arbitrary constant naming our PostgreSQL advisory lock for migrations.
MIGRATION_LOCK_ID = 0x5E50_1E57

logger = logging.getLogger(__name__)


#: URL schemes of PostgreSQL databases (SQLAlchemy's spelling too).
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg2")
#: Every URL scheme ``open_database`` takes.
DATABASE_SCHEMES = ("sqlite", *POSTGRES_SCHEMES)


def open_database(url: str) -> pw.Database:
    """Open (lazily; nothing connects yet) the database named by ``url``.

    ``sqlite:///relative.sqlite3``, ``sqlite:////absolute/path.sqlite3``,
    ``sqlite:///:memory:``, ``postgresql://user:password@host:port/dbname``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        if parts.netloc:
            raise DatabaseURLError(
                f"database URL {redact_url(url)!r}: a sqlite URL has no host; "
                "use sqlite:///relative/path or sqlite:////absolute/path"
            )
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        if not path:
            raise DatabaseURLError(f"database URL {url!r}: no file path given")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            _SQLITE_FILES.add(os.path.abspath(path))
        return _SqliteDatabase(
            path,
            pragmas={
                "busy_timeout": DEFAULT_SQLITE_BUSY_TIMEOUT_MS,
                "journal_mode": "wal",
                "foreign_keys": 1,
                "synchronous": "normal",
                "cache_size": -DEFAULT_SQLITE_CACHE_KIB,
            },
            # Our writers take the write lock up front, so two writers never
            # deadlock upgrading a read lock.
            timeout=DEFAULT_SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
    if scheme in POSTGRES_SCHEMES:
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname:
            raise DatabaseURLError(f"database URL {redact_url(url)!r}: no database name given")
        try:
            port = parts.port
        except ValueError as exc:
            raise DatabaseURLError(f"database URL {redact_url(url)!r}: bad port") from exc
        params: dict[str, object] = {
            "user": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None,
            "host": parts.hostname or None,
            "port": port,
        }
        options = _postgres_options(url, parts.query)
        for name in options:
            if name in ("dbname", "database") or params.get(name) is not None:
                raise DatabaseURLError(
                    f"database URL {redact_url(url)!r}: {name!r} is given twice, "
                    f"in the URL and as ?{name}="
                )
        use_psycopg2()
        return pw.PostgresqlDatabase(dbname, **{**params, **options})
    raise DatabaseURLError(
        f"database URL {redact_url(url)!r}: unsupported scheme {parts.scheme!r}; "
        "expected sqlite:/// or postgresql://"
    )


#: The SQLite catalog files this process opened (``checkpoint_opened``).
_SQLITE_FILES: set[str] = set()


def checkpoint_opened() -> None:
    """Put what this process committed to its SQLite catalogs into their files, and empty the logs.

    What SQLite does itself when a process's last connection to a file
    closes, for a process that ends without closing them
    (``resolwe_storage.cli.end_process``): the write-ahead log's
    transactions are copied into the database file, both are flushed to
    disk, and the log is emptied (``PRAGMA wal_checkpoint(TRUNCATE)``), so
    that the file alone holds the catalog, and a file put in its place (a
    backup restored) is not read through the old log's pages. It waits for
    no other process: while one reads or writes, the checkpoint does what it
    can without it and the log stays, for the last of them to empty, as
    SQLite leaves it when a connection that is not the last closes. A file
    that is gone is not made again. Never raises: the transactions are safe
    in the log either way.
    """
    for path in sorted(_SQLITE_FILES):
        if not os.path.exists(f"{path}-wal"):
            continue
        try:
            connection = sqlite3.connect(
                f"{Path(path).as_uri()}?mode=rw",
                uri=True,
                timeout=0,  # busy: as much as it can without waiting, then on
            )
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            logger.debug("no checkpoint of %s at exit: %s", path, exc)


def _postgres_options(url: str, query: str) -> dict[str, str]:
    """The libpq options of a URL's query, refused here if libpq does not know them.

    Refused now rather than on connect, where psycopg2 raises a programming
    error instead of a connection error.
    """
    options = dict(parse_qsl(query))
    if options:
        import psycopg2
        from psycopg2.extensions import make_dsn

        try:
            make_dsn(**options)
        except psycopg2.ProgrammingError as exc:
            detail = str(exc).strip().splitlines()[0]
            raise DatabaseURLError(f"database URL {redact_url(url)!r}: {detail}") from None
    return options


class _SqliteDatabase(pw.SqliteDatabase):
    """SQLite whose writers queue for the write lock, and whose set-up waits for one.

    The threads of one process (a worker's) that begin a writing transaction
    (``IMMEDIATE``, as ``catalog.queries.writing`` does) take turns through
    a lock of the process's own (``_writers``) before SQLite's. Without it
    each waited in SQLite's busy handler, which sleeps 1, 2, 5 ... up to
    100 ms between looks, whether or not the lock came free meanwhile: in a
    ``run --once`` of 2,000 small files here, 8 threads slept about 200
    times, some 3 s in all, and the last job's record waited while nothing
    else ran. Queued, a writer starts as soon as the one before commits. It
    waits as long as SQLite's own timeout, and then fails as SQLite would
    ("database is locked": transient). A deferred transaction, or a lone
    statement, takes no turn.

    A writer whose turn has come, and whose lock another process holds,
    looks again every 0.2 ms at first, then every 2 ms at most
    (``_begin_polling``), rather than in SQLite's busy handler: in a ``run
    --once`` of 2,000 small files shared by two processes here, the second
    process's last record waited 30 ms for the first's, which SQLite's
    sleeps (1, 2, 5, 10, 15, 20 ms ...) turned into 33 to 53 ms.

    Switching a new file to WAL takes an exclusive lock, and SQLite does not
    always wait for it (its busy handler is skipped there): many processes
    opening a new catalog at once would see "database is locked".
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writers = threading.Lock()
        self._writing = threading.local()

    def begin(self, lock_type: str | None = None) -> None:
        """Begin a transaction; one that takes the write lock first queues for ``_writers``."""
        lock_type = lock_type or self._lock_type
        if (lock_type or "DEFERRED").upper() == "DEFERRED" or self._holds_writers():
            super().begin(lock_type)
            return
        if not self._writers.acquire(timeout=DEFAULT_SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise pw.OperationalError("database is locked (a writer of this process held it)")
        try:
            self._begin_polling(lock_type)
        except BaseException:
            self._writers.release()
            raise
        self._writing.held = True

    def _begin_polling(self, lock_type: str) -> None:
        """Begin, looking again soon while another process holds the lock, up to the timeout."""
        connection = self.connection()
        deadline = time.monotonic() + DEFAULT_SQLITE_BUSY_TIMEOUT_MS / 1000
        delay = DEFAULT_SQLITE_WRITER_POLL_S
        connection.execute("PRAGMA busy_timeout = 0").close()
        try:
            while True:
                try:
                    super().begin(lock_type)
                    return
                except pw.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, DEFAULT_SQLITE_WRITER_POLL_MAX_S)
        finally:
            connection.execute(f"PRAGMA busy_timeout = {DEFAULT_SQLITE_BUSY_TIMEOUT_MS}").close()

    def commit(self) -> None:
        super().commit()
        self._let_writers_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._let_writers_go()

    def _holds_writers(self) -> bool:
        return bool(getattr(self._writing, "held", False))

    def _let_writers_go(self) -> None:
        if self._holds_writers():
            self._writing.held = False
            self._writers.release()

    def _set_pragmas(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + DEFAULT_SQLITE_BUSY_TIMEOUT_MS / 1000
        for pragma, value in self._pragmas:
            delay = 0.005
            while True:
                try:
                    conn.execute(f"PRAGMA {pragma} = {value};").close()
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)


def redact_url(url: str) -> str:
    """Return ``url`` with any password (``user:password@`` or ``?password=``) replaced."""
    try:
        parts = urlsplit(url)
        parts.password  # noqa: B018 - raises where the host part is malformed
    except ValueError:
        # Not a URL Python can take apart ("[::1" with no "]"): everything
        # between the scheme and the last "@" but the user name goes.
        scheme, sep, rest = url.partition("://")
        userinfo, at, host = rest.rpartition("@")
        if not at or ":" not in userinfo:
            return url
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
    query = parse_qsl(parts.query, keep_blank_values=True)
    in_query = any(name.lower() == "password" for name, _ in query)
    if parts.password is None and not in_query:
        return url  # untouched: geturl() would drop the empty host of sqlite:///
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        parts = parts._replace(netloc=netloc)
    if in_query:
        hidden = [(name, "***" if name.lower() == "password" else v) for name, v in query]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return parts.geturl()


#: ``password=VALUE`` in a libpq key/value DSN (``host=h password='p w'``).
_DSN_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """``dsn`` (a URL, or libpq's ``key=value`` form) with its password replaced."""
    if "://" in dsn:
        return redact_url(dsn)
    return _DSN_PASSWORD.sub(r"\1***", dsn)


def dsn_passwords(dsn: str) -> list[str]:
    """The password(s) ``dsn`` holds, as written and decoded; longest first."""
    found: list[str] = []
    if "://" in dsn:
        _, _, rest = dsn.partition("://")
        userinfo, at, _ = rest.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        query = rest.partition("?")[2]
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            if name.lower() == "password":
                found.append(value)
    else:
        found.extend(match.group(2) for match in _DSN_PASSWORD.finditer(dsn))
        found.extend(value.strip("'") for value in list(found))
    found.extend(unquote(value) for value in list(found))
    return sorted({value for value in found if value}, key=len, reverse=True)


def hide_dsn(dsn: str, text: str) -> str:
    """``text`` (a driver's error) with ``dsn`` and its password taken out.

    libpq quotes what it cannot parse: the whole URI, or a token of it (the
    password, where its percent-escapes are wrong).
    """
    text = text.replace(dsn, redact_dsn(dsn))
    for secret in dsn_passwords(dsn):
        text = text.replace(secret, "***")
    return text


def bind(database: pw.Database) -> pw.Database:
    """Bind the catalog models to ``database`` and return it."""
    database_proxy.initialize(database)
    return database


def is_postgres(database: pw.Database) -> bool:
    """Tell whether ``database`` is PostgreSQL (else it is SQLite)."""
    return isinstance(database, pw.PostgresqlDatabase)


def refresh_statistics(database: pw.Database) -> None:
    """Let PostgreSQL's planner see the catalog as it is now (``ANALYZE``), after a bulk write.

    A table that has just grown by hundreds of thousands of rows has no
    statistics until autovacuum gets to it; meanwhile the planner guesses,
    and guesses that a lookup of 500 items by ``file_storage_id`` matches
    most of the table: it scans the whole table for every batch. Measured
    here, re-importing 200,000 unchanged items straight after their first
    import took 78.1 s without this and 12.2 s with it (the ``ANALYZE``
    itself: 0.3 s). A table the connection does not own is skipped by
    PostgreSQL with a warning, not an error. SQLite keeps no statistics
    unless told to, and its planner prefers the indexes without them:
    nothing to do there.
    """
    if not is_postgres(database):
        return
    tables = ", ".join(
        model._meta.table_name
        for model in (FileStorage, StorageLocation, ReferencedPath, AccessLog, LocationFile)
    )
    database.execute_sql(f"ANALYZE {tables}")


def planned_items(database: pw.Database) -> int:
    """The items PostgreSQL's planner believes the catalog holds (0 before any ``ANALYZE``)."""
    return _planned_rows(database, FileStorage)


def planned_files(database: pw.Database) -> int:
    """The files (of all items) PostgreSQL's planner believes the catalog holds."""
    return _planned_rows(database, ReferencedPath)


def _planned_rows(database: pw.Database, model: type[pw.Model]) -> int:
    (rows,) = database.execute_sql(
        "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [model._meta.table_name]
    ).fetchone()
    return max(0, int(rows))


def pending_migrations(database: pw.Database) -> list[str]:
    """Names of the migrations not yet applied to ``database``."""
    if not database.table_exists("migratehistory"):
        return list(_router(database).todo)
    return list(_router(database).diff)


def migrate(database: pw.Database) -> list[str]:
    """Apply every pending migration, each in its own transaction.

    Safe to call from many processes at once: they queue on a lock (an
    advisory lock on PostgreSQL, a lock file beside the SQLite file) and the
    later ones find nothing left to do. Returns the migrations applied here.
    """
    # Look before locking, without writing: the router would create its
    # history table, and concurrent CREATE TABLEs collide on PostgreSQL.
    # The usual case, every migration applied, is told by one query (every
    # command opens the catalog; the router costs a tenth of a second).
    if _all_applied(database):
        return []
    if database.table_exists("migratehistory") and not _router(database).diff:
        return []
    with _migration_lock(database):
        return _router(database).run()


@contextmanager
def _migration_lock(database: pw.Database) -> Iterator[None]:
    if is_postgres(database):
        database.execute_sql("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            yield
        finally:
            database.execute_sql("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
        return
    path = database.database
    if path == ":memory:" or not path:
        yield
        return
    # Not a transaction: SQLite migrations that rebuild a table must run with
    # foreign keys off, which SQLite only allows outside a transaction.
    with open(f"{path}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _all_applied(database: pw.Database) -> bool:
    """Whether every migration file's name is in the history (one query, no router)."""
    if not database.table_exists("migratehistory"):
        return False
    applied = {name for (name,) in database.execute_sql("SELECT name FROM migratehistory")}
    files = {path.stem for path in Path(MIGRATIONS_DIR).glob("[0-9][0-9][0-9]_*.py")}
    return bool(files) and files <= applied


def _router(database: pw.Database) -> Router:
    from peewee_migrate import Router

    quiet = logging.getLogger("peewee_migrate.quiet")
    quiet.setLevel(logging.WARNING)
    return Router(database, migrate_dir=MIGRATIONS_DIR, logger=quiet)
