"""Statements written out in SQL, for the catalog's hot paths, on SQLite and PostgreSQL alike.

peewee builds each statement anew: 0.3 ms for a simple select, 1.5 ms for
a ten-row insert, about 50 microseconds a row for a long one, where sending
a written-out statement costs a few microseconds. The copy jobs
(``catalog.copying``) and the scan's reservations (``catalog.queries``)
send theirs through here: ``?`` placeholders, turned into ``%s`` for
PostgreSQL; everything else in the catalog stays peewee.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import peewee as pw

from catalog.models import FileStorage

#: Rows per ``INSERT`` (SQLite takes at most 32,766 parameters a statement).
DEFAULT_INSERT_ROWS = 500


def is_sqlite(database: pw.Database) -> bool:
    """Whether ``database`` (or the one a proxy stands for) is SQLite."""
    target = database.obj if isinstance(database, pw.DatabaseProxy) else database
    return isinstance(target, pw.SqliteDatabase)


def database() -> pw.Database:
    """The catalog's database (the one the models are bound to)."""
    return FileStorage._meta.database


def run(sql: str, params: Sequence[Any]) -> Any:
    """Execute ``sql`` (``?`` placeholders) on the catalog; the cursor."""
    catalog = database()
    if is_sqlite(catalog):
        # What peewee stores for a datetime in SQLite (sqlite3's own adapter
        # is deprecated): its text, which peewee reads back.
        params = [str(value) if isinstance(value, datetime) else value for value in params]
    else:
        sql = _for_postgres(sql)
    return catalog.execute_sql(sql, params)


def insert(
    into: str,
    rows: Sequence[tuple[Any, ...]],
    *,
    ignore_conflicts: bool = False,
    returning: str | None = None,
) -> list[tuple[Any, ...]]:
    """``INSERT INTO {into} VALUES`` the ``rows``, one statement per ``DEFAULT_INSERT_ROWS``.

    Returns the ``returning`` columns of the rows inserted (empty without).
    """
    returned: list[tuple[Any, ...]] = []
    for start in range(0, len(rows), DEFAULT_INSERT_ROWS):
        chunk = rows[start : start + DEFAULT_INSERT_ROWS]
        row = "(" + ", ".join("?" * len(chunk[0])) + ")"
        tail = " ON CONFLICT DO NOTHING" if ignore_conflicts else ""
        if returning:
            tail += f" RETURNING {returning}"
        cursor = run(
            f"INSERT INTO {into} VALUES {', '.join([row] * len(chunk))}{tail}",
            [value for values in chunk for value in values],
        )
        if returning:
            returned += [tuple(found) for found in cursor.fetchall()]
    return returned


def select(query: pw.SelectQuery) -> list[tuple[Any, ...]]:
    """The rows of a peewee ``query`` as plain tuples, without peewee's per-row work.

    For selects of columns that need no conversion (numbers, text): peewee
    spends several microseconds a row making them, ten times the fetch.
    """
    sql, params = query.sql()
    return database().execute_sql(sql, params).fetchall()  # type: ignore[no-any-return]


_POSTGRES_SQL: dict[str, str] = {}


def _for_postgres(sql: str) -> str:
    """``sql`` with psycopg2's placeholders (and its ``%`` signs doubled); cached."""
    found = _POSTGRES_SQL.get(sql)
    if found is None:
        found = _POSTGRES_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return found
