"""Import documents (SPEC §6): validated whole, written in one transaction, idempotent by key.

Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

import peewee as pw
import pytest

from catalog.errors import CatalogError, ImportDocumentError
from catalog.importing import IMPORT_LOCK_REASON
from catalog.models import (
    ALL_MODELS,
    AccessLog,
    Action,
    FileStorage,
    ReferencedPath,
    StorageLocation,
)
from catalog.streaming import ImportResult, import_document

CONNECTORS = frozenset({"local", "S3"})
MD5 = "0123456789abcdef0123456789abcdef"


def item(key: str, **overrides: Any) -> dict[str, Any]:
    """A valid item with one location on ``local`` and one file."""
    document: dict[str, Any] = {
        "key": key,
        "data_slug": "slug",
        "process_type": "data:test:",
        "status": "OK",
        "created": "2026-01-01T00:00:00Z",
        "locations": [
            {
                "connector": "local",
                "url": key,
                "status": "OK",
                "last_update": "2026-01-05T00:00:00Z",
            }
        ],
        "files": [
            {
                "path": "reads.fastq.gz",
                "size": 3,
                "md5": MD5,
                "crc32c": "364b3fb7",
                "awss3etag": MD5,
                "chunk_size": 8388608,
            }
        ],
    }
    document.update(overrides)
    return document


def run(database: pw.Database, document: Any, **options: Any) -> ImportResult:
    options.setdefault("connectors", CONNECTORS)
    return import_document(document, database=database, **options)


def counts() -> dict[str, int]:
    return {model._meta.table_name: model.select().count() for model in ALL_MODELS}


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, ids included."""
    return {
        model._meta.table_name: list(model.select().order_by(model._meta.primary_key).tuples())
        for model in ALL_MODELS
    }


def only(model: type[pw.Model], *where: Any) -> Any:
    rows = list(model.select().where(*where)) if where else list(model.select())
    assert len(rows) == 1, rows
    return rows[0]


# -- atomicity --------------------------------------------------------------


def _bad_md5(doc: dict[str, Any]) -> None:
    doc["files"][0]["md5"] = "not-a-hash"


def _absolute_url(doc: dict[str, Any]) -> None:
    doc["locations"][0]["url"] = "/data/abs"


def _dotdot_path(doc: dict[str, Any]) -> None:
    doc["files"][0]["path"] = "../outside"


def _unknown_connector(doc: dict[str, Any]) -> None:
    doc["locations"][0]["connector"] = "GCS"


def _bad_time(doc: dict[str, Any]) -> None:
    doc["created"] = "yesterday"


def _zone_twice(doc: dict[str, Any]) -> None:
    doc["created"] = "2026-01-01T00:00:00+01:00Z"


def _missing_created(doc: dict[str, Any]) -> None:
    del doc["created"]


def _unknown_key(doc: dict[str, Any]) -> None:
    doc["colour"] = "blue"


def _negative_size(doc: dict[str, Any]) -> None:
    doc["files"][0]["size"] = -1


def _duplicate_key(doc: dict[str, Any]) -> None:
    doc["key"] = "a"


@pytest.mark.parametrize(
    ("spoil", "complaint"),
    [
        (_bad_md5, r"^items\.2\.files\.0\.md5: expected 32 hex digits"),
        (_absolute_url, r"^items\.2\.locations\.0\.url: url '/data/abs' is absolute"),
        (_dotdot_path, r"^items\.2\.files\.0\.path: path '\.\./outside' has a '\.\.' segment"),
        (_unknown_connector, r"^items\.2\.locations\.0\.connector: 'GCS' is not a configured"),
        (_bad_time, r"^items\.2\.created: expected an ISO-8601 time, got 'yesterday'"),
        (_zone_twice, r"^items\.2\.created: expected an ISO-8601 time, got '2026-01-01T00:00"),
        (_missing_created, r"^items\.2\.created: required key is missing"),
        (_unknown_key, r"^items\.2\.colour: unknown key"),
        (_negative_size, r"^items\.2\.files\.0\.size: "),
        (_duplicate_key, r"^items\.2\.key: 'a' appears twice \(also items\.0\)"),
    ],
)
def test_a_bad_last_entry_stores_nothing(
    catalog_db: pw.Database, spoil: Any, complaint: str
) -> None:
    run(catalog_db, {"items": [item("existing")]})
    before = snapshot()
    bad = item("c")
    spoil(bad)
    with pytest.raises(ImportDocumentError, match=complaint):
        run(catalog_db, {"items": [item("a"), item("b"), bad]})
    assert snapshot() == before


def test_a_conflict_found_in_the_catalog_rolls_back_the_whole_document(
    catalog_db: pw.Database,
) -> None:
    """The last item's location belongs to another item: found while writing, still atomic."""
    run(catalog_db, {"items": [item("owner", locations=[{"connector": "local", "url": "shared"}])]})
    before = snapshot()
    thief = item("c", locations=[{"connector": "local", "url": "shared"}])
    with pytest.raises(ImportDocumentError, match="local:shared already belongs to item 'owner'"):
        run(catalog_db, {"items": [item("a"), item("b"), thief]})
    assert snapshot() == before
    assert FileStorage.select().where(FileStorage.key.in_(["a", "b", "c"])).count() == 0


def test_a_second_location_on_a_connector_is_refused(catalog_db: pw.Database) -> None:
    run(catalog_db, {"items": [item("a")]})
    before = counts()
    moved = item("a", locations=[{"connector": "local", "url": "elsewhere"}])
    with pytest.raises(ImportDocumentError, match="already has a location on 'local' at url 'a'"):
        run(catalog_db, {"items": [item("b"), moved]})
    assert counts() == before


@pytest.mark.parametrize(
    ("document", "complaint"),
    [
        ([], r"^expected a JSON object with an 'items' list, got list"),
        ({}, r"^items: required key is missing"),
        ({"items": {}}, r"^items: "),
        (
            {"items": [item("a", locations=[{"connector": "local", "url": "x"}] * 2)]},
            r"^items\.0\.locations\.1: a second location on 'local' for one item",
        ),
        (
            {
                "items": [
                    item("a", locations=[{"connector": "local", "url": "x"}]),
                    item("b", locations=[{"connector": "local", "url": "x"}]),
                ]
            },
            r"^items\.1\.locations\.0: local:x also belongs to item 'a'",
        ),
        (
            {"items": [item("a", files=[{"path": "f"}, {"path": "f"}])]},
            r"^items\.0\.files\.1\.path: 'f' appears twice",
        ),
        ({"items": [item("")]}, r"^items\.0\.key: "),
    ],
)
def test_malformed_documents(catalog_db: pw.Database, document: Any, complaint: str) -> None:
    with pytest.raises(ImportDocumentError, match=complaint) as caught:
        run(catalog_db, document)
    assert isinstance(caught.value, CatalogError)
    assert "\n" not in str(caught.value)
    assert set(counts().values()) == {0}


def test_more_problems_are_counted(catalog_db: pw.Database) -> None:
    bad = item("a", created="never", status="")
    with pytest.raises(ImportDocumentError, match=r"\(and 1 more problem\)$"):
        run(catalog_db, {"items": [bad]})


# -- idempotency ----------------------------------------------------------------


def test_reimport_is_idempotent(catalog_db: pw.Database) -> None:
    document = {
        "items": [
            item("a"),
            item(
                "b",
                locations=[
                    {"connector": "local", "url": "b", "open_access_logs": 2},
                    {"connector": "S3", "url": "bucket/b/", "status": "UP"},
                ],
                files=[{"path": "dir/"}, {"path": "dir/x.txt", "size": 0}],
            ),
        ]
    }
    assert run(catalog_db, copy.deepcopy(document)) == ImportResult(created=2)
    first = snapshot()
    assert run(catalog_db, copy.deepcopy(document)) == ImportResult(unchanged=2)
    assert run(catalog_db, copy.deepcopy(document)) == ImportResult(unchanged=2)
    assert snapshot() == first
    assert counts() == {
        "file_storage": 2,
        "storage_location": 3,
        "referenced_path": 3,
        "access_log": 2,
        "action": 2,
        # The copies' files are as the document asserts them: nothing to record.
        "location_file": 0,
        "setting": 0,
    }


def test_reimport_updates_changed_fields(catalog_db: pw.Database) -> None:
    """Matched by key, (connector, url) and path: changed values are written over, not added."""
    run(catalog_db, {"items": [item("a"), item("b")]})
    changed = item(
        "a",
        data_slug="new-slug",
        status="ER",
        locations=[
            {
                "connector": "local",
                "url": "a",
                "status": "DE",
                "last_update": "2026-02-01T00:00:00",
            },
            {"connector": "S3", "url": "a"},
        ],
        files=[
            {"path": "reads.fastq.gz", "size": 4, "md5": MD5.upper()},
            {"path": "more.txt", "size": 1},
        ],
    )
    assert run(catalog_db, {"items": [changed, item("b")]}) == ImportResult(updated=1, unchanged=1)
    stored = only(FileStorage, FileStorage.key == "a")
    assert (stored.data_slug, stored.status, stored.process_type) == (
        "new-slug",
        "ER",
        "data:test:",
    )
    local = only(
        StorageLocation, StorageLocation.connector_name == "local", StorageLocation.url == "a"
    )
    assert (local.status, local.last_update) == ("DE", datetime(2026, 2, 1))
    assert local.file_storage_id == stored.id
    s3 = only(StorageLocation, StorageLocation.connector_name == "S3")
    assert s3.file_storage_id == stored.id
    reads = only(
        ReferencedPath,
        ReferencedPath.file_storage == stored,
        ReferencedPath.path == "reads.fastq.gz",
    )
    # The size changed, so the file did: hashes the document omits belonged to
    # the old bytes and are cleared.
    assert (reads.size, reads.md5, reads.crc32c, reads.awss3etag) == (4, MD5, None, None)
    assert ReferencedPath.select().where(ReferencedPath.file_storage == stored).count() == 2
    assert counts()["file_storage"] == 2
    history = [
        (row.item_key, row.action, row.result, row.actor)
        for row in Action.select().order_by(Action.id)
    ]
    assert history == [
        ("a", "register", "created", "import"),
        ("b", "register", "created", "import"),
        ("a", "register", "updated", "import"),
    ]


def test_reimport_keeps_the_hashes_a_document_leaves_out_of_an_unchanged_file(
    catalog_db: pw.Database,
) -> None:
    run(catalog_db, {"items": [item("a")]})
    # Another producer knows only the size, or only one more hash.
    run(catalog_db, {"items": [item("a", files=[{"path": "reads.fastq.gz", "size": 3}])]})
    reads = ReferencedPath.get(ReferencedPath.path == "reads.fastq.gz")
    assert (reads.size, reads.md5, reads.crc32c, reads.awss3etag) == (3, MD5, "364b3fb7", MD5)

    ReferencedPath.update(crc32c=None).execute()
    again = item("a", files=[{"path": "reads.fastq.gz", "crc32c": "364b3fb7"}])
    run(catalog_db, {"items": [again]})
    reads = ReferencedPath.get(ReferencedPath.path == "reads.fastq.gz")
    assert (reads.size, reads.md5, reads.crc32c) == (3, MD5, "364b3fb7")

    # A hash that contradicts the stored one means new bytes: the rest is cleared.
    other = "f" * 32
    run(catalog_db, {"items": [item("a", files=[{"path": "reads.fastq.gz", "md5": other}])]})
    reads = ReferencedPath.get(ReferencedPath.path == "reads.fastq.gz")
    assert (reads.size, reads.md5, reads.crc32c, reads.awss3etag) == (None, other, None, None)


def test_a_trailing_slash_names_the_same_location(catalog_db: pw.Database) -> None:
    run(catalog_db, {"items": [item("a", locations=[{"connector": "local", "url": "x/y/"}])]})
    again = item("a", locations=[{"connector": "local", "url": "x/y"}])
    assert run(catalog_db, {"items": [again]}) == ImportResult(unchanged=1)
    assert only(StorageLocation).url == "x/y"


def test_hashes_are_normalised(catalog_db: pw.Database) -> None:
    """Upper case, and the quotes S3 puts around an etag, are accepted and stored plainly."""
    etag = f'"{MD5.upper()}-12"'
    files = [
        {"path": "f", "md5": MD5.upper(), "crc32c": "364B3FB7", "awss3etag": etag},
        {"path": "g", "md5": "", "crc32c": "", "awss3etag": ""},
    ]
    run(catalog_db, {"items": [item("a", files=files)]})
    stored = {row.path: (row.md5, row.crc32c, row.awss3etag) for row in ReferencedPath.select()}
    assert stored == {"f": (MD5, "364b3fb7", f"{MD5}-12"), "g": (None, None, None)}


def test_the_actor_is_recorded(catalog_db: pw.Database) -> None:
    run(catalog_db, {"items": [item("a")]}, actor="ingest")
    assert only(Action).actor == "ingest"


# -- times ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-01-01T00:00:00",
        "2026-01-01 00:00:00",
        "2026-01-01",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.000000Z",
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T02:30:00+02:30",
        "2025-12-31T19:00:00-05:00",
        " 2026-01-01T00:00:00Z ",
    ],
)
def test_times_are_stored_as_utc(catalog_db: pw.Database, text: str) -> None:
    """A time without zone is UTC; one with an offset is converted to UTC."""
    location = {"connector": "local", "url": "a", "last_update": text, "last_verified": text}
    run(catalog_db, {"items": [item("a", created=text, locations=[location])]})
    utc = datetime(2026, 1, 1)
    assert only(FileStorage).created == utc
    stored = only(StorageLocation)
    assert (stored.last_update, stored.last_verified) == (utc, utc)


def test_fractions_of_a_second_survive(catalog_db: pw.Database) -> None:
    run(catalog_db, {"items": [item("a", created="2026-01-01T12:34:56.789012+01:00")]})
    assert only(FileStorage).created == datetime(2026, 1, 1, 11, 34, 56, 789012)


def test_an_omitted_last_update_means_created(catalog_db: pw.Database) -> None:
    locations = [{"connector": "local", "url": "a"}, {"connector": "S3", "url": "a"}]
    run(
        catalog_db, {"items": [item("a", created="2026-03-04T05:06:07+01:00", locations=locations)]}
    )
    assert [loc.last_update for loc in StorageLocation.select()] == [
        datetime(2026, 3, 4, 4, 6, 7)
    ] * 2
    assert only(StorageLocation, StorageLocation.connector_name == "S3").last_verified is None


# -- locks ------------------------------------------------------------------------


def open_locks(reason: str | None = IMPORT_LOCK_REASON) -> int:
    query = AccessLog.select().where(AccessLog.finished.is_null())
    if reason is not None:
        query = query.where(AccessLog.reason == reason)
    return query.count()


def with_locks(count: int) -> dict[str, Any]:
    return {
        "items": [
            item("a", locations=[{"connector": "local", "url": "a", "open_access_logs": count}])
        ]
    }


def test_open_access_logs_are_reconciled(catalog_db: pw.Database) -> None:
    """The document says how many import locks are open; re-imports converge on it."""
    assert run(catalog_db, with_locks(2)) == ImportResult(created=1)
    assert (open_locks(), AccessLog.select().count()) == (2, 2)
    location = only(StorageLocation)
    assert all(log.storage_location_id == location.id for log in AccessLog.select())

    assert run(catalog_db, with_locks(2)) == ImportResult(unchanged=1)
    assert (open_locks(), AccessLog.select().count()) == (2, 2)

    assert run(catalog_db, with_locks(1)) == ImportResult(updated=1)
    assert (open_locks(), AccessLog.select().count()) == (1, 2)
    closed = only(AccessLog, AccessLog.finished.is_null(False))
    assert closed.finished >= closed.started

    assert run(catalog_db, with_locks(3)) == ImportResult(updated=1)
    assert open_locks() == 3

    assert run(catalog_db, with_locks(0)) == ImportResult(updated=1)
    assert open_locks() == 0


def test_other_locks_are_left_alone(catalog_db: pw.Database) -> None:
    """Only the locks an import made are the import's to close."""
    run(catalog_db, with_locks(1))
    AccessLog.create(storage_location=only(StorageLocation), reason="reader")
    run(catalog_db, with_locks(0))
    assert open_locks() == 0
    assert open_locks(reason=None) == 1
    assert only(AccessLog, AccessLog.finished.is_null()).reason == "reader"


@pytest.mark.parametrize("count", [-1, "2", 1.5])
def test_a_bad_lock_count_is_refused(catalog_db: pw.Database, count: object) -> None:
    with pytest.raises(ImportDocumentError, match=r"^items\.0\.locations\.0\.open_access_logs: "):
        run(catalog_db, with_locks(count))  # type: ignore[arg-type]
    assert set(counts().values()) == {0}


# -- connectors and paths ---------------------------------------------------------


def test_a_location_on_an_unconfigured_connector_is_an_error(catalog_db: pw.Database) -> None:
    with pytest.raises(
        ImportDocumentError,
        match=r"^items\.0\.locations\.0\.connector: 'local' is not a configured connector "
        r"\(configured: GCS, S3\)$",
    ):
        run(catalog_db, {"items": [item("a")]}, connectors={"S3", "GCS"})
    with pytest.raises(ImportDocumentError, match=r"\(configured: none\)$"):
        run(catalog_db, {"items": [item("a")]}, connectors=set())
    assert set(counts().values()) == {0}


def test_an_item_without_locations_needs_no_connector(catalog_db: pw.Database) -> None:
    assert run(catalog_db, {"items": [item("a", locations=[])]}, connectors=set()).created == 1


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("url", "/abs", "is absolute"),
        ("url", "/", "is absolute"),
        ("url", "..", "'..' segment"),
        ("url", "a/../b", "'..' segment"),
        ("url", "a\\b", "backslash"),
        ("url", "", "non-empty"),
        ("path", "/etc/passwd", "is absolute"),
        ("path", "../x", "'..' segment"),
        ("path", "a/../../x", "'..' segment"),
        ("path", "a//b", "empty segment"),
        ("path", "", "non-empty"),
    ],
)
def test_unsafe_urls_and_paths_are_refused(
    catalog_db: pw.Database, field: str, value: str, complaint: str
) -> None:
    if field == "url":
        doc = item("a", locations=[{"connector": "local", "url": value}])
        spot = r"items\.0\.locations\.0\.url"
    else:
        doc = item("a", files=[{"path": value}])
        spot = r"items\.0\.files\.0\.path"
    with pytest.raises(ImportDocumentError, match=rf"^{spot}: .*{complaint}"):
        run(catalog_db, {"items": [doc]})
    assert set(counts().values()) == {0}


@pytest.mark.postgres
def test_a_concurrent_writer_of_the_same_key_gives_a_clear_error(
    postgres_url: str, _postgres_catalog: pw.Database
) -> None:
    """Between the import's read and its write, another session registers the key."""
    import threading

    import psycopg2

    from catalog.database import bind
    from tests.conftest import _truncate

    _truncate(_postgres_catalog)
    bind(_postgres_catalog)
    other = psycopg2.connect(postgres_url)
    try:
        with other.cursor() as cursor:
            # Uncommitted: invisible to the import's read, but its insert
            # waits on the unique index until this session commits.
            cursor.execute(
                "INSERT INTO file_storage (key, data_slug, process_type, status, created)"
                " VALUES ('raced', '', '', 'OK', now())"
            )
        outcome: list[BaseException | ImportResult] = []

        def run() -> None:
            try:
                outcome.append(
                    import_document(
                        {"items": [item("raced")]},
                        connectors=CONNECTORS,
                        database=_postgres_catalog,
                    )
                )
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)
            finally:
                _postgres_catalog.close()

        worker = threading.Thread(target=run)
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive(), "the import should be waiting on the other session's row"
        other.commit()
        worker.join(timeout=30)
    finally:
        other.close()
    assert len(outcome) == 1 and isinstance(outcome[0], ImportDocumentError)
    assert "at the same time" in str(outcome[0])
    assert StorageLocation.select().count() == 0
    assert [row.key for row in FileStorage.select()] == ["raced"]


def test_items_that_are_not_a_list_are_one_line(catalog_db: pw.Database) -> None:
    with pytest.raises(ImportDocumentError, match=r"^items: expected a list, got int$"):
        import_document({"items": 5}, connectors={"local"}, database=catalog_db)
