"""The catalog's written-out inserts: the same rows land on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import peewee as pw
import pytest

from catalog import sql
from catalog.models import Action, FileStorage

#: Text an array literal must quote: quotes, backslashes, braces, commas, NULL, blanks.
AWKWARD = ['he said "hi"', "back\\slash", "{a,b}", "NULL", "", " padded ", "žlica ✓", "'"]

HISTORY = (
    "action (started, finished, actor, action, item_key, file_storage_id, source,"
    " target, path, result, bytes, duration_ms)"
)


def history(text: str, item: int | None, when: datetime | None) -> tuple[object, ...]:
    started = datetime(2026, 1, 2, 3, 4, 5, 678901)
    return (started, when, "test", "copy", text, item, None, "dst", text, "ok", 2**40, 7)


#: The same without quotes and backslashes: a column of these goes quoted as a whole.
NOTHING_TO_ESCAPE = [text for text in AWKWARD if '"' not in text and "\\" not in text]
#: Text ``COPY``'s format must escape too: tabs, line ends, backslashes, what looks like NULL.
COPY_AWKWARD = [*AWKWARD, "tab\there", "line\nend", "cr\rlf", "\\N", "\\", "end\\"]


@pytest.mark.parametrize("write", [sql.insert, sql.copy_into], ids=["insert", "copy_into"])
@pytest.mark.parametrize("texts", [COPY_AWKWARD, NOTHING_TO_ESCAPE], ids=["escaped", "as-a-whole"])
def test_insert_keeps_every_value(
    catalog_db: pw.Database, texts: list[str], write: Callable[..., object]
) -> None:
    item = FileStorage.create(key="k")
    rows = [
        history(text, item.id if number % 2 else None, datetime(2026, 5, 6) if number else None)
        for number, text in enumerate(texts)
    ]
    assert not write(HISTORY, rows)
    got = sorted(
        (a.item_key, a.path, a.file_storage_id, a.finished, a.started, a.bytes, a.source)
        for a in Action.select()
    )
    assert got == sorted(
        (text, text, item, finished, started, size, None)
        for started, finished, _, _, text, item, _, _, _, _, size, _ in rows
    )


def test_insert_returning_and_conflicts(catalog_db: pw.Database) -> None:
    first = FileStorage.create(key="a")
    into = "storage_location (file_storage_id, connector_name, url, status, last_update)"
    now = datetime(2026, 1, 1)
    rows = [(first.id, name, f"{name}/url", "PR", now) for name in ("one", "two")]
    assert sorted(sql.insert(into, rows, returning="connector_name")) == [("one",), ("two",)]
    again = [*rows, (first.id, "three", "three/url", "PR", now)]
    returned = sql.insert(into, again, on_conflict="DO NOTHING", returning="connector_name")
    assert returned == [("three",)]


def test_insert_of_many_rows_in_one_call(catalog_db: pw.Database) -> None:
    rows = [
        history(f"file {number}", None, None) for number in range(sql.DEFAULT_INSERT_ROWS * 2 + 3)
    ]
    sql.insert(HISTORY, rows)
    assert Action.select().count() == len(rows)


def test_values_an_array_cannot_carry_go_as_parameters(catalog_db: pw.Database) -> None:
    # A float is no array element of ours: the row goes through VALUES.
    row = list(history("float", None, None))
    row[10] = 3.0
    sql.insert(HISTORY, [tuple(row)])
    assert Action.get().bytes == 3


def test_a_row_of_the_wrong_length_is_refused(catalog_db: pw.Database) -> None:
    rows = [history("whole", None, None), history("short", None, None)[:-1]]
    with pytest.raises(ValueError, match="action: every row must have 12 values"):
        sql.insert(HISTORY, rows)
    assert Action.select().count() == 0


def test_statements_run_together_in_order_and_the_last_gives_the_rows(
    catalog_db: pw.Database,
) -> None:
    [(statement, params)] = sql.insert_statements(HISTORY, [history("first", None, None)])
    cursor = sql.run_all(
        [
            (statement, params),
            ("UPDATE action SET path = ? WHERE item_key = ?", ["changed", "first"]),
            ("SELECT item_key, path FROM action", []),
        ]
    )
    assert cursor.fetchall() == [("first", "changed")]
    with pytest.raises(ValueError, match="no statements"):
        sql.run_all([])


def test_an_insert_with_statements_before_it(catalog_db: pw.Database) -> None:
    before = [("DELETE FROM action WHERE item_key = ?", ["old"])]
    sql.insert(HISTORY, [history("old", None, None)])
    sql.insert(HISTORY, [history("new", None, None)], before=before)
    assert [a.item_key for a in Action.select()] == ["new"]
    sql.insert(HISTORY, [], before=[("DELETE FROM action", [])])
    assert Action.select().count() == 0


#: Text besides: tabs, newlines, carriage returns, backslash sequences.
MORE_AWKWARD = [*AWKWARD, "tab\there", "two\nlines", "cr\rlf", "\\N", "\\.", "\\t literal"]


def test_one_of_finds_exactly_the_values_named(catalog_db: pw.Database) -> None:
    for text in MORE_AWKWARD:
        FileStorage.create(key=f"key {text}")
    wanted = [f"key {text}" for text in MORE_AWKWARD[::2]] + ["key missing"]
    condition, params = sql.one_of("key", wanted)
    found = {key for (key,) in sql.run(f"SELECT key FROM file_storage WHERE {condition}", params)}
    assert found == {f"key {text}" for text in MORE_AWKWARD[::2]}
