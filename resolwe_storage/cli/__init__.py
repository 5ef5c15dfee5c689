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

import sys

import click

from catalog.errors import CatalogError
from connectors.errors import ConnectorError
from resolwe_storage.cli.base import cli
from resolwe_storage.errors import UserError

__all__ = ["cli", "main"]


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
        click.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except (UserError, CatalogError, ConnectorError) as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except _broker_unavailable() as exc:
        click.echo(f"error: {exc}", err=True)
        return 1
    except _database_error() as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"error: database: {first}", err=True)
        return 1
    except BrokenPipeError:
        return 0
    return 0
