"""Statements written out in SQL, for the catalog's hot paths, on SQLite and PostgreSQL alike.

peewee builds each statement anew: 0.3 ms for a simple select, 1.5 ms for
a ten-row insert, about 50 microseconds a row for a long one, where sending
a written-out statement costs a few microseconds. The copy jobs
(``catalog.copying``) and the scan's reservations (``catalog.queries``)
send theirs through here: ``?`` placeholders, turned into ``%s`` for
PostgreSQL; everything else in the catalog stays peewee.

On PostgreSQL a long insert goes as one array a column (``unnest``), not
as a row of placeholders a value: psycopg2 quotes every parameter in
Python, and the server parses every one. For the 125 files a copy job
records (500 values) that took 0.53 ms in the worker and 3.1 ms in the
server; as four arrays, 0.11 ms and 2.4 ms (measured here).
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import peewee as pw

import catalog.database  # noqa: F401  (its SQLite datetime adapter)
from catalog.models import BaseModel, FileStorage

#: Rows per ``INSERT`` (SQLite takes at most 32,766 parameters a statement).
DEFAULT_INSERT_ROWS = 500


def is_sqlite(database: pw.Database) -> bool:
    """Whether ``database`` (or the one a proxy stands for) is SQLite."""
    target = database.obj if isinstance(database, pw.DatabaseProxy) else database
    return isinstance(target, pw.SqliteDatabase)


def database() -> pw.Database:
    """The catalog's database (the one the models are bound to)."""
    return FileStorage._meta.database


#: A statement (``?`` placeholders) and its parameters.
Statement = tuple[str, Sequence[Any]]


def run(sql: str, params: Sequence[Any]) -> Any:
    """Execute ``sql`` (``?`` placeholders) on the catalog; the cursor."""
    catalog = database()
    if not is_sqlite(catalog):
        sql = _for_postgres(sql)
    # On SQLite a datetime goes as its text (``catalog.database``'s adapter).
    return catalog.execute_sql(sql, params)


#: Rows fetched per round trip when streaming a long result.
DEFAULT_FETCH_ROWS = 20_000


def stream(
    catalog: pw.Database, sql: str, params: Sequence[Any], *, name: str = "resolwe_storage_rows"
) -> Iterator[tuple[Any, ...]]:
    """The rows of ``sql`` (the database's own placeholders), in batches: memory stays flat.

    Runs inside the caller's transaction. On PostgreSQL through a server-side
    cursor (``name``), so the server does not send the whole result at once;
    peewee runs psycopg2 in autocommit mode with explicit transactions, so
    the cursor is declared in SQL rather than by name.
    """
    cursor = catalog.cursor()
    if is_sqlite(catalog):
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(DEFAULT_FETCH_ROWS):
            yield from rows
        return
    cursor.execute(f"DECLARE {name} NO SCROLL CURSOR FOR {sql}", params)
    try:
        while True:
            cursor.execute(f"FETCH FORWARD {DEFAULT_FETCH_ROWS} FROM {name}")
            rows = cursor.fetchall()
            if not rows:
                break
            yield from rows
    finally:
        # A cursor goes with its transaction: one left unread by a caller whose
        # block failed (rolled back, or aborted by the error) is gone, or
        # cannot be closed; closing it then raised from a generator's cleanup.
        if catalog.in_transaction():
            with contextlib.suppress(pw.DatabaseError), pw.__exception_wrapper__:
                cursor.execute(f"CLOSE {name}")


def run_all(statements: Sequence[Statement]) -> Any:
    """Execute ``statements`` in order; the cursor of the last (the others' rows are dropped).

    On PostgreSQL they go in one round trip, as one query string: each still
    takes its own snapshot, sees what those before it did, and waits for the
    locks they took (``FOR UPDATE``), as if sent one by one. On SQLite
    (in-process, no round trips) they are run one by one.
    """
    if not statements:
        raise ValueError("run_all: no statements")
    catalog = database()
    if is_sqlite(catalog) or len(statements) == 1:
        for sql, params in statements:
            cursor = run(sql, params)
        return cursor
    return catalog.execute_sql(
        ";\n".join(_for_postgres(sql) for sql, _ in statements),
        [value for _, params in statements for value in params],
    )


def insert(
    into: str,
    rows: Sequence[tuple[Any, ...]],
    *,
    on_conflict: str | None = None,
    returning: str | None = None,
    before: Sequence[Statement] = (),
) -> list[tuple[Any, ...]]:
    """``INSERT INTO {into}`` the ``rows`` (``insert_statements``); after ``before``, if any.

    ``before`` go in the round trip of the first insert. Returns the
    ``returning`` columns of the rows inserted, in no particular order (empty
    without).
    """
    statements = insert_statements(into, rows, on_conflict=on_conflict, returning=returning)
    if not statements:
        if before:
            run_all(before)
        return []
    returned: list[tuple[Any, ...]] = []
    for number, statement in enumerate(statements):
        cursor = run_all([*before, statement] if number == 0 else [statement])
        if returning:
            returned += [tuple(found) for found in cursor.fetchall()]
    return returned


def copy_into(into: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """``INSERT INTO {into}`` the ``rows``; on PostgreSQL with ``COPY ... FROM STDIN``.

    For long inserts whose ids are not needed back. A row a value ``COPY``'s
    text cannot carry (a datetime with a zone, a bool) sends the whole
    insert as ``insert`` does.
    """
    if not rows:
        return
    catalog = database()
    text = None if is_sqlite(catalog) else _copy_text(rows)
    if text is None:
        insert(into, rows)
        return
    cursor = catalog.cursor()
    with pw.__exception_wrapper__:
        cursor.copy_expert(f"COPY {into} FROM STDIN", io.StringIO(text))


#: What a value of ``COPY``'s text format needs escaped.
_COPY_ESCAPE = re.compile(r"[\\\t\n\r]")


def _copy_text(rows: Sequence[tuple[Any, ...]]) -> str | None:
    """``rows`` as ``COPY``'s text format, a column at a time; None if a value cannot be."""
    columns = []
    for column in zip(*rows, strict=True):
        kinds = set(map(type, column))
        if kinds == {int}:
            columns.append(list(map(str, column)))
        elif kinds == {str} and not _COPY_ESCAPE.search("".join(column)):
            columns.append(list(column))
        elif kinds <= _ARRAY_KINDS:
            elements = {value: _copy_element(value) for value in set(column)}
            if None in elements.values():
                return None
            columns.append([elements[value] for value in column])  # type: ignore[misc]
        else:
            return None
    return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"


def _copy_element(value: Any) -> str | None:
    """``value`` (of ``_ARRAY_KINDS``) in ``COPY``'s text format; None if it cannot be."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    if isinstance(value, datetime):
        return value.isoformat(" ") if value.tzinfo is None else None
    return str(value)


def one_of(column: str, values: Sequence[str]) -> Statement:
    """A condition that ``column`` (text) is one of ``values``, and its parameters.

    ``column IN (?, ...)`` on SQLite; on PostgreSQL ``column = ANY(?)`` with
    one array literal, which the server reads at once where it would parse
    (and psycopg2 quote) a placeholder a value: 27 ms for 500 keys against
    a few.
    """
    if is_sqlite(database()):
        return f"{column} IN ({', '.join('?' * len(values))})", list(values)
    return f"{column} = ANY(?::text[])", [text_array(values)]


def text_array(values: Sequence[str]) -> str:
    """``values`` as one PostgreSQL array literal (a parameter cast ``?::text[]``)."""
    return "{" + ",".join(map(_element, values)) + "}"  # type: ignore[arg-type]


def insert_statements(
    into: str,
    rows: Sequence[tuple[Any, ...]],
    *,
    on_conflict: str | None = None,
    returning: str | None = None,
) -> list[Statement]:
    """The statements that insert ``rows`` into ``into`` (``table (column, ...)``).

    ``on_conflict``: what a row that is there already does (``DO NOTHING``,
    or ``(columns) DO UPDATE SET ...``, SQLite and PostgreSQL alike).

    On SQLite (and for values an array cannot carry), ``VALUES``, one
    statement per ``DEFAULT_INSERT_ROWS``; on PostgreSQL, one statement, an
    array a column (``_arrays``). None at all for no rows.
    """
    if not rows:
        return []
    width = into.count(",") + 1
    if set(map(len, rows)) != {width}:
        raise ValueError(
            f"insert into {into.partition(' ')[0]}: every row must have {width} values"
        )
    tail = f" ON CONFLICT {on_conflict}" if on_conflict else ""
    if returning:
        tail += f" RETURNING {returning}"
    types = None if is_sqlite(database()) else _column_types(into)
    arrays = _arrays(rows, types) if types is not None else None
    if types is not None and arrays is not None:
        casts = ", ".join(f"?::{kind}[]" for kind in types)
        return [(f"INSERT INTO {into} SELECT * FROM unnest({casts}){tail}", arrays)]
    statements: list[Statement] = []
    for start in range(0, len(rows), DEFAULT_INSERT_ROWS):
        chunk = rows[start : start + DEFAULT_INSERT_ROWS]
        row = "(" + ", ".join("?" * width) + ")"
        statements.append(
            (
                f"INSERT INTO {into} VALUES {', '.join([row] * len(chunk))}{tail}",
                [value for values in chunk for value in values],
            )
        )
    return statements


#: PostgreSQL's type of an array element, by peewee's field type.
_POSTGRES_TYPES = {
    "AUTO": "integer",
    "INT": "integer",
    "BIGAUTO": "bigint",
    "BIGINT": "bigint",
    "TEXT": "text",
    "VARCHAR": "text",
    "DATETIME": "timestamp",
}


@functools.cache
def _column_types(into: str) -> tuple[str, ...] | None:
    """The PostgreSQL types of ``into``'s columns (``table (column, ...)``), from the models.

    None when a column is not a model's or of a type not in ``_POSTGRES_TYPES``.
    """
    table, _, columns = into.partition("(")
    models = {model._meta.table_name: model for model in BaseModel.__subclasses__()}
    model = models.get(table.strip())
    if model is None:
        return None
    types = []
    for column in columns.rstrip(") ").split(","):
        field = model._meta.columns.get(column.strip())
        kind = _POSTGRES_TYPES.get(field.field_type) if field is not None else None
        if kind is None:
            return None
        types.append(kind)
    return tuple(types)


#: What an element of an array literal needs escaped when it is quoted.
_NEEDS_ESCAPE = re.compile(r'["\\]')

#: What an array literal of ours carries (no two of them hold equal values).
_ARRAY_KINDS = frozenset({int, str, datetime, type(None)})


def _arrays(rows: Sequence[tuple[Any, ...]], types: tuple[str, ...]) -> list[str] | None:
    """Each column of ``rows`` as a PostgreSQL array literal; None if a value cannot be one.

    Numbers (not booleans), text, naive datetimes and None (``NULL``) can.
    """
    literals = []
    for column in zip(*rows, strict=True):
        kinds = set(map(type, column))
        if kinds == {int}:
            literals.append("{" + ",".join(map(str, column)) + "}")
            continue
        if kinds == {str} and not _NEEDS_ESCAPE.search("".join(column)):
            # Text with nothing to escape (paths, keys, hashes): quoted as a
            # whole, not value by value (value by value it was a third of an
            # import's writing thread on PostgreSQL).
            literals.append('{"' + '","'.join(column) + '"}')
            continue
        if not kinds <= _ARRAY_KINDS:
            return None
        # Each distinct value written once: a job's rows share their times and kinds.
        elements = {value: _element(value) for value in set(column)}
        if None in elements.values():
            return None
        literals.append("{" + ",".join([elements[value] for value in column]) + "}")  # type: ignore[misc]
    return literals


def _element(value: Any) -> str | None:
    """``value`` (of ``_ARRAY_KINDS``) as an element of an array literal; None if it cannot be."""
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, datetime):
        return f'"{value.isoformat(" ")}"' if value.tzinfo is None else None
    return str(value)


_POSTGRES_SQL: dict[str, str] = {}


def _for_postgres(sql: str) -> str:
    """``sql`` with psycopg2's placeholders (and its ``%`` signs doubled); cached."""
    found = _POSTGRES_SQL.get(sql)
    if found is None:
        found = _POSTGRES_SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return found
