"""Verification per file: when each file of a location was last found intact.

Verifications are queued per file (small files sharing a job), as copies
are; each job records its files here, and a location's ``last_verified``
is that of its least recently verified file, once every file has been.
"""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("location_file", verified=pw.DateTimeField(null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("location_file", "verified")
