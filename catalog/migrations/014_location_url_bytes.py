"""Locations' urls compared byte by byte on PostgreSQL, as on SQLite, by their index too.

An import refuses a location inside or around another item's (a delete of
one copy would remove the other's files): the urls under ``u`` are those in
the range ``u/`` to ``u0`` (``0`` follows ``/``) in byte order, one probe of
the (connector_name, url) index (``catalog.queries.locations_at``).
In a database whose collation is a language's (``en_US.UTF-8``), that
order is not bytes' (punctuation weighs less than letters): the range missed
urls under ``u``, and a comparison ``COLLATE "C"`` could not use the index.
Equality, and so the unique index's meaning, is the same in both.
"""

import peewee as pw


def migrate(migrator, database, *, fake=False):
    if isinstance(database, pw.PostgresqlDatabase):
        migrator.sql('ALTER TABLE storage_location ALTER COLUMN url TYPE text COLLATE "C"')


def rollback(migrator, database, *, fake=False):
    if isinstance(database, pw.PostgresqlDatabase):
        migrator.sql('ALTER TABLE storage_location ALTER COLUMN url TYPE text COLLATE "default"')
