"""Initial catalog schema: items, locations, files, access logs, action history."""

import datetime

import peewee as pw


def _now():
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def migrate(migrator, database, *, fake=False):
    @migrator.create_model
    class FileStorage(pw.Model):
        id = pw.BigAutoField()
        key = pw.TextField(null=True, unique=True)
        data_slug = pw.TextField(default="")
        process_type = pw.TextField(default="")
        status = pw.TextField(default="OK")
        created = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "file_storage"

    @migrator.create_model
    class StorageLocation(pw.Model):
        id = pw.BigAutoField()
        file_storage = pw.ForeignKeyField(FileStorage, on_delete="CASCADE")
        connector_name = pw.TextField()
        url = pw.TextField()
        status = pw.CharField(max_length=2, default="PR")
        last_update = pw.DateTimeField(default=_now)
        last_verified = pw.DateTimeField(null=True)

        class Meta:
            table_name = "storage_location"
            indexes = (
                (("connector_name", "url"), True),
                (("file_storage", "connector_name", "status"), False),
                (("connector_name", "status", "last_update"), False),
            )

    @migrator.create_model
    class ReferencedPath(pw.Model):
        id = pw.BigAutoField()
        file_storage = pw.ForeignKeyField(FileStorage, on_delete="CASCADE")
        path = pw.TextField()
        size = pw.BigIntegerField(null=True)
        md5 = pw.TextField(null=True)
        crc32c = pw.TextField(null=True)
        awss3etag = pw.TextField(null=True)
        chunk_size = pw.BigIntegerField(default=8 * 1024 * 1024)

        class Meta:
            table_name = "referenced_path"
            indexes = ((("file_storage", "path"), True),)

    @migrator.create_model
    class AccessLog(pw.Model):
        id = pw.BigAutoField()
        storage_location = pw.ForeignKeyField(StorageLocation, on_delete="CASCADE")
        started = pw.DateTimeField(default=_now)
        finished = pw.DateTimeField(null=True)
        reason = pw.TextField(default="")

        class Meta:
            table_name = "access_log"

    @migrator.create_model
    class Action(pw.Model):
        id = pw.BigAutoField()
        started = pw.DateTimeField(default=_now)
        finished = pw.DateTimeField(null=True)
        actor = pw.TextField()
        action = pw.TextField()
        item_key = pw.TextField(null=True)
        file_storage = pw.ForeignKeyField(FileStorage, null=True, on_delete="SET NULL")
        source = pw.TextField(null=True)
        target = pw.TextField(null=True)
        path = pw.TextField(null=True)
        result = pw.TextField(default="ok")
        bytes = pw.BigIntegerField(null=True)
        duration_ms = pw.IntegerField(null=True)
        error = pw.TextField(null=True)

        class Meta:
            table_name = "action"
            indexes = ((("item_key", "started"), False),)

    # Open access logs are the locks every delete decision looks for; they are
    # few among many finished ones, so index only those.
    migrator.sql(
        "CREATE INDEX access_log_open ON access_log (storage_location_id) WHERE finished IS NULL"
    )
    if isinstance(database, pw.PostgresqlDatabase):
        # Byte order for keys, as on SQLite, so both list plans in one order.
        migrator.sql('ALTER TABLE file_storage ALTER COLUMN key TYPE text COLLATE "C"')


def rollback(migrator, database, *, fake=False):
    for table in ("action", "access_log", "referenced_path", "storage_location", "file_storage"):
        migrator.sql(f"DROP TABLE IF EXISTS {table}")
