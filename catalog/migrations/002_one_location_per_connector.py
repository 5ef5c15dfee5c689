"""At most one location per item and connector, as an index the planner relies on.

The import already refused a second location of an item on one connector;
now the database does too. The planner's per-item sums of per-connector bit
fields (``scheduler.planning``) are exact only because of it. The unique
index also serves every lookup by (item, connector), so the two indexes it
makes redundant go.
"""

import peewee as pw  # noqa: F401


def migrate(migrator, database, *, fake=False):
    migrator.sql(
        "CREATE UNIQUE INDEX storage_location_one_per_connector"
        " ON storage_location (file_storage_id, connector_name)"
    )
    migrator.sql("DROP INDEX IF EXISTS storagelocation_file_storage_id_connector_name_status")
    migrator.sql("DROP INDEX IF EXISTS storagelocation_file_storage_id")


def rollback(migrator, database, *, fake=False):
    migrator.sql(
        "CREATE INDEX storagelocation_file_storage_id ON storage_location (file_storage_id)"
    )
    migrator.sql(
        "CREATE INDEX storagelocation_file_storage_id_connector_name_status"
        " ON storage_location (file_storage_id, connector_name, status)"
    )
    migrator.sql("DROP INDEX IF EXISTS storage_location_one_per_connector")
