"""Workers and an import at once on one PostgreSQL catalog: nobody is a deadlock's victim.

An import is one transaction: it locks each item it updates, in the
document's order, and holds them all until it commits. A copy job of
several small items locks them in id order. Were the job to wait for one
of its items while it held another, a document that named them in another
order would close a circle, and PostgreSQL would end one of the two ("deadlock
detected"): the import, when it was the first to wait, and nothing of it
would be stored. Run as users run it: ``import`` in a process of its own,
while a worker's copy job runs.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import peewee as pw
import psycopg2
import pytest

from catalog.database import bind, migrate, open_database
from catalog.models import AccessLog, FileStorage, ReferencedPath, StorageLocation
from catalog.queries import locked_item
from catalog.streaming import import_items
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from tests.processes import Cli, wait_for
from workers.operations import CopyReport, copy_items

pytestmark = pytest.mark.postgres

CREATED = datetime(2026, 1, 1)
PREFERENCE = ("local", "backup")


@pytest.fixture
def catalog(fresh_postgres_url: str) -> Iterator[pw.Database]:
    database = open_database(fresh_postgres_url)
    database.connect()
    migrate(database)
    bind(database)
    yield database
    database.close()


def lock_waits(url: str) -> int:
    """Sessions of the catalog waiting for a lock another session holds."""
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        (count,) = cursor.fetchone()
        return int(count)


def test_an_import_naming_items_out_of_id_order_is_no_deadlocks_victim(
    catalog: pw.Database, fresh_postgres_url: str, tmp_path: Path
) -> None:
    folders = {name: LocalConnector(name, path=tmp_path / name) for name in PREFERENCE}
    # Three small items, ids in this order, on local, each with a copy to
    # backup reserved: what a copy job of several small items is for.
    ids, document = [], []
    for key in ("a", "m", "b"):
        data = key.encode() * 10
        hashes = hash_stream(io.BytesIO(data))
        item = FileStorage.create(key=key, created=CREATED, data_slug="old")
        ReferencedPath.create(
            file_storage=item, path="f", size=len(data), md5=hashes.md5, crc32c=hashes.crc32c
        )
        for name, status in (("local", "OK"), ("backup", "PR")):
            StorageLocation.create(
                file_storage=item, connector_name=name, url=key, status=status, last_update=CREATED
            )
        folders["local"].write(f"{key}/f", io.BytesIO(data))
        ids.append(item.id)
        document.append(
            {
                "key": key,
                "data_slug": "new",
                "created": "2026-01-01T00:00:00Z",
                "locations": [{"connector": "local", "url": key, "status": "OK"}],
                "files": [{"path": "f", "size": len(data), "md5": hashes.md5}],
            }
        )
    a, m, b = ids
    # The document names b before a (and leaves m out).
    (tmp_path / "items.json").write_text(json.dumps({"items": [document[2], document[0]]}))
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "database": fresh_postgres_url,
                "connectors": {
                    name: {"connector": "local", "config": {"path": str(tmp_path / name)}}
                    for name in PREFERENCE
                },
            }
        )
    )

    # Another job of item m holds it (a verification recording, say).
    holding, release = threading.Event(), threading.Event()

    def hold_m() -> None:
        with locked_item(m):
            holding.set()
            release.wait(30)
        catalog.close()

    holder = threading.Thread(target=hold_m)
    holder.start()
    assert holding.wait(30)
    copied: list[CopyReport | BaseException] = []

    def copy_job() -> None:
        try:
            copied.append(
                copy_items(
                    "backup",
                    [(a, ["f"]), (m, ["f"]), (b, ["f"])],
                    connectors=folders.__getitem__,
                    preference=PREFERENCE,
                )
            )
        except BaseException as exc:  # reported by the assertion below
            copied.append(exc)
        finally:
            catalog.close()

    job = threading.Thread(target=copy_job)
    try:
        job.start()
        wait_for(lambda: lock_waits(fresh_postgres_url) >= 1, "the copy job to wait for item m")
        importing = subprocess.Popen(
            Cli(config).command("import", "items.json", "--json"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=Cli(config).env,
        )
        wait_for(
            lambda: importing.poll() is not None or lock_waits(fresh_postgres_url) >= 2,
            "the import to end or to wait for item a",
        )
    finally:
        release.set()
        holder.join(30)
    out, err = importing.communicate(timeout=60)
    job.join(60)
    assert importing.returncode == 0, err
    assert json.loads(out)["updated"] == 2
    assert len(copied) == 1 and isinstance(copied[0], CopyReport), copied
    assert copied[0].copied == 3
    catalog.connect(reuse_if_open=True)
    assert {item.key: item.data_slug for item in FileStorage.select()} == {
        "a": "new",
        "m": "old",
        "b": "new",
    }
    backup = StorageLocation.select().where(StorageLocation.connector_name == "backup")
    assert {location.status for location in backup} == {"OK"}
    assert not AccessLog.select().where(AccessLog.finished.is_null()).exists()


def test_an_import_that_changes_a_location_writes_only_what_it_changes(
    catalog: pw.Database,
) -> None:
    """A re-import that changes a copy's status leaves its other columns to other writers.

    A worker records an access (``last_update``) without the item's lock. An
    import that read the location before, then wrote every column back,
    would move that access back (a delete due early). A column trigger shows
    which columns an ``UPDATE`` sets, whatever their values.
    """
    item = {
        "key": "one",
        "created": "2026-01-01T00:00:00Z",
        "locations": [
            {"connector": "local", "url": "one", "status": "OK"},
            {"connector": "backup", "url": "one", "status": "UP"},
        ],
        "files": [{"path": "a.txt", "size": 1}],
    }
    import_items([("items.0", item)], connectors={"local", "backup"}, database=catalog)
    catalog.execute_sql("CREATE TABLE touched (what text)")
    catalog.execute_sql(
        "CREATE FUNCTION note_touch() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN INSERT INTO touched VALUES (TG_ARGV[0]); RETURN NEW; END $$"
    )
    for column in ("last_update", "last_verified", "url", "file_storage_id"):
        catalog.execute_sql(
            f"CREATE TRIGGER touch_{column} BEFORE UPDATE OF {column} ON storage_location"
            f" FOR EACH ROW EXECUTE FUNCTION note_touch('{column}')"
        )
    catalog.execute_sql(
        "CREATE TRIGGER touch_status BEFORE UPDATE OF status ON storage_location"
        " FOR EACH ROW EXECUTE FUNCTION note_touch('status')"
    )
    item["locations"][1]["status"] = "OK"
    counts = import_items([("items.0", item)], connectors={"local", "backup"}, database=catalog)
    assert counts.updated == 1
    touched = [what for (what,) in catalog.execute_sql("SELECT what FROM touched").fetchall()]
    assert touched == ["status"]
    assert StorageLocation.get(StorageLocation.connector_name == "backup").status == "OK"
