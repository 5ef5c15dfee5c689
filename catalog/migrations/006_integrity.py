"""Integrity: per-file state on each copy, and damaged copies (``DM``).

A copy counts only while every file of its item is good on it
(``catalog.integrity``). Until now a verification that found a file damaged
only cleared its row's ``verified`` time (or, on an imported copy without
rows, recorded nothing of it), and the copy kept counting.

This migration:

1. adds ``location_file.problem`` (why a file is not good there; null: it
   is) and ``problem_found``;
2. marks *suspect* the files of ``OK`` copies that a recorded verification
   found bad (or could not read) and that no later verification found good:
   rows whose ``verified`` time the failed verification cleared, and, on a
   copy it failed on, files with no row at all; repair re-checks them
   against a good copy (and keeps what is there when its hash proves it
   right), or a verification finds them good;
3. makes every ``OK`` copy with such a file damaged (``DM``);
4. indexes damaged copies, which ``status``, ``plan`` and repair look for.

Files of imported copies keep having no row: the import asserted them.
"""

import datetime

import peewee as pw

SUSPECT = (
    "suspect: a verification before the integrity upgrade found it damaged or could not read it"
)


def _now():
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def _mark_suspects(database):
    is_sqlite = isinstance(database, pw.SqliteDatabase)
    mark = database.param
    now = _now()
    stamp = str(now) if is_sqlite else now
    failed = (
        "SELECT 1 FROM action AS a WHERE a.action = 'verify' AND a.result = 'failed'"
        " AND a.file_storage_id = l.file_storage_id AND a.target = l.connector_name"
    )
    database.execute_sql(
        f"UPDATE location_file SET problem = {mark}, problem_found = {mark}"
        " WHERE verified IS NULL AND EXISTS (SELECT 1 FROM storage_location AS l"
        f" WHERE l.id = location_file.storage_location_id AND l.status = 'OK'"
        f" AND EXISTS ({failed} AND a.started >= location_file.copied))",
        (SUSPECT, stamp),
    )
    database.execute_sql(
        "INSERT INTO location_file (storage_location_id, referenced_path_id, copied,"
        " validated_by, verified, problem, problem_found)"
        f" SELECT l.id, r.id, {mark}, '', NULL, {mark}, {mark}"
        " FROM storage_location AS l"
        " JOIN referenced_path AS r ON r.file_storage_id = l.file_storage_id"
        f" WHERE l.status = 'OK' AND r.path NOT LIKE {mark}"
        " AND NOT EXISTS (SELECT 1 FROM location_file AS lf"
        " WHERE lf.storage_location_id = l.id AND lf.referenced_path_id = r.id)"
        f" AND EXISTS ({failed})",
        (stamp, SUSPECT, stamp, "%/"),
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
    migrator.run(_mark_suspects, database)
    migrator.sql(
        "CREATE INDEX storage_location_damaged ON storage_location (file_storage_id)"
        " WHERE status = 'DM'"
    )


def rollback(migrator, database, *, fake=False):
    migrator.sql("DROP INDEX IF EXISTS storage_location_damaged")
    migrator.sql("UPDATE storage_location SET status = 'OK' WHERE status = 'DM'")
    migrator.sql("DELETE FROM location_file WHERE problem IS NOT NULL AND validated_by = ''")
    migrator.remove_fields("location_file", "problem", "problem_found")
