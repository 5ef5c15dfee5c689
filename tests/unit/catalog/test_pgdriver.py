"""peewee loads without psycopg2, and gets from ``use_psycopg2`` what its own import would bind.

Each case runs in a process of its own: what is imported first is the point.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Prints, as JSON, what peewee holds of psycopg2: its module-level names
#: bound to psycopg2's modules, classes or functions, the driver constants of
#: its adapter, and whether psycopg2 adapts UUIDs (peewee registers that).
DESCRIBE = """
import json, sys, types, uuid
import peewee

def origin(value):
    if isinstance(value, types.ModuleType):
        return value.__name__
    module = getattr(value, "__module__", None) or ""
    return f"{module}.{getattr(value, '__qualname__', type(value).__name__)}"

names = {
    name: origin(value)
    for name, value in vars(peewee).items()
    if (origin(value) or "").startswith("psycopg2")
}
adapter = {
    name: getattr(peewee.Psycopg2Adapter, name)
    for name in ("txn_idle", "txn_inerror", "txn_unknown")
}
extensions = sys.modules.get("psycopg2.extensions")
uuids = extensions is not None and (uuid.UUID, extensions.ISQLQuote) in extensions.adapters
print(json.dumps({"names": names, "adapter": adapter, "uuid": uuids}))
"""


def run(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_catalog_loads_peewee_without_the_driver() -> None:
    seen = run(
        "import json, sys\n"
        "import catalog.models, peewee\n"
        "print(json.dumps({'loaded': 'psycopg2' in sys.modules, 'bound': peewee.psycopg2}))"
    )
    assert seen == {"loaded": False, "bound": None}


def test_the_driver_given_later_is_what_peewee_takes_at_import() -> None:
    at_import = run("import psycopg2\nimport catalog\n" + DESCRIBE)
    later = run(
        "import catalog\nfrom catalog.pgdriver import use_psycopg2\nuse_psycopg2()\n" + DESCRIBE
    )
    assert at_import["names"], "peewee bound nothing of psycopg2: the probe is blind"
    assert at_import["uuid"] is True
    assert later == at_import


def test_without_the_driver_peewee_binds_none_of_it() -> None:
    """The probe's other side: deferred and not yet given, nothing of psycopg2 is bound."""
    deferred = run("import catalog\n" + DESCRIBE)
    assert deferred["names"] == {}
    assert set(deferred["adapter"].values()) == {None}


def test_the_driver_is_not_held_back_after_peewee() -> None:
    seen = run(
        "import json\nimport catalog, psycopg2\n"
        "print(json.dumps({'version': psycopg2.__version__}))"
    )
    assert seen["version"]


@pytest.mark.postgres
def test_a_postgresql_catalog_works_with_the_driver_given_later(postgres_url: str) -> None:
    """Opened, written to, read, and its connection judged by the constants given later."""
    seen = run(
        "import json, sys\n"
        "from catalog.database import migrate, open_database, bind\n"
        "from catalog.models import FileStorage\n"
        f"database = open_database({postgres_url!r})\n"
        "bind(database)\n"
        "migrate(database)\n"
        "with database.atomic():\n"
        "    FileStorage.delete().where(FileStorage.key == 'pgdriver').execute()\n"
        "    FileStorage.create(key='pgdriver', data_slug='s', process_type='data:')\n"
        "count = FileStorage.select().where(FileStorage.key == 'pgdriver').count()\n"
        "usable = database.is_connection_usable()\n"
        "try:\n"
        "    database.execute_sql('SELECT no_such_column FROM file_storage')\n"
        "except Exception:\n"
        "    pass\n"
        "FileStorage.delete().where(FileStorage.key == 'pgdriver').execute()\n"
        "database.close()\n"
        "print(json.dumps({'count': count, 'usable': usable, 'after_error': True}))"
    )
    assert seen == {"count": 1, "usable": True, "after_error": True}
