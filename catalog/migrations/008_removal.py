"""Item removal: when the producer said an item is gone (the original's unreferenced items).

A removed item stops counting anywhere; after the configured grace the
scheduler deletes every copy of it, then its catalog rows (its history stays).
"""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("file_storage", removed=pw.DateTimeField(null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("file_storage", "removed")
