"""peewee without its PostgreSQL driver until a PostgreSQL catalog is opened.

peewee imports psycopg2 when it is itself imported, whatever the database:
loading libpq and the TLS libraries it links cost 30-40 ms here, a fifth of
``status`` and of every other command on the embedded default (SQLite),
which never speaks to PostgreSQL (``benchmarks/bench_startup.py``).
So the ``catalog`` package, imported before peewee by every command, has
peewee's import go without psycopg2 (``hold_back``), and ``use_psycopg2``
loads the driver and hands peewee what its own import would have bound,
before a PostgreSQL database is made.
This reaches into peewee's module (the names its import binds, the driver
constants of its adapter class): kept here alone, checked against the
installed peewee by ``tests/unit/catalog/test_pgdriver.py`` and used by
every PostgreSQL test. Where psycopg2 was loaded first, by anyone, peewee
takes it at import as usual and nothing here is needed.
"""

from __future__ import annotations

import sys
from typing import Any

#: The modules held back while peewee is imported.
_DEFERRED = "psycopg2"


class _HoldBack:
    """A finder that tells peewee's import, and it alone, that psycopg2 is not there.

    peewee is importing and has not yet bound the name ``psycopg2`` (its
    ``try: import psycopg2``): nothing else asks then. Once bound (None, or
    the module where it was loaded before), everyone finds it as usual.
    """

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == _DEFERRED or name.startswith(f"{_DEFERRED}."):
            peewee = sys.modules.get("peewee")
            if peewee is not None and not hasattr(peewee, _DEFERRED):
                raise ModuleNotFoundError(f"{name} is loaded when a PostgreSQL catalog is opened")


def hold_back() -> None:
    """From now on, peewee's import goes without psycopg2 (unless loaded before); idempotent."""
    if not any(isinstance(finder, _HoldBack) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HoldBack())


def use_psycopg2() -> None:
    """Load psycopg2 and give peewee what its import binds when psycopg2 is there.

    Those are: the module, its ``extensions``, the UUID adapter (registered)
    and the JSON wrapper; and the transaction states of
    ``Psycopg2Adapter``, set in its class body. Idempotent; a no-op where
    peewee has the driver already.
    """
    import peewee

    if peewee.psycopg2 is not None:
        return
    import psycopg2
    from psycopg2 import extensions
    from psycopg2.extras import Json, register_uuid

    register_uuid()
    adapter = peewee.Psycopg2Adapter
    adapter.txn_idle = extensions.TRANSACTION_STATUS_IDLE
    adapter.txn_inerror = extensions.TRANSACTION_STATUS_INERROR
    adapter.txn_unknown = extensions.TRANSACTION_STATUS_UNKNOWN
    peewee.pg_extensions = extensions
    peewee.pg_register_uuid = register_uuid
    peewee.Json_pg2 = Json
    peewee.psycopg2 = psycopg2
