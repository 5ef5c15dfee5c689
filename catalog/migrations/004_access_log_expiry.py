"""Access logs that end by themselves: a worker's lock lasts no longer than its job.

A worker locks the source of a copy (and a copy it verifies) with an access
log that it closes when the job ends. A worker killed meanwhile never does,
and the location would stay locked, never deleted, for good. Such logs carry
``expires`` (the job's time limit, and a margin): once past, the scan closes
them. Locks taken by other services (``expires`` null) never expire.
"""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("access_log", expires=pw.DateTimeField(null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("access_log", "expires")
