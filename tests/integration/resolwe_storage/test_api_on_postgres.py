"""The Python API for other services on a PostgreSQL catalog whose connection may be cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from catalog.database import open_database
from catalog.models import AccessLog
from resolwe_storage.api import StorageService
from resolwe_storage.config import load_config
from resolwe_storage.wiring import open_catalog
from workers.broker import make_broker

pytestmark = pytest.mark.postgres

ITEM = {
    "key": "data-1",
    "created": "2026-01-01T00:00:00Z",
    "locations": [{"connector": "local", "url": "1", "status": "OK"}],
    "files": [{"path": "a.txt", "size": 3}],
}


def test_a_read_lock_is_closed_when_the_catalog_connection_was_cut_during_the_read(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    """A service's lock never expires: one whose close met a cut connection locks the copy
    forever (it is never deleted again). A server restarted or a connection ended by an
    operator (``pg_terminate_backend``) during a long read is such a blip.
    """
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "database": fresh_postgres_url,
                "connectors": {
                    "local": {"connector": "local", "config": {"path": str(tmp_path / "local")}}
                },
            }
        )
    )
    config = load_config(path)
    service = StorageService(config, open_catalog(config.database), make_broker(None))
    service.register(ITEM)
    admin = open_database(fresh_postgres_url)
    admin.connect()
    try:
        with service.reading("data-1") as location:
            assert location.connector_name == "local"
            (pid,) = service.database.execute_sql("SELECT pg_backend_pid()").fetchone()
            admin.execute_sql("SELECT pg_terminate_backend(%s)", (pid,))
        (left_open,) = admin.execute_sql(
            f"SELECT count(*) FROM {AccessLog._meta.table_name} WHERE finished IS NULL"
        ).fetchone()
        assert left_open == 0
    finally:
        admin.close()
        service.database.close()
