"""Per-location file state: which files of a location are there and proven.

Copies are made one file per job; each validated file gets a row here, and
the location becomes OK when every file of its item has one.
"""

import datetime

import peewee as pw


def _now():
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def migrate(migrator, database, *, fake=False):
    location_model = migrator.orm["storage_location"]
    path_model = migrator.orm["referenced_path"]

    @migrator.create_model
    class LocationFile(pw.Model):
        id = pw.BigAutoField()
        storage_location = pw.ForeignKeyField(location_model, on_delete="CASCADE", index=False)
        referenced_path = pw.ForeignKeyField(path_model, on_delete="CASCADE")
        copied = pw.DateTimeField(default=_now)
        validated_by = pw.TextField()

        class Meta:
            table_name = "location_file"
            indexes = ((("storage_location", "referenced_path"), True),)


def rollback(migrator, database, *, fake=False):
    migrator.remove_model("location_file")
