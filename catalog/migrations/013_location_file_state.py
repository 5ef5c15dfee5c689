"""A copy's state from its files' rows without reading them all.

``catalog.integrity.settle`` runs after every job that records files of a
location (each verification, repair, confirmation). It aggregated every row
of the location to learn whether one is bad or unverified and the least
recently verified time, so the jobs of one item of many files cost more the
further along they were. One item of 50,000 files verified in 391 jobs of
128 (one worker process and thread): 36-52 s on SQLite, 44-55 s the next
time; 14-23 s and 14-19 s with these. On PostgreSQL 62 and 68 s, then 26
and 25 s.

- two indexes: the bad rows of a location (few: a partial index) and its
  rows by verification time, so each answer is the first entry found;
- ``storage_location.files_recorded``: whether every file of the item has a
  row there, as settle last found. Proving it reads every file; once known,
  the jobs of a verification that follow need not.
"""

INDEXES = {
    "location_file_verified": "ON location_file (storage_location_id, verified)",
    "location_file_problem": "ON location_file (storage_location_id) WHERE problem IS NOT NULL",
}


def migrate(migrator, database, *, fake=False):
    migrator.sql(
        "ALTER TABLE storage_location ADD COLUMN files_recorded BOOLEAN NOT NULL DEFAULT FALSE"
    )
    for name, definition in INDEXES.items():
        migrator.sql(f"CREATE INDEX IF NOT EXISTS {name} {definition}")


def rollback(migrator, database, *, fake=False):
    for name in INDEXES:
        migrator.sql(f"DROP INDEX IF EXISTS {name}")
    migrator.sql("ALTER TABLE storage_location DROP COLUMN files_recorded")
