"""What every command shares: the ``cli`` group, its context, the common options.

Command modules register on ``cli``; ``resolwe_storage.cli`` imports them all.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from resolwe_storage.errors import InputError
from resolwe_storage.logs import LOG_FORMATS, configure

if TYPE_CHECKING:
    import peewee as pw

    from resolwe_storage.config import Config

# What a command needs is imported when it runs: ``--help`` and the commands
# that only read the catalog start without the configuration's validators,
# the migrations, or the workers' stack (``tests/unit/resolwe_storage/test_startup.py``).

logger = logging.getLogger("resolwe_storage")


class Context:
    """What every command shares: the configuration, and the catalog once opened."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._database: pw.Database | None = None
        self._warned = False
        #: ``--log-format``: text, or json for a log collector.
        self.log_format = "text"

    @property
    def config(self) -> Config:
        if self._config is None:
            from resolwe_storage.config import load_config

            self._config = load_config(self.config_path)
        return self._config

    @property
    def database(self) -> pw.Database:
        if self._database is None:
            from resolwe_storage.wiring import open_catalog

            self._database = open_catalog(self.config.database)
        return self._database

    def warn_ineffective_rules(self) -> None:
        """Log, once, each rule of the configuration that can never apply (``check-config``)."""
        if self._warned:
            return
        self._warned = True
        from scheduler.rules import ineffective_rules

        for warning in ineffective_rules(self.config.policies):
            logger.warning("configuration: %s", warning)

    def open_unmigrated(self) -> pw.Database:
        """The catalog, opened and bound but not migrated (for ``migrate`` itself)."""
        if self._database is None:
            from resolwe_storage.wiring import open_catalog

            self._database = open_catalog(self.config.database, auto_migrate=False)
        return self._database


pass_context = click.make_pass_decorator(Context)


def now_option(func: Any) -> Any:
    return click.option(
        "--now",
        "now",
        metavar="ISO-8601",
        help="Evaluate the policies at this time instead of the current one (UTC if no zone).",
    )(func)


def parse_now(value: str | None, *, option: str = "--now") -> datetime:
    """``value`` (ISO-8601, UTC without a zone) as a time; now for None; errors name ``option``."""
    if value is None:
        from catalog.models import utcnow

        return utcnow()
    try:
        from catalog.importing import parse_time

        return parse_time(value)
    except ValueError as exc:
        raise InputError(f"{option}: {exc}") from None


#: What the location status codes mean.
LOCATION_STATES = {
    "PR": "preparing",
    "UP": "uploading",
    "OK": "ok",
    "DE": "deleting",
    "DM": "damaged",
}


#: Levels ``--log-level`` takes.
LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    envvar="RESOLWE_STORAGE_CONFIG",
    help="Configuration file (YAML, TOML or JSON); also $RESOLWE_STORAGE_CONFIG.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="warning",
    show_default=True,
    envvar="RESOLWE_STORAGE_LOG_LEVEL",
    help="What goes to stderr: info tells of every job; also $RESOLWE_STORAGE_LOG_LEVEL.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default="text",
    show_default=True,
    envvar="RESOLWE_STORAGE_LOG_FORMAT",
    help="Lines of text, or one JSON object per line for log collectors; "
    "also $RESOLWE_STORAGE_LOG_FORMAT.",
)
@click.version_option(package_name="resolwe-storage")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str, log_format: str) -> None:
    """Resolwe storage: a catalog of data copies and the policies that move them."""
    configure(log_level, log_format.lower())
    ctx.obj = Context(config_path)
    ctx.obj.log_format = log_format.lower()


def broker_url(context: Context, command: str) -> str:
    url = context.config.broker
    if url is None:
        raise InputError(
            f"{command} needs a broker that workers share: set broker: redis://... "
            "(or RESOLWE_STORAGE_BROKER); `run` works in one process without one"
        )
    return url
