"""Importing a stream: the reader of documents and JSON Lines, and the batched writer.

The writer must leave the catalog exactly as the item-by-item import does
(``catalog.importing.import_one``), whichever way each item takes: bulk
statements for new plain items, a bulk comparison for unchanged ones, the
item-by-item rules for the rest.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import peewee as pw
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from catalog import sql, streaming
from catalog.errors import ImportDocumentError, InvalidPathError
from catalog.importing import IMPORT_LOCK_REASON, import_one
from catalog.models import (
    AccessLog,
    Action,
    FileStorage,
    LocationFile,
    ReferencedPath,
    StorageLocation,
)
from catalog.paths import check_relative_path
from catalog.queries import writing
from catalog.streaming import import_items, read_items, sniff_format

CONNECTORS = {"local", "S3"}
MD5 = "0123456789abcdef0123456789abcdef"


def variety(prefix: str) -> list[dict[str, Any]]:
    """Items of every kind an import meets, keys and urls starting with ``prefix``."""
    return [
        {
            "key": f"{prefix}plain",
            "data_slug": "reads",
            "process_type": "data:reads:",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": f"{prefix}plain", "status": "OK"}],
            "files": [
                {"path": "a.txt", "size": 3, "md5": MD5, "crc32c": "364b3fb7"},
                {"path": "dir/", "size": 0},
            ],
        },
        {
            "key": f"{prefix}two-copies-locked",
            "status": "ER",
            "created": "2026-01-02T03:04:05+02:00",
            "locations": [
                {
                    "connector": "local",
                    "url": f"{prefix}two",
                    "last_update": "2026-01-03T00:00:00",
                    "open_access_logs": 2,
                },
                {
                    "connector": "S3",
                    "url": f"{prefix}two",
                    "status": "UP",
                    "last_verified": "2026-01-04T00:00:00Z",
                },
            ],
            "files": [{"path": "b.bin"}],
        },
        {
            # Normalized by the models: upper-case hashes, a quoted etag.
            "key": f"{prefix}normalized",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "local", "url": f"{prefix}norm"}],
            "files": [
                {"path": "c", "size": 1, "md5": MD5.upper(), "awss3etag": f'"{MD5}-2"'},
                {"path": "e", "md5": ""},
            ],
        },
        {
            "key": f"{prefix}damaged",
            "created": "2026-01-01T00:00:00Z",
            "locations": [
                {
                    "connector": "local",
                    "url": f"{prefix}dm",
                    "status": "DM",
                    "damaged": {"d": "gone"},
                },
                {"connector": "S3", "url": f"{prefix}dm"},
            ],
            "files": [{"path": "d", "size": 2}],
        },
        {
            "key": f"{prefix}removed",
            "status": "removed",
            "created": "2026-01-01T00:00:00Z",
            "locations": [{"connector": "S3", "url": f"{prefix}removed"}],
            "files": [{"path": "r", "size": 5}],
        },
        {"key": f"{prefix}bare", "created": "2026-02-01T00:00:00Z"},
    ]


def story(prefix: str) -> dict[str, Any]:
    """What the catalog holds of the items of ``prefix``, without ids, times of writing, prefix."""
    found = {}
    for item in FileStorage.select().where(FileStorage.key.startswith(prefix)):
        locations = []
        for loc in StorageLocation.select().where(StorageLocation.file_storage == item):
            locks = (
                AccessLog.select()
                .where(
                    (AccessLog.storage_location == loc)
                    & AccessLog.finished.is_null()
                    & (AccessLog.reason == IMPORT_LOCK_REASON)
                )
                .count()
            )
            bad = sorted(
                (row.referenced_path.path, row.problem)
                for row in LocationFile.select().where(LocationFile.storage_location == loc)
            )
            locations.append(
                (
                    loc.connector_name,
                    loc.url.removeprefix(prefix),
                    loc.status,
                    loc.last_update,
                    loc.last_verified,
                    locks,
                    bad,
                )
            )
        files = sorted(
            (f.path, f.size, f.md5, f.crc32c, f.awss3etag, f.chunk_size)
            for f in ReferencedPath.select().where(ReferencedPath.file_storage == item)
        )
        history = sorted(
            (a.action, a.result) for a in Action.select().where(Action.file_storage == item)
        )
        found[item.key.removeprefix(prefix)] = (
            item.data_slug,
            item.process_type,
            item.status,
            item.created,
            item.removed is not None,
            sorted(locations),
            files,
            history,
        )
    return found


def one_by_one(items: list[dict[str, Any]]) -> None:
    with writing(FileStorage._meta.database):
        for index, raw in enumerate(items):
            import_one(raw, where=f"items.{index}", actor="import", verified_at=None)


def stream_of(items: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    return ((f"items.{index}", raw) for index, raw in enumerate(items))


def test_the_batched_writer_leaves_what_the_item_by_item_import_leaves(
    catalog_db: pw.Database,
) -> None:
    counts = import_items(
        stream_of(variety("bulk-")), connectors=CONNECTORS, database=catalog_db, batch=2
    )
    assert (counts.created, counts.updated, counts.unchanged) == (6, 0, 0)
    one_by_one(variety("each-"))
    assert story("bulk-") == story("each-")
    assert story("bulk-")["two-copies-locked"][2] == "ER"

    # Again, unchanged: nothing written, nothing recorded.
    before = Action.select().count()
    again = import_items(
        stream_of(variety("bulk-")), connectors=CONNECTORS, database=catalog_db, batch=4
    )
    assert (again.created, again.updated, again.unchanged) == (0, 0, 6)
    assert Action.select().count() == before and story("bulk-") == story("each-")


def test_an_item_that_changed_goes_through_every_rule(catalog_db: pw.Database) -> None:
    import_items(stream_of(variety("x-")), connectors=CONNECTORS, database=catalog_db)
    changed = variety("x-")
    changed[0]["files"][0]["size"] = 4  # a new version of a.txt
    changed[0]["locations"].append({"connector": "S3", "url": "x-plain"})
    changed[1]["locations"][0]["open_access_logs"] = 0
    counts = import_items(stream_of(changed), connectors=CONNECTORS, database=catalog_db)
    assert (counts.created, counts.updated, counts.unchanged) == (0, 2, 4)
    one_by_one(variety("y-"))
    reference = variety("y-")
    reference[0]["files"][0]["size"] = 4
    reference[0]["locations"].append({"connector": "S3", "url": "y-plain"})
    reference[1]["locations"][0]["open_access_logs"] = 0
    one_by_one(reference)
    assert story("x-") == story("y-")


def test_several_problems_are_named_and_nothing_is_stored(catalog_db: pw.Database) -> None:
    items = variety("p-")
    items[1]["files"][0]["md5"] = "nope"
    items[3]["locations"][1]["connector"] = "GCS"
    items.append({"key": "p-plain", "created": "2026-01-01T00:00:00Z"})
    with pytest.raises(ImportDocumentError) as raised:
        import_items(stream_of(items), connectors=CONNECTORS, database=catalog_db, batch=1)
    message = str(raised.value)
    assert message.startswith("items.1.files.0.md5: expected 32 hex digits")
    assert "items.3.locations.1.connector: 'GCS' is not a configured connector" in message
    assert message.endswith("items.6.key: appears twice (also items.0)")  # batches apart
    assert FileStorage.select().count() == 0 and Action.select().count() == 0


def test_a_location_of_another_item_is_refused_in_a_batch_and_across_them(
    catalog_db: pw.Database,
) -> None:
    mine = variety("m-")[0]
    import_items(stream_of([mine]), connectors=CONNECTORS, database=catalog_db)
    thief = {**variety("t-")[0], "locations": [{"connector": "local", "url": "m-plain"}]}
    with pytest.raises(ImportDocumentError, match="already belongs to item 'm-plain'"):
        import_items(stream_of([thief]), connectors=CONNECTORS, database=catalog_db)
    twins = [
        variety("u-")[0],
        {**variety("v-")[0], "locations": [{"connector": "local", "url": "u-plain"}]},
    ]
    with pytest.raises(
        ImportDocumentError, match=r"items\.1\.locations\.0: local:u-plain also belongs"
    ):
        import_items(stream_of(twins), connectors=CONNECTORS, database=catalog_db)
    # Beside the item that holds the place, unchanged, in the same batch.
    with pytest.raises(
        ImportDocumentError, match=r"items\.1\.locations\.0: local:m-plain also belongs"
    ):
        import_items(stream_of([mine, thief]), connectors=CONNECTORS, database=catalog_db)
    # An item that changed keeps its places; one the import moves is still checked.
    moved = {
        **mine,
        "locations": [{"connector": "local", "url": "m-plain"}, {"connector": "S3", "url": "x"}],
    }
    elsewhere = {**variety("w-")[0], "locations": [{"connector": "S3", "url": "x"}]}
    import_items(stream_of([elsewhere]), connectors=CONNECTORS, database=catalog_db)
    with pytest.raises(ImportDocumentError, match="S3:x already belongs to item 'w-plain'"):
        import_items(stream_of([moved]), connectors=CONNECTORS, database=catalog_db)
    assert sorted(item.key for item in FileStorage.select()) == ["m-plain", "w-plain"]


def at(key: str, url: str, connector: str = "local", **more: Any) -> dict[str, Any]:
    """An item of one file whose copy on ``connector`` is at ``url``."""
    return {
        "key": key,
        "created": "2026-01-01T00:00:00Z",
        "locations": [{"connector": connector, "url": url, "status": "OK"}],
        "files": [{"path": "x.txt", "size": 3, "md5": MD5}],
        **more,
    }


INSIDE = r"items\.1\.locations\.0: local:a/b lies inside item 'a''s location local:a$"
AROUND = r"items\.1\.locations\.0: local:a lies around item 'a/b''s location local:a/b$"


@pytest.mark.parametrize("batch", [2_000, 1])
def test_a_location_inside_or_around_another_items_is_refused(
    catalog_db: pw.Database, batch: int
) -> None:
    # Item "a" with file "b/x.txt" and item "a/b" with file "x.txt" name one
    # object, local:a/b/x.txt: a delete of either copy removes the other's.
    def refused(items: list[dict[str, Any]], match: str) -> None:
        with pytest.raises(ImportDocumentError, match=match):
            import_items(stream_of(items), connectors=CONNECTORS, database=catalog_db, batch=batch)

    # In one batch (or across batches, with ``batch=1``): the later one is named.
    refused([at("a", "a"), at("a/b", "a/b")], INSIDE)
    refused([at("a/b", "a/b"), at("a", "a")], AROUND)
    refused(
        [at("n", "n"), at("deep", "n/o/p")],
        r"items\.1\.locations\.0: local:n/o/p lies inside item 'n''s location local:n$",
    )
    assert FileStorage.select().count() == 0
    # Against the catalog: the other item stored before.
    import_items(stream_of([at("a", "a")]), connectors=CONNECTORS, database=catalog_db)
    refused([at("first", "first"), at("a/b", "a/b")], INSIDE)
    import_items(stream_of([at("z/y", "z/y")]), connectors=CONNECTORS, database=catalog_db)
    refused(
        [at("first", "first"), at("z", "z")],
        r"items\.1\.locations\.0: local:z lies around item 'z/y''s location local:z/y$",
    )
    # An item the import changes (the item-by-item rules), or one the
    # document says is damaged, is held to the same.
    import_items(
        stream_of([at("changed", "c"), at("p", "p", connector="S3")]),
        connectors=CONNECTORS,
        database=catalog_db,
    )
    changed = at("changed", "c")
    changed["locations"].append({"connector": "S3", "url": "p/q"})
    refused(
        [at("first", "first"), changed],
        r"items\.1\.locations\.1: S3:p/q lies inside item 'p''s location S3:p$",
    )
    damaged = at("d", "a/q")
    damaged["locations"][0].update(status="DM", damaged={"x.txt": "missing: gone"})
    refused(
        [at("first", "first"), damaged],
        r"items\.1\.locations\.0: local:a/q lies inside item 'a''s location local:a$",
    )
    assert sorted(item.key for item in FileStorage.select()) == ["a", "changed", "p", "z/y"]
    # Whole segments only; another connector is another place.
    counts = import_items(
        stream_of(
            [
                at("ab", "ab"),
                at("a-b", "a-b"),
                at("a.b", "a.b"),
                at("a0", "a0"),
                at("z/yy", "z/yy"),
                at("s3", "a/b", connector="S3"),
                at("s3-z", "z", connector="S3"),
            ]
        ),
        connectors=CONNECTORS,
        database=catalog_db,
        batch=batch,
    )
    assert counts.created == 7


def test_the_item_by_item_rules_refuse_a_location_inside_or_around_another_items(
    catalog_db: pw.Database,
) -> None:
    with writing(catalog_db):
        import_one(at("a", "a"), where="items.0", actor="import", verified_at=None)
        import_one(at("z/y", "z/y"), where="items.1", actor="import", verified_at=None)
        with pytest.raises(
            ImportDocumentError,
            match=r"^items\.7\.locations\.0: local:a/b/c lies inside item 'a''s location local:a$",
        ):
            import_one(at("a/b/c", "a/b/c"), where="items.7", actor="import", verified_at=None)
        with pytest.raises(
            ImportDocumentError,
            match=r"^items\.8\.locations\.0: local:z lies around item 'z/y''s location local:z/y$",
        ):
            import_one(at("z", "z"), where="items.8", actor="import", verified_at=None)
        import_one(at("ab", "ab"), where="items.9", actor="import", verified_at=None)


# -- reading -------------------------------------------------------------------


def document_bytes(items: list[Any], *, indent: int | None = None) -> bytes:
    return json.dumps({"items": items}, indent=indent).encode()


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_a_document_is_read_item_by_item_whatever_the_chunks(
    monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(streaming, "READ_CHUNK", chunk)
    items = [*variety("r-"), {"key": "é ü 中文", "created": "2026-01-01T00:00:00Z"}]
    for indent in (None, 2):
        read = list(read_items(io.BytesIO(document_bytes(items, indent=indent))))
        assert read == [(f"items.{n}", item) for n, item in enumerate(items)]
    assert list(read_items(io.BytesIO(b' {"items" : [ ] } \n'))) == []


def test_json_lines_are_read_line_by_line() -> None:
    items = variety("l-")
    text = "\n".join(json.dumps(item) for item in items[:2]) + "\n\n" + json.dumps(items[2])
    read = list(read_items(io.BytesIO(text.encode()), format="jsonl"))
    assert read == [("line 1", items[0]), ("line 2", items[1]), ("line 4", items[2])]


@pytest.mark.parametrize(
    "text",
    [
        '{"items": [{"key": 1}, {"key": }]}',
        '{"items": [\n  {},\n  {"a": 1,}\n]}',
        '{"items": [{}] "x"}',
        '{"items": []} []',
        '{"items": [{}',
        '{"items": [{}, {"a": "b\\x"}]}',
        "[1, 2,",
    ],
)
def test_malformed_json_is_named_where_the_standard_library_names_it(
    monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    monkeypatch.setattr(streaming, "READ_CHUNK", 5)  # errors found across chunks too
    with pytest.raises(json.JSONDecodeError) as oracle:
        json.loads(text)
    expected = oracle.value
    with pytest.raises(ImportDocumentError) as raised:
        list(read_items(io.BytesIO(text.encode()), name="doc"))
    assert str(raised.value) == (
        f"doc: malformed JSON at line {expected.lineno} column {expected.colno}: {expected.msg}"
    )


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[1, 2]", "expected a JSON object with an 'items' list, got list"),
        ("{}", "items: required key is missing"),
        ('{"things": []}', "things: unknown key"),
        ('{"items": [], "more": 1}', "more: unknown key"),
        ('{"items": {}}', "items: expected a list, got dict"),
    ],
)
def test_json_that_is_not_a_document_is_named(
    monkeypatch: pytest.MonkeyPatch, text: str, complaint: str
) -> None:
    monkeypatch.setattr(streaming, "READ_CHUNK", 5)
    with pytest.raises(ImportDocumentError) as raised:
        list(read_items(io.BytesIO(text.encode()), name="doc"))
    assert str(raised.value) == complaint


def test_bytes_that_are_not_utf8_are_named() -> None:
    for form in ("json", "jsonl"):
        with pytest.raises(ImportDocumentError, match=r"doc: .*not UTF-8 text"):
            list(read_items(io.BytesIO(b'{"items": ["\xff\xfe"]}'), format=form, name="doc"))


def test_a_line_that_is_not_json_is_named() -> None:
    with pytest.raises(ImportDocumentError, match="doc: malformed JSON at line 2 column 9"):
        list(read_items(io.BytesIO(b'{"a": 1}\n{"key": }\n'), format="jsonl", name="doc"))


@pytest.mark.parametrize(
    ("name", "form"),
    [("a.json", "json"), ("a.jsonl", "jsonl"), ("A.NDJSON", "jsonl"), ("x", "json")],
)
def test_the_format_follows_the_extension(name: str, form: str) -> None:
    assert sniff_format(name) == form


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="ab./\\:\x00é 1", max_size=10))
def test_the_fast_checks_accept_only_paths_the_rules_accept(value: str) -> None:
    # What the fast path lets through must be what check_relative_path lets
    # through; what it refuses goes to the models, which name the problem.
    if streaming._path(value):
        check_relative_path(value)
    if streaming._url(value):
        check_relative_path(value, what="url")
        assert not value.endswith("/")
    try:
        check_relative_path(value)
    except InvalidPathError:
        return
    if value[:2].isascii() and not (len(value) > 1 and value[1] == ":"):
        assert streaming._path(value), value  # the common, plain path takes the fast way


def test_every_file_the_fast_check_refuses_gets_the_models_verdict() -> None:
    item = variety("f-")[0]
    for bad, message in (
        ({"path": "a//b"}, "empty segment"),
        ({"path": "x", "md5": "ABC"}, "expected 32 hex digits"),
        ({"path": "x", "size": -1}, "greater than or equal to 0"),
        ({"path": "x", "size": True}, "valid integer"),
        ({"path": "x", "crc32c": 12345678}, "valid string"),
    ):
        with pytest.raises(ImportDocumentError, match=message):
            streaming.checked_item({**item, "files": [bad]}, "items.0", connectors=CONNECTORS)


def test_a_key_that_comes_again_in_a_later_batch_is_found_before_the_commit(
    catalog_db: pw.Database,
) -> None:
    items = [*variety("k-"), {"key": "k-bare", "created": "2026-03-01T00:00:00Z"}]
    with pytest.raises(
        ImportDocumentError, match=r"^items\.6\.key: appears twice \(also items\.5\)$"
    ):
        import_items(stream_of(items), connectors=CONNECTORS, database=catalog_db, batch=2)
    lines = ((f"line {n + 3}", raw) for n, raw in enumerate(items))
    with pytest.raises(ImportDocumentError, match=r"^line 9\.key: appears twice \(also line 8\)$"):
        import_items(lines, connectors=CONNECTORS, database=catalog_db, batch=2)
    assert FileStorage.select().count() == 0


def test_a_whole_document_is_checked_without_the_catalog() -> None:
    from catalog.streaming import validate_document

    items = variety("w-")
    assert [item.key for item in validate_document({"items": items}, connectors=CONNECTORS)] == [
        item["key"] for item in items
    ]
    twice = [items[0], {**items[1], "locations": [{"connector": "local", "url": "w-plain"}]}]
    with pytest.raises(ImportDocumentError, match=r"^items\.1\.locations\.0: local:w-plain also"):
        validate_document({"items": twice}, connectors=CONNECTORS)
    with pytest.raises(ImportDocumentError, match=r"^items\.1\.key: 'w-plain' appears twice"):
        validate_document({"items": [items[0], items[0]]}, connectors=CONNECTORS)
    with pytest.raises(ImportDocumentError, match=r"^extra: unknown key$"):
        validate_document({"items": [], "extra": 1}, connectors=CONNECTORS)


def test_input_that_breaks_after_batches_were_written_stores_nothing(
    catalog_db: pw.Database,
) -> None:
    # The batches before the break were written, and are rolled back with it.
    text = document_bytes(variety("late-"))[:-40] + b"}, oops"
    items = streaming.read_items(io.BytesIO(text), format="json", name="doc.json")
    with pytest.raises(ImportDocumentError, match=r"^doc\.json: malformed JSON at line 1"):
        import_items(items, connectors=CONNECTORS, database=catalog_db, batch=1)
    assert FileStorage.select().count() == 0 and Action.select().count() == 0


@given(
    st.one_of(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
            lambda children: (
                st.lists(children, max_size=3)
                | st.dictionaries(st.text(max_size=5), children, max_size=3)
            ),
            max_leaves=8,
        ).map(json.dumps),
        st.text(max_size=30),
    ),
    st.sampled_from(["", " ", "\t", "\r", "\x0c", " \r"]),
)
@example("\x00a\x00b", "")  # json.loads takes it for UTF-16, and fails to decode it
@example("NaN", "")  # which json.loads takes, and is not equal to itself
@settings(max_examples=300, deadline=None)
def test_a_line_is_read_as_json_loads_reads_it(text: str, around: str) -> None:
    line = (around + text + around + "\n").encode()
    try:
        expected: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        with pytest.raises(json.JSONDecodeError) as raised:
            streaming._one_value(line)
        assert (raised.value.msg, raised.value.pos) == (exc.msg, exc.pos)
    except UnicodeDecodeError:  # NUL bytes up front: json.loads takes it for UTF-16
        with pytest.raises(UnicodeDecodeError):
            streaming._one_value(line)
    else:
        # Compared as JSON text: NaN, which json.loads takes, is not equal to itself.
        assert json.dumps(streaming._one_value(line)) == json.dumps(expected)


def test_batches_read_ahead_arrive_in_order_and_so_does_the_readers_error() -> None:
    def batches() -> Iterator[list[Any]]:
        yield [1]
        yield [2]
        raise ImportDocumentError("line 3: broken")

    got: list[Any] = []
    with (
        pytest.raises(ImportDocumentError, match="line 3"),
        streaming._ahead(batches(), on_thread=True) as checked,
    ):
        got.extend(checked)
    assert got == [[1], [2]]


def test_a_writer_that_stops_early_stops_the_reader() -> None:
    closed = threading.Event()

    def endless() -> Iterator[list[Any]]:
        try:
            number = 0
            while True:
                number += 1
                yield [number]
        finally:
            closed.set()

    before = set(threading.enumerate())
    with (
        pytest.raises(RuntimeError, match="writer failed"),
        streaming._ahead(endless(), on_thread=True) as checked,
    ):
        for batch in checked:
            if batch == [3]:
                raise RuntimeError("writer failed")
    assert closed.is_set()
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]


def batches_of(*batches: list[Any]) -> Iterator[list[Any]]:
    yield from batches


def test_an_import_of_one_batch_starts_no_reader() -> None:
    with streaming._ahead(batches_of([1]), on_thread=True) as checked:
        assert list(checked) == [[1]]
        assert "import-reader" not in {thread.name for thread in threading.enumerate()}


def test_imports_side_by_side_leave_the_switch_interval_as_they_found_it() -> None:
    before = sys.getswitchinterval()
    first = streaming._ahead(batches_of([1], [2], [3], [4]), on_thread=True)
    second = streaming._ahead(batches_of([5], [6], [7]), on_thread=True)
    a, b = first.__enter__(), second.__enter__()
    # The third batch of each comes from its reader.
    got = [next(a), next(a), next(a), next(b), next(b), next(b)]
    assert got == [[n] for n in (1, 2, 3, 5, 6, 7)]
    assert sys.getswitchinterval() == streaming.DEFAULT_SWITCH_SECONDS
    first.__exit__(None, None, None)  # the first to start ends first
    assert sys.getswitchinterval() == streaming.DEFAULT_SWITCH_SECONDS
    second.__exit__(None, None, None)
    assert sys.getswitchinterval() == before


# -- passing over what was imported from the same text ------------------------------


def with_texts(items: list[dict[str, Any]]) -> Iterator[tuple[str, Any, str]]:
    """``(where, item, text)`` as ``read_items(..., texts=True)`` gives them."""
    return ((f"line {n + 1}", item, json.dumps(item)) for n, item in enumerate(items))


def digests() -> dict[str, str | None]:
    return {row.key: row.import_digest for row in FileStorage.select()}


def test_an_item_imported_from_the_same_text_is_passed_over(catalog_db: pw.Database) -> None:
    items = variety("d-")
    first = import_items(with_texts(items), connectors=CONNECTORS, database=catalog_db, batch=2)
    assert (first.created, first.updated, first.unchanged) == (6, 0, 0)
    stamped = digests()
    assert all(len(digest or "") == 32 for digest in stamped.values())
    # Since then a copy was accessed, another deleted (workers, not an import).
    location = StorageLocation.get(StorageLocation.url == "d-plain")
    StorageLocation.update(last_update=location.last_update.replace(year=2027)).where(
        StorageLocation.id == location.id
    ).execute()
    StorageLocation.delete().where(
        (StorageLocation.url == "d-two") & (StorageLocation.connector_name == "S3")
    ).execute()
    before = (Action.select().count(), story("d-"))
    again = import_items(with_texts(items), connectors=CONNECTORS, database=catalog_db, batch=4)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 6)
    # Passed over: the catalog keeps what happened since, not the document's older view.
    assert (Action.select().count(), story("d-")) == before
    assert StorageLocation.get(StorageLocation.url == "d-plain").last_update.year == 2027
    assert digests() == stamped


def test_an_item_whose_text_changed_goes_through_every_rule_and_is_stamped_anew(
    catalog_db: pw.Database,
) -> None:
    items = variety("c-")
    import_items(with_texts(items), connectors=CONNECTORS, database=catalog_db)
    stamped = digests()
    location = StorageLocation.get(StorageLocation.url == "c-plain")
    # Earlier than the document's (a later access recorded here would stand).
    StorageLocation.update(last_update=location.last_update.replace(year=2025)).where(
        StorageLocation.id == location.id
    ).execute()
    items[0]["files"][0]["size"] = 4  # a new version of c-plain's a.txt
    counts = import_items(with_texts(items), connectors=CONNECTORS, database=catalog_db)
    assert (counts.created, counts.updated, counts.unchanged) == (0, 1, 5)
    now = digests()
    assert now["c-plain"] != stamped["c-plain"] and len(now["c-plain"] or "") == 32
    assert {k: v for k, v in now.items() if k != "c-plain"} == {
        k: v for k, v in stamped.items() if k != "c-plain"
    }
    # The changed item was looked at whole: the document's last_update holds again.
    assert StorageLocation.get(StorageLocation.url == "c-plain").last_update.year == 2026
    assert ReferencedPath.get(ReferencedPath.path == "a.txt").size == 4
    assert import_items(
        with_texts(items), connectors=CONNECTORS, database=catalog_db
    ).unchanged == len(items)


def test_items_without_their_text_are_looked_at_and_unstamped(catalog_db: pw.Database) -> None:
    items = variety("n-")
    import_items(with_texts(items), connectors=CONNECTORS, database=catalog_db)
    location = StorageLocation.get(StorageLocation.url == "n-plain")
    # Earlier than the document's (a later access recorded here would stand).
    StorageLocation.update(last_update=location.last_update.replace(year=2025)).where(
        StorageLocation.id == location.id
    ).execute()
    # A source that gives no text (the client API, a Resolwe database): every
    # item is compared, and what it last imported no longer counts as text.
    counts = import_items(stream_of(items), connectors=CONNECTORS, database=catalog_db)
    assert (counts.updated, counts.unchanged) == (1, 5)
    assert StorageLocation.get(StorageLocation.url == "n-plain").last_update.year == 2026
    assert set(digests().values()) == {None}
    counts = import_items(with_texts(items), connectors=CONNECTORS, database=catalog_db)
    assert (counts.created, counts.updated, counts.unchanged) == (0, 0, 6)
    assert None not in set(digests().values())


def test_another_configuration_checks_the_same_text_again(catalog_db: pw.Database) -> None:
    items = variety("k-")
    import_items(with_texts(items), connectors=CONNECTORS, database=catalog_db)
    with pytest.raises(ImportDocumentError, match=r"'S3' is not a configured connector"):
        import_items(with_texts(items), connectors={"local"}, database=catalog_db)
    # An ingest's verification time is part of what an item's text says.
    stamped = digests()
    counts = import_items(
        with_texts(items),
        connectors=CONNECTORS,
        database=catalog_db,
        verified_at=datetime(2026, 2, 1),
    )
    assert counts.unchanged + counts.updated == len(items)
    assert not set(digests().values()) & set(stamped.values())


def test_a_key_twice_is_refused_when_one_of_them_is_passed_over(catalog_db: pw.Database) -> None:
    items = variety("t-")
    import_items(with_texts(items), connectors=CONNECTORS, database=catalog_db)
    twice = [*items, {**items[0], "data_slug": "other"}]
    with pytest.raises(ImportDocumentError, match=r"line 7\.key: 't-plain' appears twice"):
        import_items(with_texts(twice), connectors=CONNECTORS, database=catalog_db)
    with pytest.raises(ImportDocumentError, match=r"line 7\.key: appears twice \(also line 1\)"):
        import_items(with_texts(twice), connectors=CONNECTORS, database=catalog_db, batch=2)


def test_a_json_document_and_json_lines_of_the_same_items_have_the_same_digests(
    catalog_db: pw.Database,
) -> None:
    items = variety("j-")
    lines = "".join(json.dumps(item) + "\r\n" for item in items).encode()
    import_items(
        read_items(io.BytesIO(lines), format="jsonl", texts=True),
        connectors=CONNECTORS,
        database=catalog_db,
    )
    document = read_items(io.BytesIO(document_bytes(items, indent=None)), texts=True)
    counts = import_items(document, connectors=CONNECTORS, database=catalog_db)
    assert (counts.created, counts.updated, counts.unchanged) == (0, 0, 6)


@pytest.mark.parametrize("batch", [1, 2, 3, 2000])
def test_new_and_passed_over_items_mixed_in_any_batches(
    catalog_db: pw.Database, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    old, new = variety("o-"), variety("n-")
    import_items(with_texts(old), connectors=CONNECTORS, database=catalog_db)
    checked: list[str] = []
    real = streaming.checked_item

    def counted(raw: Any, where: str, **options: Any) -> Any:
        checked.append(raw["key"])
        return real(raw, where, **options)

    monkeypatch.setattr(streaming, "checked_item", counted)
    mixed = [new[0], *old[:3], new[1], *old[3:], *new[2:]]
    mixed[2] = {**mixed[2], "data_slug": "changed"}
    counts = import_items(
        with_texts(mixed), connectors=CONNECTORS, database=catalog_db, batch=batch
    )
    assert (counts.created, counts.updated, counts.unchanged) == (6, 1, 5)
    assert FileStorage.get(FileStorage.key == mixed[2]["key"]).data_slug == "changed"
    assert None not in set(digests().values())
    if sql.is_sqlite(catalog_db) and batch >= len(mixed):
        # Read before they are checked, the old items of the same text are not checked again
        # (on PostgreSQL the reading thread checks them, and the writer passes over).
        assert sorted(checked) == sorted([*(item["key"] for item in new), mixed[2]["key"]])


# -- read and checked in a process of their own -----------------------------------


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The reading processes an import forked (``catalog.forked``, run as it is: counted).

    The import forks only from a process with one thread (``can_fork``); a
    test run may hold threads other tests left idle (servers' helpers), which
    the reading process never touches, so here that guard alone is lifted.
    """
    if sys.platform != "linux":
        pytest.skip("forks only on Linux")
    monkeypatch.setattr(streaming, "can_fork", lambda: True)
    started: list[int] = []
    real = streaming.forked

    def counted(produce: Any) -> Any:
        started.append(1)
        return real(produce)

    monkeypatch.setattr(streaming, "forked", counted)
    return started


def apart(items: Any, database: pw.Database, **options: Any) -> streaming.ImportCounts:
    return import_items(
        items, connectors=CONNECTORS, database=database, check_apart=True, **options
    )


def test_items_read_in_a_process_of_their_own_leave_what_the_item_by_item_import_leaves(
    catalog_db: pw.Database, forks: list[int]
) -> None:
    # Already in the catalog, not from a text: it goes through every rule,
    # its item decoded again from the text the reading process sent.
    changed = variety("apart-")[0]
    import_items(stream_of([changed]), connectors=CONNECTORS, database=catalog_db)
    changed["files"][0]["size"] = 4
    counts = apart(
        with_texts([variety("apart-")[5], *variety("apart-")[1:5], changed]), catalog_db, batch=2
    )
    assert forks == [1]
    assert (counts.created, counts.updated, counts.unchanged) == (5, 1, 0)
    reference = variety("each-")
    one_by_one([reference[0]])
    reference[0]["files"][0]["size"] = 4
    one_by_one([reference[5], *reference[1:5], reference[0]])
    assert story("apart-") == story("each-")
    (local,) = [loc for loc in story("apart-")["damaged"][5] if loc[0] == "local"]
    assert (local[2], local[6]) == ("DM", [("d", "gone")])  # by the rules, from its text


def test_problems_found_in_the_reading_process_are_named_as_here(
    catalog_db: pw.Database, forks: list[int]
) -> None:
    items = [*variety("p-"), *variety("q-")]
    items[3]["files"][0]["md5"] = "nope"
    items[4]["locations"][0]["connector"] = "GCS"
    items.append({"key": "p-plain", "created": "2026-01-01T00:00:00Z"})  # batches apart
    items.append({"key": "q-bare", "created": "2026-01-01T00:00:00Z"})  # in one batch
    messages = []
    for check_apart in (False, True):
        with pytest.raises(ImportDocumentError) as raised:
            import_items(
                with_texts(items),
                connectors=CONNECTORS,
                database=catalog_db,
                batch=2,
                check_apart=check_apart,
            )
        messages.append(str(raised.value))
    assert forks == [1]
    assert messages[1] == messages[0]
    assert messages[1].startswith("line 4.files.0.md5: expected 32 hex digits")
    assert "line 5.locations.0.connector: 'GCS' is not a configured connector" in messages[1]
    assert FileStorage.select().count() == 0 and Action.select().count() == 0


def test_enough_problems_in_the_reading_process_end_the_reading(
    catalog_db: pw.Database, forks: list[int]
) -> None:
    bad = [{"key": f"bad-{n}", "created": "yesterday"} for n in range(10_000)]
    with pytest.raises(ImportDocumentError, match=r"; and maybe more$") as raised:
        apart(with_texts([*variety("e-"), *bad]), catalog_db, batch=3, max_errors=3)
    assert forks == [1]
    assert str(raised.value).count("created") == 3
    assert str(raised.value).startswith("line 7.created")
    assert FileStorage.select().count() == 0


def test_json_that_breaks_in_the_reading_process_stores_nothing(
    catalog_db: pw.Database, forks: list[int]
) -> None:
    text = b"".join(json.dumps(item).encode() + b"\n" for item in variety("late-"))
    stream = io.BytesIO(text + b'{"key": "late-x",\n')
    items = streaming.read_items(stream, format="jsonl", name="items.jsonl", texts=True)
    with pytest.raises(ImportDocumentError, match=r"^items\.jsonl: malformed JSON at line 7 "):
        apart(items, catalog_db, batch=2)
    assert forks == [1]
    assert FileStorage.select().count() == 0 and Action.select().count() == 0


def test_a_re_import_is_read_here(catalog_db: pw.Database, forks: list[int]) -> None:
    items = variety("r-")
    assert apart(with_texts(items[:2]), catalog_db, batch=2).created == 2
    assert forks == [1]
    again = apart(with_texts(items), catalog_db, batch=2)  # the catalog holds stamped items
    assert forks == [1]
    assert (again.created, again.unchanged) == (4, 2)


class Seen:
    """What reading the items saw (as ``catalog.resolwe.Skipped`` counts what it leaves out)."""

    def __init__(self) -> None:
        self.count = 0
        self.pids: set[int] = set()


def test_what_the_reading_process_saw_comes_back(catalog_db: pw.Database, forks: list[int]) -> None:
    seen = Seen()

    def counted() -> Iterator[tuple[str, Any, str]]:
        for entry in with_texts(variety("s-")):
            seen.count += 1
            seen.pids.add(os.getpid())
            yield entry

    assert apart(counted(), catalog_db, batch=2, read_state=seen).created == 6
    assert forks == [1]
    assert seen.count == 6 and len(seen.pids) == 1 and os.getpid() not in seen.pids


def test_an_item_read_apart_is_decoded_again_from_its_json_or_its_pickle() -> None:
    raw = variety("t-")[3]  # damaged: written by the item-by-item import
    item = streaming.checked_item(raw, "line 1", connectors=CONNECTORS)
    for text in (json.dumps(raw), json.dumps(raw).encode(), pickle.dumps(raw, protocol=5)):
        again = streaming._unpacked("line 1", streaming._packed(item, text))
        assert again.raw is None and again.document() == raw
        assert again == item._replace(raw=None, text=text)


def test_a_damaged_file_that_is_not_the_items_is_named_with_its_place(
    catalog_db: pw.Database,
) -> None:
    # Found only as the item is written: the message must still name its
    # place (``items.N...``, ``line N``), as every other problem's does.
    items = variety("n-")
    items[3]["locations"][0]["damaged"] = {"nope": "gone"}
    with pytest.raises(ImportDocumentError, match=r"^items\.3\.locations\.0\.damaged"):
        import_items(stream_of(items), connectors=CONNECTORS, database=catalog_db, batch=2)
    assert FileStorage.select().count() == 0 and Action.select().count() == 0
