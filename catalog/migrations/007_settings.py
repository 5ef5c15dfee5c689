"""Operator switches kept in the catalog (deletes paused, ...), seen by every process."""

import datetime

import peewee as pw


def _now():
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


def migrate(migrator, database, *, fake=False):
    @migrator.create_model
    class Setting(pw.Model):
        name = pw.TextField(primary_key=True)
        value = pw.TextField()
        note = pw.TextField(default="")
        updated = pw.DateTimeField(default=_now)

        class Meta:
            table_name = "setting"


def rollback(migrator, database, *, fake=False):
    migrator.remove_model("setting")
