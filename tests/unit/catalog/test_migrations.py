"""Migrations applied to a catalog that already holds items made by the earlier ones.

Migration 006 (integrity) is applied to a catalog at 005 holding imported
copies, copies made by the workers, a verification that found a file bad,
copies under way, and history; on SQLite and on a new PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest
from peewee_migrate import Router

from catalog.database import MIGRATIONS_DIR, bind, migrate, open_database
from catalog.integrity import lost_files
from catalog.models import Action, LocationFile, StorageLocation
from tests.conftest import new_postgres_database

BEFORE_INTEGRITY = "005_file_verification"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[pw.Database]:
    """An empty database of each engine, not migrated."""
    if request.param == "sqlite":
        database = open_database(f"sqlite:///{tmp_path / 'old.sqlite3'}")
        database.connect()
        yield database
        database.close()
        return
    with new_postgres_database("resolwe_storage_migrate") as url:
        database = open_database(url)
        database.connect()
        yield database
        database.close()


def sql(database: pw.Database, text: str, *params: object) -> list[tuple[object, ...]]:
    text = text.replace("?", database.param)
    cursor = database.execute_sql(text, params)
    return cursor.fetchall() if cursor.description else []


def old_catalog(database: pw.Database) -> dict[str, int]:
    """What a catalog at migration 005 holds, written as that version's code wrote it."""
    Router(database, migrate_dir=MIGRATIONS_DIR).run(BEFORE_INTEGRITY)
    assert not database.table_exists("location_file") or "problem" not in {
        column.name for column in database.get_columns("location_file")
    }
    ids: dict[str, int] = {}
    for key in ("imported", "copied", "found-bad", "only-bad", "under-way"):
        sql(
            database,
            "INSERT INTO file_storage (key, data_slug, process_type, status, created)"
            " VALUES (?, '', '', 'OK', '2026-01-01 00:00:00')",
            key,
        )
        ids[key] = int(sql(database, "SELECT id FROM file_storage WHERE key = ?", key)[0][0])
        for path in ("a.txt", "b.txt"):
            sql(
                database,
                "INSERT INTO referenced_path (file_storage_id, path, size, crc32c, chunk_size)"
                " VALUES (?, ?, 1, '00000000', 8388608)",
                ids[key],
                path,
            )

    def location(key: str, connector: str, status: str, verified: str | None = None) -> int:
        sql(
            database,
            "INSERT INTO storage_location"
            " (file_storage_id, connector_name, url, status, last_update, last_verified)"
            " VALUES (?, ?, ?, ?, '2026-01-02 00:00:00', ?)",
            ids[key],
            connector,
            key,
            status,
            verified,
        )
        return int(
            sql(
                database,
                "SELECT id FROM storage_location WHERE file_storage_id = ? AND connector_name = ?",
                ids[key],
                connector,
            )[0][0]
        )

    def row(location_id: int, key: str, path: str, verified: str | None) -> None:
        (path_id,) = sql(
            database,
            "SELECT id FROM referenced_path WHERE file_storage_id = ? AND path = ?",
            ids[key],
            path,
        )[0]
        sql(
            database,
            "INSERT INTO location_file"
            " (storage_location_id, referenced_path_id, copied, validated_by, verified)"
            " VALUES (?, ?, '2026-01-03 00:00:00', 'crc32c', ?)",
            location_id,
            path_id,
            verified,
        )

    def failed_verify(key: str, connector: str) -> None:
        sql(
            database,
            "INSERT INTO action (started, actor, action, item_key, file_storage_id, target,"
            " result, error) VALUES ('2026-01-04 00:00:00', 'worker', 'verify', ?, ?, ?,"
            " 'failed', 'b.txt: crc32c 11111111, catalog says 00000000')",
            key,
            ids[key],
            connector,
        )

    # Imported, never verified (no rows), and imported with a verification time.
    location("imported", "local", "OK")
    location("imported", "S3", "OK", "2026-01-10 00:00:00")
    # Copied by a worker: both files proven; one verified since.
    copied = location("copied", "S3", "OK")
    row(copied, "copied", "a.txt", "2026-01-05 00:00:00")
    row(copied, "copied", "b.txt", None)
    location("copied", "local", "OK")
    # A verification found b.txt bad: its verified time cleared, the copy left OK.
    location("found-bad", "local", "OK")
    bad = location("found-bad", "S3", "OK")
    row(bad, "found-bad", "a.txt", "2026-01-04 00:00:00")
    row(bad, "found-bad", "b.txt", None)
    failed_verify("found-bad", "S3")
    # The only copy, found bad by a verification.
    only = location("only-bad", "local", "OK")
    failed_verify("only-bad", "local")
    sql(
        database,
        "INSERT INTO location_file"
        " (storage_location_id, referenced_path_id, copied, validated_by, verified)"
        " SELECT ?, id, '2026-01-03 00:00:00', 'crc32c', '2026-01-04 00:00:00'"
        " FROM referenced_path WHERE file_storage_id = ? AND path = 'a.txt'",
        only,
        ids["only-bad"],
    )
    # A copy under way, one file recorded.
    location("under-way", "local", "OK")
    under_way = location("under-way", "S3", "UP")
    row(under_way, "under-way", "a.txt", None)
    return ids


def test_integrity_migration_on_a_catalog_holding_items(fresh: pw.Database) -> None:
    ids = old_catalog(fresh)
    actions_before = sql(fresh, "SELECT COUNT(*) FROM action")[0][0]

    applied = migrate(fresh)
    assert applied[0] == "006_integrity"
    bind(fresh)

    def state(key: str, connector: str) -> tuple[str, dict[str, tuple[str, str | None]]]:
        location = StorageLocation.get(
            (StorageLocation.file_storage == ids[key])
            & (StorageLocation.connector_name == connector)
        )
        rows = {
            lf.referenced_path.path: (lf.validated_by, lf.problem)
            for lf in LocationFile.select().where(LocationFile.storage_location == location)
        }
        return str(location.status), rows

    # An imported copy counts as before: its files as the import asserted them.
    assert state("imported", "local") == ("OK", {})
    imported_s3 = StorageLocation.get(
        (StorageLocation.file_storage == ids["imported"]) & (StorageLocation.connector_name == "S3")
    )
    assert str(imported_s3.last_verified) == "2026-01-10 00:00:00"
    # A copy made and proven by a worker is as it was.
    assert state("copied", "S3") == ("OK", {"a.txt": ("crc32c", None), "b.txt": ("crc32c", None)})
    # The file a verification found bad is suspect: the copy is damaged, to be repaired.
    status, rows = state("found-bad", "S3")
    assert status == "DM"
    assert rows["a.txt"] == ("crc32c", None)
    assert rows["b.txt"][1] is not None and rows["b.txt"][1].startswith("suspect")
    # The only copy, found bad: lost, said loudly, not deleted. Its file
    # without a row (an imported copy: the bad one was never recorded) is suspect.
    status, rows = state("only-bad", "local")
    assert status == "DM" and rows["a.txt"] == ("crc32c", None)
    assert rows["b.txt"][1] is not None and rows["b.txt"][1].startswith("suspect")
    assert lost_files() == {ids["only-bad"]: ["b.txt"]}
    # A copy under way is left to its jobs.
    assert state("under-way", "S3") == ("UP", {"a.txt": ("crc32c", None)})
    # Nothing of the history went.
    assert Action.select().count() == actions_before


#: Every migration the product ships, in order; a catalog may stand at any but the last.
ALL_MIGRATIONS = sorted(path.stem for path in MIGRATIONS_DIR.glob("[0-9][0-9][0-9]_*.py"))

#: Rows of each table as the code of any version wrote them; only the columns a
#: version has are written. ``{name}`` is a row's id, looked up by its name.
ROWS: dict[str, list[dict[str, object]]] = {
    "file_storage": [
        {
            "key": key,
            "data_slug": "slug",
            "process_type": "data:test:",
            "status": status,
            "created": "2026-01-01 00:00:00.123456",
            "removed": removed,
            "import_digest": "0123456789abcdef0123456789abcdef",
        }
        for key, status, removed in (("one", "OK", None), ("two", "ER", "2026-02-01 00:00:00"))
    ],
    "referenced_path": [
        {
            "file_storage_id": "{one}",
            "path": "a.txt",
            "size": 3,
            "md5": "0" * 32,
            "crc32c": "0" * 8,
            "awss3etag": "0" * 32,
            "chunk_size": 5 << 20,
        },
        {
            "file_storage_id": "{one}",
            "path": "dir/",
            "size": None,
            "md5": None,
            "crc32c": None,
            "awss3etag": None,
            "chunk_size": 8 << 20,
        },
        {
            "file_storage_id": "{two}",
            "path": "b.txt",
            "size": 1,
            "md5": None,
            "crc32c": None,
            "awss3etag": None,
            "chunk_size": 8 << 20,
        },
    ],
    "storage_location": [
        {
            "file_storage_id": "{one}",
            "connector_name": connector,
            "url": f"one/{connector}",
            "status": status,
            "last_update": "2026-01-02 00:00:00",
            "last_verified": verified,
        }
        for connector, status, verified in (
            ("local", "OK", "2026-01-03 00:00:00"),
            ("S3", "UP", None),
            ("GCS", "DE", None),
        )
    ]
    + [
        {
            "file_storage_id": "{two}",
            "connector_name": "local",
            "url": "two",
            "status": "OK",
            "last_update": "2026-01-02 00:00:00",
            "last_verified": None,
        },
    ],
    "access_log": [
        {
            "storage_location_id": "{local}",
            "started": "2026-01-04 00:00:00",
            "finished": None,
            "reason": "read",
            "expires": None,
        },
        {
            "storage_location_id": "{local}",
            "started": "2026-01-04 00:00:00",
            "finished": "2026-01-04 00:01:00",
            "reason": "copy to S3",
            "expires": None,
        },
        {
            "storage_location_id": "{S3}",
            "started": "2026-01-04 00:00:00",
            "finished": None,
            "reason": "copy to S3",
            "expires": "2026-01-04 02:00:00",
        },
    ],
    "action": [
        {
            "started": "2026-01-04 00:00:00",
            "finished": "2026-01-04 00:00:01",
            "actor": "worker",
            "action": "copy",
            "item_key": "one",
            "file_storage_id": "{one}",
            "source": "local",
            "target": "S3",
            "path": "a.txt",
            "result": "ok",
            "bytes": 3,
            "duration_ms": 5,
            "error": None,
        },
    ],
    "location_file": [
        {
            "storage_location_id": "{S3}",
            "referenced_path_id": "{a.txt}",
            "copied": "2026-01-04 00:00:00",
            "validated_by": "crc32c",
            "verified": "2026-01-04 00:00:00",
            "problem": None,
            "problem_found": None,
        },
        {
            "storage_location_id": "{GCS}",
            "referenced_path_id": "{a.txt}",
            "copied": "2026-01-04 00:00:00",
            "validated_by": "md5",
            "verified": None,
            "problem": None,
            "problem_found": None,
        },
    ],
    "setting": [
        {"name": "deletes_paused", "value": "1", "note": "by hand", "updated": "2026-01-05"}
    ],
}


def fill(database: pw.Database) -> None:
    """Write ``ROWS`` into whatever of them the catalog's version has."""
    ids: dict[str, object] = {}
    for table in ROWS:  # fmt: skip
        if not database.table_exists(table):
            continue
        columns = {column.name for column in database.get_columns(table)}
        for row in ROWS[table]:
            values = {
                name: ids[value[1:-1]] if isinstance(value, str) and value[:1] == "{" else value
                for name, value in row.items()
                if name in columns
            }
            names = ", ".join(values)
            marks = ", ".join([database.param] * len(values))
            database.execute_sql(
                f"INSERT INTO {table} ({names}) VALUES ({marks})", list(values.values())
            )
            # Rows are named by what ``{...}`` refers to: an item by its key, a
            # file and a location of item "one" by their path and connector.
            name = {"file_storage": "key", "referenced_path": "path"}.get(table)
            if table == "storage_location" and row["file_storage_id"] == "{one}":
                name = "connector_name"
            if name is not None:
                (new_id,) = database.execute_sql(f"SELECT MAX(id) FROM {table}").fetchone()
                ids.setdefault(str(row[name]), new_id)


def columns_of(database: pw.Database) -> dict[str, list[str]]:
    """The columns of each table of ``ROWS`` the catalog has, its key first."""
    return {
        table: sorted(
            (column.name for column in database.get_columns(table)),
            key=lambda name: (name not in ("id", "name"), name),
        )
        for table in ROWS
        if database.table_exists(table)
    }


def dump(
    database: pw.Database, columns: dict[str, list[str]]
) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table of ``columns``, those columns only, in id order."""
    return {
        table: database.execute_sql(
            f"SELECT {', '.join(names)} FROM {table} ORDER BY {names[0]}"
        ).fetchall()
        for table, names in columns.items()
    }


@pytest.mark.parametrize("version", ALL_MIGRATIONS[:-1])
def test_a_catalog_at_any_older_version_upgrades_with_every_row_and_state(
    fresh: pw.Database, version: str
) -> None:
    Router(fresh, migrate_dir=MIGRATIONS_DIR).run(version)
    fill(fresh)
    columns = columns_of(fresh)
    before = dump(fresh, columns)
    assert all(before[table] for table in columns)

    applied = migrate(fresh)
    assert applied == ALL_MIGRATIONS[ALL_MIGRATIONS.index(version) + 1 :]
    assert dump(fresh, columns) == before


#: Migrations a process is killed in: one that changes rows and states, one that adds a column.
KILLED_IN = ["006_integrity", "013_location_file_state"]


def killed_in(migration: str, url: str, folder: Path) -> None:
    """Migrate the catalog at ``url`` in a process of its own, killed (SIGKILL) in ``migration``
    after its own statements, before it is recorded."""
    import shutil
    import signal
    import subprocess
    import sys

    copy = folder / "migrations"
    shutil.copytree(MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / f"{migration}.py"
    path.write_text(
        path.read_text().replace("def migrate(", "def _migrate(")
        + "\n\ndef migrate(migrator, database, *, fake=False):\n"
        "    import os, signal\n"
        "    _migrate(migrator, database, fake=fake)\n"
        "    migrator.run(lambda: os.kill(os.getpid(), signal.SIGKILL))\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from peewee_migrate import Router;"
            " from catalog.database import open_database;"
            " Router(open_database(sys.argv[1]), migrate_dir=sys.argv[2]).run()",
            url,
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr


def url_of(database: pw.Database) -> str:
    if isinstance(database, pw.SqliteDatabase):
        return f"sqlite:///{database.database}"
    params = database.connect_params
    where = f"{params.get('host') or '127.0.0.1'}:{params.get('port') or 5432}"
    return f"postgresql://{params.get('user') or 'postgres'}@{where}/{database.database}"


@pytest.mark.parametrize("migration", KILLED_IN)
def test_a_migration_killed_midway_is_finished_by_the_next_start(
    fresh: pw.Database, migration: str, tmp_path: Path
) -> None:
    before_it = ALL_MIGRATIONS[ALL_MIGRATIONS.index(migration) - 1]
    Router(fresh, migrate_dir=MIGRATIONS_DIR).run(before_it)
    fill(fresh)
    columns = columns_of(fresh)
    before = dump(fresh, columns)
    fresh.close()
    killed_in(migration, url_of(fresh), tmp_path)

    fresh.connect()
    assert migrate(fresh) == ALL_MIGRATIONS[ALL_MIGRATIONS.index(migration) :]
    assert dump(fresh, columns) == before
