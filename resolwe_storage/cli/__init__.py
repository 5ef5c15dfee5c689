"""The ``resolwe-storage`` command line (SPEC §6): one module per command group.

==============  ==========================================================
module          commands
==============  ==========================================================
``base``        the ``cli`` group, its ``Context``, the shared options
``catalog``     ``migrate``, ``import``, ``status``, ``ingest``
``plan``        ``plan`` (``--explain KEY``)
``files``       ``url``, ``verify``
``jobs``        ``scan``, ``scheduler``, ``worker``, ``run``
``requests``    ``request copy``, ``request verify``
``queues``      ``queues``
``story``       ``show``, ``history``
``deletes``     ``deletes pause``, ``deletes resume``, ``deletes status``
``checks``      ``check-config``
``audit``       ``audit``
``removal``     ``remove``, ``restore``
``dashboard``   ``dashboard``
==============  ==========================================================

Each command module imports ``base`` and registers its commands on ``cli``;
``cli`` imports the module of the command a command line names, and only
that one (``base.COMMANDS``). Nothing imports this package but the entry points
(``resolwe-storage``, ``python -m resolwe_storage``, ``python -m
resolwe_storage.cli``). Every command exits non-zero with a one-line
``error: ...`` on bad input, and its ``--json`` output is machine-readable
and stable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn

import click

from catalog.errors import CatalogError
from connectors.errors import ConnectorError
from resolwe_storage.cli.base import cli, printable
from resolwe_storage.errors import UserError

__all__ = ["cli", "entry", "main"]


def _broker_unavailable() -> tuple[type[BaseException], ...]:
    """``BrokerUnavailable``, if a command loaded the broker (only then can it be raised).

    Commands that never touch the broker do not import Dramatiq and Redis
    just to name an error they cannot meet.
    """
    broker = sys.modules.get("workers.broker")
    return (broker.BrokerUnavailable,) if broker is not None else ()


def _database_error() -> tuple[type[BaseException], ...]:
    """peewee's ``DatabaseError``, if a command opened the catalog (as above)."""
    peewee = sys.modules.get("peewee")
    return (peewee.DatabaseError,) if peewee is not None else ()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the command line, turning every known error into one line."""
    try:
        code = cli.main(args=argv, prog_name="resolwe-storage", standalone_mode=False)
        if isinstance(code, int):  # click hands back an Exit's code here
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("error: aborted", err=True)
        return 1
    except click.UsageError as exc:
        click.echo(printable(f"error: {exc.format_message()}", keep="\n\t"), err=True)
        return 2
    except (UserError, CatalogError, ConnectorError) as exc:
        click.echo(printable(f"error: {exc}", keep="\n\t"), err=True)
        return 1
    except _broker_unavailable() as exc:
        click.echo(printable(f"error: {exc}", keep="\n\t"), err=True)
        return 1
    except _database_error() as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(printable(f"error: database: {first}", keep="\n\t"), err=True)
        return 1
    except BrokenPipeError:
        return 0
    return 0


def entry() -> NoReturn:
    """The process's entry point (``resolwe-storage``, ``python -m resolwe_storage``)."""
    end_process(main())


def end_process(code: int) -> NoReturn:
    """End the process with ``code`` at once, once its output, logs and catalog are out.

    Python's own exit takes every module and object apart one by one, and
    closes the catalog's connections. Measured here from the command's
    return to the process's end (medians of 8): ``status`` 28.5 ms against
    3.1 ms, ``run --once`` of 2,000 files 68 ms against 11 ms. None of that
    outlives the process but three things, done here: what the process
    wrote to an SQLite catalog is checkpointed into its file and flushed to
    disk (``catalog.database.checkpoint_opened``), as SQLite does when the
    last connection closes; the logs and the output are flushed. A
    connection to PostgreSQL or Redis ends with the process, as it would.
    ``main``, called in a process of the caller's own (the tests), does not
    end it.
    """
    database = sys.modules.get("catalog.database")
    if database is not None:
        database.checkpoint_opened()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)
