"""An item's import digest: a re-import passes over an item whose text it read last time.

``file_storage.import_digest`` holds a digest of the item's text in the
document that last imported it (``catalog.streaming``); an item of a later
import with the same digest is neither checked nor compared again.
"""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("file_storage", import_digest=pw.CharField(max_length=32, null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("file_storage", "import_digest")
