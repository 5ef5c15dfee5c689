"""Start-up wiring: open the catalog database, bind the models, migrate on first use."""

from __future__ import annotations

import peewee as pw

from catalog.database import bind, migrate, open_database, redact_url


def open_catalog(url: str, *, auto_migrate: bool = True) -> pw.Database:
    """Open the catalog at ``url``, bind the models to it, and bring its schema up to date."""
    database = open_database(url)
    try:
        database.connect(reuse_if_open=True)
    except (pw.OperationalError, pw.InterfaceError, pw.ProgrammingError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise pw.OperationalError(f"cannot open {redact_url(url)}: {detail}") from None
    bind(database)
    if auto_migrate:
        migrate(database)
    return database
