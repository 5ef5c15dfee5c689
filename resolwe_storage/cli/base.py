"""What every command shares: the ``cli`` group, its context, the common options.

Command modules register on ``cli``; the group imports the one a command
line names (``COMMANDS``).
"""

from __future__ import annotations

import importlib
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from resolwe_storage.errors import InputError
from resolwe_storage.logs import LOG_FORMATS, configure, printable  # noqa: F401  (the commands')

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


#: Every command: the module that declares it, and the line ``--help`` shows.
#: Only the module of the command that runs is imported; a test keeps this
#: table equal to the commands the modules declare.
COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("audit", "Compare the catalog with each connector's objects (all, or those named)."),
    "check-config": (
        "checks",
        "Load and validate the configuration; name every rule that can never apply.",
    ),
    "dashboard": (
        "dashboard",
        "Serve the dashboard: queues, dead letters, storage, history, an item's story.",
    ),
    "deletes": ("deletes", "Pause or resume every delete (scheduler and workers alike)."),
    "export": (
        "catalog",
        "Write every item of the catalog as an import document (or JSON Lines), in key order.",
    ),
    "history": ("story", "The action history, newest first: of item KEY, or of everything."),
    "import": (
        "catalog",
        "Register items from an import document, JSON Lines or a Resolwe database; idempotent.",
    ),
    "ingest": (
        "catalog",
        "Hash the files of DIR under a local connector and register them as one item.",
    ),
    "migrate": ("catalog", "Create or upgrade the catalog schema (also done on first use)."),
    "plan": (
        "plan",
        "List the due copies, deletes, repairs and verifications without doing anything.",
    ),
    "queues": (
        "queues",
        "Jobs per queue on Redis: queued, delayed for a retry, running, dead-lettered.",
    ),
    "remove": (
        "removal",
        "Remove the items KEY...: they count nowhere now; every copy goes after the grace.",
    ),
    "request": ("requests", "Queue work now, whatever the policies say."),
    "restore": ("removal", "Undo the removal of item KEY, while its grace lasts."),
    "run": (
        "jobs",
        "Scheduler and workers in one process (the embedded default needs no servers).",
    ),
    "scan": (
        "jobs",
        "One scheduler pass: queue every due copy, delete and verification, per file.",
    ),
    "scheduler": ("jobs", "Scan the catalog every --interval seconds and queue the due jobs."),
    "show": (
        "story",
        "The story of item KEY: its files, its copies, each file's state on them, locks, history.",
    ),
    "status": (
        "catalog",
        "Items by status; locations per connector and status; damaged copies, lost items.",
    ),
    "url": (
        "files",
        "Print a URL of one file of an item: public, or presigned, from its preferred copy.",
    ),
    "verify": ("files", "Re-hash an item's copies against the catalog; report every mismatch."),
    "worker": (
        "jobs",
        "Run jobs from the broker until stopped (SIGTERM lets running jobs finish).",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported when named (``COMMANDS``), not all at start-up.

    ``--help`` lists them from the table, importing none: a command module
    brings its own dependencies (peewee, the planner, the dashboard's
    server), and a command should pay only for its own.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"resolwe_storage.cli.{COMMANDS[cmd_name][0]}")
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, _shortened(COMMANDS[name][1], limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _shortened(line: str, limit: int) -> str:
    """``line`` cut at a word to fit ``limit`` characters, as click shortens a command's help."""
    if len(line) <= limit:
        return line
    return line[: max(0, limit - 3)].rsplit(" ", 1)[0] + "..."


def load_all_commands() -> dict[str, click.Command]:
    """Every command, its module imported (for tests and tools that walk them all)."""
    for module in sorted({module for module, _ in COMMANDS.values()}):
        importlib.import_module(f"resolwe_storage.cli.{module}")
    return cli.commands


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
