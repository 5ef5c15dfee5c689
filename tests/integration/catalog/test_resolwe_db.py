"""The Resolwe database fixture of ``tests/resolwe_db.py``, on a new PostgreSQL database each.

- the DDL makes the tables, columns, keys, constraints and indexes of
  ``resolwe-schema.md``, and its unique constraints refuse duplicates;
- ``fill_awkward`` lays out each awkward case (checked by SQL), and its
  expected import document is one our importer accepts and is what the
  documented rules derive from the database (an independent reading);
- ``fill_generated`` adds the rows it says it adds, keeps the schema as it
  was, and gives the same database for the same seed.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg2
import pytest
from psycopg2 import errors

from catalog.streaming import validate_document
from tests.conftest import new_postgres_database
from tests.resolwe_db import (
    AWKWARD_CONNECTORS,
    DEFAULT_CHUNK_SIZE,
    LOADED_TABLES,
    MANAGER_LOCK_REASON,
    TABLES,
    UNKNOWN_CONNECTOR,
    ResolweDb,
    create_schema,
    encode_version,
    fill_awkward,
    fill_generated,
)

pytestmark = pytest.mark.postgres

INT, CHAR, TEXT, BIG, TIME, BOOL = (
    "integer",
    "character varying",
    "text",
    "bigint",
    "timestamp",
    "boolean",
)
#: table -> column -> (type, varchar length, nullable), as the reference lists them.
COLUMNS: dict[str, dict[str, tuple[str, int | None, bool]]] = {
    "storage_filestorage": {"id": (INT, None, False), "created": (TIME, None, False)},
    "storage_storagelocation": {
        "id": (INT, None, False),
        "file_storage_id": (INT, None, False),
        "url": (CHAR, 60, False),
        "connector_name": (CHAR, 30, False),
        "last_update": (TIME, None, False),
        "status": (CHAR, 2, False),
    },
    "storage_referencedpath": {
        "id": (INT, None, False),
        "path": (TEXT, None, False),
        "size": (BIG, None, False),
        "md5": (CHAR, 32, False),
        "crc32c": (CHAR, 8, False),
        "awss3etag": (CHAR, 50, False),
        "chunk_size": (INT, None, False),
    },
    "storage_referencedpath_storage_locations": {
        "id": (INT, None, False),
        "referencedpath_id": (INT, None, False),
        "storagelocation_id": (INT, None, False),
    },
    "storage_accesslog": {
        "id": (INT, None, False),
        "storage_location_id": (INT, None, False),
        "started": (TIME, None, False),
        "finished": (TIME, None, True),
        "reason": (CHAR, 120, False),
        "cause_id": (INT, None, True),
    },
    "flow_data": {
        "id": (INT, None, False),
        "slug": (CHAR, 100, False),
        "version": (INT, None, False),
        "name": (CHAR, 100, False),
        "created": (TIME, None, False),
        "modified": (TIME, None, False),
        "status": (CHAR, 2, False),
        "process_id": (INT, None, False),
        "location_id": (INT, None, True),
        "duplicated": (TIME, None, True),
        "size": (BIG, None, False),
    },
    "flow_process": {
        "id": (INT, None, False),
        "slug": (CHAR, 100, False),
        "version": (INT, None, False),
        "name": (CHAR, 100, False),
        "created": (TIME, None, False),
        "modified": (TIME, None, False),
        "type": (CHAR, 100, False),
        "is_active": (BOOL, None, False),
    },
}
#: (table, column) -> the table its foreign key refers to (always to ``id``).
FOREIGN_KEYS = {
    ("storage_storagelocation", "file_storage_id"): "storage_filestorage",
    ("storage_referencedpath_storage_locations", "referencedpath_id"): "storage_referencedpath",
    ("storage_referencedpath_storage_locations", "storagelocation_id"): "storage_storagelocation",
    ("storage_accesslog", "storage_location_id"): "storage_storagelocation",
    ("storage_accesslog", "cause_id"): "flow_data",
    ("flow_data", "process_id"): "flow_process",
    ("flow_data", "location_id"): "storage_filestorage",
}
UNIQUE = {
    ("storage_storagelocation", ("url", "connector_name")),
    ("storage_referencedpath_storage_locations", ("referencedpath_id", "storagelocation_id")),
    ("flow_data", ("slug", "version")),
    ("flow_process", ("slug", "version")),
}
#: table -> index name -> the part of its definition after the table name.
INDEXES: dict[str, dict[str, str]] = {
    "storage_storagelocation": {
        "storage_storagelocation_file_storage_id_8e6cd323": "btree (file_storage_id)",
    },
    "storage_referencedpath": {
        "storage_referencedpath_path_f660fcc2": "btree (path)",
        "storage_referencedpath_path_f660fcc2_like": "btree (path text_pattern_ops)",
    },
    "storage_referencedpath_storage_locations": {
        "storage_referencedpath_sto_referencedpath_id_7ab11b79": "btree (referencedpath_id)",
        "storage_referencedpath_sto_storagelocation_id_00a7b916": "btree (storagelocation_id)",
    },
    "storage_accesslog": {
        "storage_accesslog_cause_id_8317b04e": "btree (cause_id)",
        "storage_accesslog_storage_location_id_07f0e035": "btree (storage_location_id)",
    },
    "flow_data": {
        "flow_data_location_id_76c5db4f": "btree (location_id)",
        "flow_data_process_id_df6ebd00": "btree (process_id)",
        "flow_data_slug_f0d6f771": "btree (slug)",
        "flow_data_slug_f0d6f771_like": "btree (slug varchar_pattern_ops)",
        "idx_data_slug": "btree (slug)",
        "idx_data_status": "btree (status)",
    },
    "flow_process": {
        "flow_process_slug_a92bade3": "btree (slug)",
        "flow_process_slug_a92bade3_like": "btree (slug varchar_pattern_ops)",
        "idx_process_type": "btree (type)",
        "idx_process_type_trgm": "gin (type gin_trgm_ops)",
    },
}


@pytest.fixture
def url(fresh_postgres_url: str) -> str:
    """A new database with the Resolwe schema and no rows."""
    create_schema(fresh_postgres_url)
    return fresh_postgres_url


def query(url: str, text: str, *params: Any, zone: str = "UTC") -> list[tuple[Any, ...]]:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE %s", (zone,))
        cursor.execute(text, params)
        rows = cursor.fetchall()
    connection.close()
    return rows


def one(url: str, text: str, *params: Any) -> Any:
    rows = query(url, text, *params)
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]


# -- the schema -------------------------------------------------------------


def test_the_tables_have_the_reference_columns(url: str) -> None:
    rows = query(
        url,
        "SELECT table_name, column_name, data_type, character_maximum_length,"
        " is_nullable = 'YES', column_default, is_identity, identity_generation"
        " FROM information_schema.columns WHERE table_schema = 'public'",
    )
    found: dict[str, dict[str, tuple[str, int | None, bool]]] = {}
    for table, column, kind, length, nullable, default, identity, generation in rows:
        found.setdefault(table, {})[column] = (kind.split(" with")[0], length, nullable)
        if column == "id":
            assert (identity, generation, default) == ("YES", "BY DEFAULT", None), table
        else:
            # Model defaults are Django's business: the database has none.
            assert (identity, default) == ("NO", None), (table, column)
    assert found == COLUMNS
    assert set(found) == set(TABLES)
    zoned = query(
        url,
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND data_type = 'timestamp without time zone'",
    )
    assert zoned == []


def test_serial_ids_as_an_older_django_made_them(fresh_postgres_url: str) -> None:
    create_schema(fresh_postgres_url, serial_ids=True)
    rows = query(
        fresh_postgres_url,
        "SELECT table_name, data_type, is_identity, column_default"
        " FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'id'",
    )
    assert {row[0] for row in rows} == set(TABLES)
    for table, kind, identity, default in rows:
        assert (kind, identity) == ("integer", "NO"), table
        assert default == f"nextval('{table}_id_seq'::regclass)"
    with ResolweDb(fresh_postgres_url) as db:
        assert db.file_storage() == 1


def test_primary_and_foreign_keys(url: str) -> None:
    primary = query(
        url,
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
        " FROM pg_constraint WHERE contype = 'p' AND connamespace = 'public'::regnamespace",
    )
    assert sorted(primary) == sorted(
        (table, f"{table}_pkey", "PRIMARY KEY (id)") for table in TABLES
    )
    foreign = query(
        url,
        "SELECT c.conrelid::regclass::text, a.attname, c.confrelid::regclass::text,"
        " f.attname, c.condeferrable, c.condeferred, c.confdeltype, c.confupdtype"
        " FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]"
        " JOIN pg_attribute f ON f.attrelid = c.confrelid AND f.attnum = c.confkey[1]"
        " WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace",
    )
    assert len(foreign) == len(FOREIGN_KEYS)
    for table, column, target, target_column, deferrable, deferred, delete, update in foreign:
        assert FOREIGN_KEYS[(table, column)] == target and target_column == "id"
        # DEFERRABLE INITIALLY DEFERRED, ON DELETE/UPDATE NO ACTION ('a').
        assert (deferrable, deferred, delete, update) == (True, True, "a", "a"), (table, column)
    named = {row[0] for row in query(url, "SELECT conname FROM pg_constraint WHERE contype='f'")}
    assert "flow_data_location_id_76c5db4f_fk_storage_filestorage_id" in named


def test_unique_constraints(url: str) -> None:
    rows = query(
        url,
        "SELECT c.conrelid::regclass::text, c.conname,"
        " array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(num, pos)"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.pos)"
        " FROM pg_constraint c WHERE c.contype = 'u' AND c.connamespace = 'public'::regnamespace",
    )
    assert {(table, tuple(columns)) for table, _, columns in rows} == UNIQUE
    assert "storage_storagelocation_url_connector_name_7f1bc7f7_uniq" in {row[1] for row in rows}


def test_indexes(url: str) -> None:
    rows = query(
        url, "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
    )
    found: dict[str, dict[str, str]] = {}
    for table, name, definition in rows:
        if name == f"{table}_pkey" or name.endswith("_uniq"):
            continue
        found.setdefault(table, {})[name] = definition.split(" USING ", 1)[1]
    assert found == INDEXES


def test_no_triggers_on_the_storage_tables(url: str) -> None:
    # Foreign keys make internal triggers only.
    assert one(url, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal") == 0


@pytest.mark.parametrize(
    "twice",
    [
        "location",
        "link",
        "data",
        "process",
    ],
)
def test_unique_constraints_refuse_duplicates(url: str, twice: str) -> None:
    with ResolweDb(url) as db:
        process = db.process("upload", "data:reads:", version="1.0.0")
        fs = db.file_storage()
        location = db.location(fs, "local")
        path = db.path("reads.fastq.gz")
        db.link(path, location)
        db.data("reads", process, fs)
    # The same url on another connector, and another version of a slug, are fine.
    with ResolweDb(url) as db:
        db.location(fs, "S3", str(fs))
        db.process("upload", "data:reads:", version="1.0.1")
        db.data("reads", process, fs, version="0.0.1")
    with pytest.raises(errors.UniqueViolation), ResolweDb(url) as db:
        if twice == "location":
            db.location(fs, "local", str(fs))
        elif twice == "link":
            db.link(path, location)
        elif twice == "data":
            db.data("reads", process, fs)
        else:
            db.process("upload", "data:other:", version="1.0.0")


def test_foreign_keys_are_checked_at_the_commit(url: str) -> None:
    db = ResolweDb(url)
    with pytest.raises(errors.ForeignKeyViolation), db:
        # Rows may name rows made later in the transaction ...
        fs = db.file_storage()
        db.data("reads", 999, fs)
        db.process("upload", "data:reads:")
        # ... but what is missing at the commit is refused.
    assert db.connection.closed
    assert one(url, "SELECT count(*) FROM storage_filestorage") == 0


def test_the_builder_writes_what_django_writes(url: str) -> None:
    with ResolweDb(url) as db:
        process = db.process("upload", "data:reads:", version="2.3.1")
        path = db.path("stdout.txt")
    assert query(url, "SELECT version FROM flow_process WHERE id = %s", process) == [
        ((2 << 24) | (3 << 14) | 1,)
    ]
    assert encode_version("0.0.0") == 0
    assert query(
        url,
        "SELECT size, md5, crc32c, awss3etag, chunk_size FROM storage_referencedpath WHERE id = %s",
        path,
    ) == [(-1, "", "", "", DEFAULT_CHUNK_SIZE)]


# -- the awkward cases ------------------------------------------------------


@pytest.fixture
def awkward(url: str) -> dict[str, Any]:
    with ResolweDb(url) as db:
        return fill_awkward(db)


def fs_ids(expected: dict[str, Any], case: str) -> list[int]:
    return [int(key.split(":")[1]) for key in expected["cases"][case]]


def test_awkward_directory_entries(url: str, awkward: dict[str, Any]) -> None:
    (fs,) = fs_ids(awkward, "directory_entries")
    rows = query(
        url,
        "SELECT DISTINCT rp.path, rp.size, rp.md5, rp.crc32c, rp.awss3etag"
        " FROM storage_referencedpath rp"
        " JOIN storage_referencedpath_storage_locations m ON m.referencedpath_id = rp.id"
        " JOIN storage_storagelocation sl ON sl.id = m.storagelocation_id"
        " WHERE sl.file_storage_id = %s AND rp.path LIKE '%%/' ORDER BY rp.path",
        fs,
    )
    assert rows == [("stats/", 0, "", "", ""), ("stats/plots/", 0, "", "", "")]


def test_awkward_unknown_sizes_and_hashes(url: str, awkward: dict[str, Any]) -> None:
    rows = query(
        url,
        "SELECT DISTINCT sl.file_storage_id, rp.path FROM storage_referencedpath rp"
        " JOIN storage_referencedpath_storage_locations m ON m.referencedpath_id = rp.id"
        " JOIN storage_storagelocation sl ON sl.id = m.storagelocation_id"
        " WHERE rp.size = -1 AND rp.md5 = '' AND rp.crc32c = '' AND rp.awss3etag = ''",
    )
    assert {fs for fs, _ in rows} == set(fs_ids(awkward, "unknown_values"))
    assert one(url, "SELECT count(*) FROM storage_referencedpath WHERE md5 IS NULL") == 0


def test_awkward_paths_shared_by_several_locations(url: str, awkward: dict[str, Any]) -> None:
    rows = query(
        url,
        "SELECT sl.file_storage_id, rp.path, array_agg(sl.connector_name ORDER BY sl.id)"
        " FROM storage_referencedpath rp"
        " JOIN storage_referencedpath_storage_locations m ON m.referencedpath_id = rp.id"
        " JOIN storage_storagelocation sl ON sl.id = m.storagelocation_id"
        " GROUP BY sl.file_storage_id, rp.id HAVING count(*) > 1",
    )
    assert {fs for fs, _, _ in rows} == set(fs_ids(awkward, "shared_paths"))
    assert {tuple(connectors) for _, _, connectors in rows} == {
        ("local", "S3"),
        ("local", UNKNOWN_CONNECTOR),
    }
    # Listing files per FileStorage therefore needs DISTINCT.
    (complete,) = fs_ids(awkward, "directory_entries")
    assert one(
        url,
        "SELECT count(*) FROM storage_referencedpath_storage_locations m"
        " JOIN storage_storagelocation sl ON sl.id = m.storagelocation_id"
        " WHERE sl.file_storage_id = %s",
        complete,
    ) == 2 * len(awkward["document"]["items"][0]["files"])


def test_awkward_several_data_rows_on_one_file_storage(url: str, awkward: dict[str, Any]) -> None:
    rows = query(
        url,
        "SELECT d.location_id, count(*), count(*) FILTER (WHERE d.duplicated IS NULL),"
        " count(DISTINCT d.slug), count(DISTINCT p.type)"
        " FROM flow_data d JOIN flow_process p ON p.id = d.process_id"
        " WHERE d.location_id IS NOT NULL GROUP BY d.location_id HAVING count(*) > 1",
    )
    by_fs = {fs: rest for fs, *rest in rows}
    duplicated, only_duplicates = (
        awkward["file_storage_ids"]["duplicated"],
        fs_ids(awkward, "only_duplicates"),
    )
    assert set(by_fs) == set(fs_ids(awkward, "several_data"))
    # An original, two duplicates with other slugs, one of another process type.
    assert by_fs[duplicated] == [3, 1, 3, 2]
    # The original is gone: duplicates only.
    assert by_fs[only_duplicates[0]] == [2, 0, 2, 1]


def test_awkward_unreferenced_file_storages(url: str, awkward: dict[str, Any]) -> None:
    rows = query(
        url,
        "SELECT fs.id, count(sl.id) FROM storage_filestorage fs"
        " LEFT JOIN flow_data d ON d.location_id = fs.id"
        " LEFT JOIN storage_storagelocation sl ON sl.file_storage_id = fs.id"
        " WHERE d.id IS NULL GROUP BY fs.id",
    )
    assert {fs for fs, _ in rows} == set(fs_ids(awkward, "unreferenced"))
    assert {fs for fs, locations in rows if locations == 0} == set(fs_ids(awkward, "no_locations"))


def test_awkward_statuses(url: str, awkward: dict[str, Any]) -> None:
    assert {row[0] for row in query(url, "SELECT status FROM storage_storagelocation")} == {
        "PR",
        "UP",
        "OK",
        "DE",
    }
    not_ok = query(
        url,
        "SELECT location_id, status FROM flow_data WHERE status <> 'OK'"
        " AND location_id IS NOT NULL ORDER BY location_id",
    )
    assert not_ok == [
        (awkward["file_storage_ids"]["processing"], "PR"),
        (awkward["file_storage_ids"]["failed"], "ER"),
    ]
    assert set(fs_ids(awkward, "data_not_ok")) == {fs for fs, _ in not_ok}


def test_awkward_access_logs(url: str, awkward: dict[str, Any]) -> None:
    rows = query(
        url,
        "SELECT sl.file_storage_id, sl.connector_name, al.finished IS NULL, al.reason,"
        " al.cause_id FROM storage_accesslog al"
        " JOIN storage_storagelocation sl ON sl.id = al.storage_location_id ORDER BY al.id",
    )
    open_on = {fs for fs, connector, is_open, _, _ in rows if is_open and connector == "local"}
    assert open_on == set(fs_ids(awkward, "open_access_log"))
    closed_on = {fs for fs, _, is_open, _, _ in rows if not is_open}
    assert closed_on == set(fs_ids(awkward, "closed_access_log"))
    for _, _, _, reason, cause in rows:
        assert reason == (
            MANAGER_LOCK_REASON if cause is None else f"Input for data with id {cause}"
        )
    assert any(connector == UNKNOWN_CONNECTOR for _, connector, *_ in rows)


def test_awkward_locations_without_files_and_unknown_connectors(
    url: str, awkward: dict[str, Any]
) -> None:
    empty = query(
        url,
        "SELECT sl.file_storage_id, sl.status FROM storage_storagelocation sl WHERE NOT EXISTS"
        " (SELECT 1 FROM storage_referencedpath_storage_locations m"
        " WHERE m.storagelocation_id = sl.id)",
    )
    assert {fs for fs, _ in empty} == set(fs_ids(awkward, "location_without_files"))
    assert {status for _, status in empty} == {"UP"}
    connectors = {
        row[0] for row in query(url, "SELECT connector_name FROM storage_storagelocation")
    }
    assert connectors - set(AWKWARD_CONNECTORS) == {UNKNOWN_CONNECTOR}


def test_awkward_data_without_location(url: str, awkward: dict[str, Any]) -> None:
    (data,) = awkward["cases"]["data_without_location"]
    assert query(url, "SELECT location_id, status FROM flow_data WHERE id = %s", data) == [
        (None, "WT")
    ]


def test_awkward_times_keep_their_instant(url: str, awkward: dict[str, Any]) -> None:
    duplicated = awkward["file_storage_ids"]["duplicated"]
    # Inserted as 2024-11-02 09:00:00.25+05:30; read in another zone.
    assert query(
        url,
        "SELECT created FROM storage_filestorage WHERE id = %s",
        duplicated,
        zone="America/Los_Angeles",
    ) == [(datetime(2024, 11, 2, 3, 30, 0, 250_000, tzinfo=UTC),)]


def test_the_expected_document_is_a_valid_import_document(awkward: dict[str, Any]) -> None:
    parsed = validate_document(awkward["document"], connectors=awkward["connectors"])
    assert [item.key for item in parsed] == [item["key"] for item in awkward["document"]["items"]]
    assert len(parsed) == len(awkward["file_storage_ids"])
    assert awkward["rules"].startswith("What a correct")


#: The reference's nested query, one row per FileStorage (resolwe-schema.md).
REFERENCE_QUERY = """
SELECT fs.id, fs.created,
  COALESCE((SELECT jsonb_agg(jsonb_build_object(
             'data_id', d.id, 'slug', d.slug, 'status', d.status, 'duplicated', d.duplicated,
             'process_type', p.type) ORDER BY d.id)
            FROM flow_data d JOIN flow_process p ON p.id = d.process_id
            WHERE d.location_id = fs.id), '[]'::jsonb),
  COALESCE((SELECT jsonb_agg(jsonb_build_object(
             'id', sl.id, 'connector_name', sl.connector_name, 'url', sl.url,
             'status', sl.status, 'last_update', sl.last_update,
             'open_access_logs', (SELECT count(*) FROM storage_accesslog al
                 WHERE al.storage_location_id = sl.id AND al.finished IS NULL),
             'files', COALESCE((SELECT jsonb_agg(jsonb_build_object(
                   'path', rp.path, 'size', rp.size, 'md5', rp.md5,
                   'crc32c', rp.crc32c, 'awss3etag', rp.awss3etag,
                   'chunk_size', rp.chunk_size) ORDER BY rp.path)
                 FROM storage_referencedpath_storage_locations m
                 JOIN storage_referencedpath rp ON rp.id = m.referencedpath_id
                 WHERE m.storagelocation_id = sl.id), '[]'::jsonb)) ORDER BY sl.id)
            FROM storage_storagelocation sl
            WHERE sl.file_storage_id = fs.id), '[]'::jsonb)
FROM storage_filestorage fs ORDER BY fs.id
"""


def utc_text(value: datetime | str) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    moment = moment.astimezone(UTC)
    fraction = f".{moment.microsecond:06d}" if moment.microsecond else ""
    return f"{moment:%Y-%m-%dT%H:%M:%S}{fraction}Z"


def derive(url: str, connectors: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
    """The import document's items and the skipped locations, by ``AWKWARD_RULES``."""
    items, skipped = [], []
    # A session zone far from UTC: the times must not depend on it.
    for fs, created, data, locations in query(url, REFERENCE_QUERY, zone="Asia/Kathmandu"):
        key = f"resolwe:{fs}"
        if data:
            originals = [row for row in data if row["duplicated"] is None]
            chosen = min(originals or data, key=lambda row: row["data_id"])
            slug, process_type, status = chosen["slug"], chosen["process_type"], chosen["status"]
        else:
            slug, process_type, status = "", "", "removed"
        files: dict[str, Any] = {}
        kept = []
        for location in locations:
            for entry in location["files"]:
                known = {
                    "size": None if entry["size"] == -1 else entry["size"],
                    "md5": entry["md5"] or None,
                    "crc32c": entry["crc32c"] or None,
                    "awss3etag": entry["awss3etag"] or None,
                }
                files[entry["path"]] = {
                    "path": entry["path"],
                    # Unknown: left out.
                    **{name: value for name, value in known.items() if value is not None},
                    "chunk_size": entry["chunk_size"],
                }
            if location["connector_name"] not in connectors:
                skipped.append(
                    {
                        "key": key,
                        "connector": location["connector_name"],
                        "url": location["url"],
                        "status": location["status"],
                    }
                )
                continue
            kept.append(
                {
                    "connector": location["connector_name"],
                    "url": location["url"],
                    "status": location["status"],
                    "last_update": utc_text(location["last_update"]),
                    "open_access_logs": location["open_access_logs"],
                }
            )
        items.append(
            {
                "key": key,
                "created": utc_text(created),
                "data_slug": slug,
                "process_type": process_type,
                "status": status,
                "locations": kept,
                "files": [files[path] for path in sorted(files)],
            }
        )
    return items, skipped


def test_the_expected_document_is_what_the_rules_derive(url: str, awkward: dict[str, Any]) -> None:
    items, skipped = derive(url, awkward["connectors"])
    assert items == awkward["document"]["items"]
    assert skipped == awkward["skipped_locations"]


# -- generated databases ----------------------------------------------------


def dump(url: str) -> str:
    """A digest of every row of every table, in id order."""
    digest = hashlib.sha256()
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        for table in TABLES:
            buffer = io.BytesIO()
            cursor.copy_expert(f"COPY (SELECT * FROM {table} ORDER BY id) TO STDOUT", buffer)
            digest.update(table.encode() + b"\0" + buffer.getvalue())
    connection.close()
    return digest.hexdigest()


def schema(url: str) -> list[tuple[Any, ...]]:
    return query(
        url,
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace"
        " UNION ALL SELECT tablename, indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = 'public' ORDER BY 1, 2, 3",
    )


@pytest.fixture
def generated(url: str) -> Iterator[tuple[str, dict[str, int]]]:
    before = schema(url)
    added = fill_generated(url, 1_000, seed=7, batch=300)
    assert schema(url) == before
    yield url, added


def test_generated_row_counts(generated: tuple[str, dict[str, int]]) -> None:
    url, added = generated
    counts = {table: one(url, f"SELECT count(*) FROM {table}") for table in TABLES}
    assert counts == added
    assert counts["storage_filestorage"] == 1_000
    assert counts["storage_referencedpath"] == 5_000
    assert counts["flow_process"] == 8
    # Every path is linked to every location but those being uploaded.
    assert counts["storage_referencedpath_storage_locations"] == 5 * one(
        url, "SELECT count(*) FROM storage_storagelocation WHERE status <> 'UP'"
    )
    assert 1_000 < counts["storage_storagelocation"] < 2_000
    assert counts["storage_accesslog"] > 0


def test_generated_rows_hold_the_awkward_cases(generated: tuple[str, dict[str, int]]) -> None:
    url, _ = generated
    facts = query(
        url,
        "SELECT"
        " (SELECT count(*) FROM storage_filestorage fs WHERE NOT EXISTS"
        "   (SELECT 1 FROM flow_data d WHERE d.location_id = fs.id)),"
        " (SELECT count(*) FROM flow_data WHERE duplicated IS NOT NULL),"
        " (SELECT count(DISTINCT status) FROM storage_storagelocation),"
        " (SELECT count(DISTINCT status) FROM flow_data),"
        " (SELECT count(*) FROM storage_referencedpath WHERE path LIKE '%%/' AND size = 0),"
        " (SELECT count(*) FROM storage_referencedpath WHERE size = -1 AND md5 = ''),"
        " (SELECT count(*) FROM storage_accesslog WHERE finished IS NULL),"
        " (SELECT count(*) FROM storage_accesslog WHERE finished IS NOT NULL),"
        " (SELECT count(*) FROM (SELECT referencedpath_id FROM"
        "   storage_referencedpath_storage_locations GROUP BY 1 HAVING count(*) > 1) shared)",
    )[0]
    unreferenced, duplicates, location_statuses, data_statuses, dirs, unknown, *rest = facts
    assert unreferenced > 0 and duplicates > 0
    assert location_statuses == 4 and data_statuses == 3
    assert dirs == 1_000 and unknown > 0
    assert all(count > 0 for count in rest)


def test_generated_ids_continue_and_the_sequences_follow(
    generated: tuple[str, dict[str, int]],
) -> None:
    url, _ = generated
    with ResolweDb(url) as db:
        assert db.file_storage() == 1_001
        assert db.path("new.txt") == 5_001
    # On top of other rows, the new ones continue after them.
    fill_generated(url, 10, seed=7)
    assert one(url, "SELECT min(id) FROM storage_filestorage WHERE id > 1001") == 1_002
    assert one(url, "SELECT count(*) FROM storage_filestorage") == 1_011


def test_generated_on_top_of_the_awkward_cases(url: str, awkward: dict[str, Any]) -> None:
    fill_generated(url, 50, seed=3)
    assert one(url, "SELECT count(*) FROM storage_filestorage") == 50 + len(
        awkward["file_storage_ids"]
    )
    items, _ = derive(url, awkward["connectors"])
    assert items[: len(awkward["document"]["items"])] == awkward["document"]["items"]


def test_generated_is_deterministic(generated: tuple[str, dict[str, int]]) -> None:
    url, _ = generated
    with (
        new_postgres_database("resolwe_storage_fresh") as same,
        new_postgres_database("resolwe_storage_fresh") as other,
    ):
        create_schema(same)
        create_schema(other)
        fill_generated(same, 1_000, seed=7)  # another batch size, the same rows
        fill_generated(other, 1_000, seed=8)
        assert dump(same) == dump(url)
        assert dump(other) != dump(url)
        assert one(other, "SELECT count(*) FROM storage_filestorage") == 1_000


def test_generated_loads_only_its_tables() -> None:
    assert set(LOADED_TABLES) == set(TABLES) - {"flow_process"}
