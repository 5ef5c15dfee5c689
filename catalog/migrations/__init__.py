"""Versioned schema migrations, applied in file-name order by peewee-migrate.

Each file is frozen: it declares the tables as they were at that version and
never imports ``catalog.models``, so later model changes cannot rewrite history.
"""
