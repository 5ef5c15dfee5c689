"""Integrity: per-file state on each copy, and damaged copies (``DM``).

A copy counts only while every file of its item is recorded on it as good
(``catalog.integrity``). Until now a file's row meant "copied and proven",
an imported copy had no rows at all, and a verification that found a file
damaged only cleared its ``verified`` time, so the copy kept counting.

This migration:

1. adds ``location_file.problem`` (why a file is not good there; null: it
   is) and ``problem_found``;
2. gives every file of every ``OK`` copy that has no row one, as asserted
   by the import that registered it (``validated_by = 'asserted'``, verified
   when the copy was);
3. marks *suspect* the files that a recorded verification found bad (or
   could not read) and that no later verification found good: the
   verification cleared their ``verified`` time and left a ``failed`` row in
   the history; repair re-checks them against a good copy (and keeps what is
   there when its hash proves it right);
4. makes every ``OK`` copy with such a file damaged (``DM``);
5. indexes damaged copies, which ``status``, ``plan`` and repair look for.
"""

import datetime

import peewee as pw

SUSPECT = (
    "suspect: a verification before the integrity upgrade found it damaged or could not read it"
)


def _now():
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _fill_and_mark(database):
    is_sqlite = isinstance(database, pw.SqliteDatabase)
    mark = database.param
    now = _now()
    database.execute_sql(
        "INSERT INTO location_file"
        " (storage_location_id, referenced_path_id, copied, validated_by, verified)"
        " SELECT l.id, r.id, l.last_update, 'asserted', l.last_verified"
        " FROM storage_location AS l"
        " JOIN referenced_path AS r ON r.file_storage_id = l.file_storage_id"
        f" WHERE l.status = 'OK' AND r.path NOT LIKE {mark}"
        " AND NOT EXISTS (SELECT 1 FROM location_file AS lf"
        " WHERE lf.storage_location_id = l.id AND lf.referenced_path_id = r.id)",
        ("%/",),
    )
    database.execute_sql(
        f"UPDATE location_file SET problem = {mark}, problem_found = {mark}"
        " WHERE verified IS NULL AND EXISTS (SELECT 1 FROM storage_location AS l"
        " JOIN action AS a ON a.file_storage_id = l.file_storage_id"
        " AND a.target = l.connector_name"
        " WHERE l.id = location_file.storage_location_id AND l.status = 'OK'"
        " AND a.action = 'verify' AND a.result = 'failed'"
        " AND a.started >= location_file.copied)",
        (SUSPECT, str(now) if is_sqlite else now),
    )
    database.execute_sql(
        "UPDATE storage_location SET status = 'DM' WHERE status = 'OK' AND EXISTS"
        " (SELECT 1 FROM location_file AS lf WHERE lf.storage_location_id = storage_location.id"
        " AND lf.problem IS NOT NULL)"
    )


def migrate(migrator, database, *, fake=False):
    migrator.add_fields(
        "location_file",
        problem=pw.TextField(null=True),
        problem_found=pw.DateTimeField(null=True),
    )
    migrator.run(_fill_and_mark, database)
    migrator.sql(
        "CREATE INDEX storage_location_damaged ON storage_location (file_storage_id)"
        " WHERE status = 'DM'"
    )


def rollback(migrator, database, *, fake=False):
    migrator.sql("DROP INDEX IF EXISTS storage_location_damaged")
    migrator.sql("UPDATE storage_location SET status = 'OK' WHERE status = 'DM'")
    migrator.sql("DELETE FROM location_file WHERE validated_by = 'asserted'")
    migrator.remove_fields("location_file", "problem", "problem_found")
