"""The ``resolwe-storage`` command line (SPEC §6).

Every command exits non-zero with a one-line ``error: ...`` on bad input, and
its ``--json`` output is machine-readable and stable.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click
import peewee as pw

from catalog.errors import CatalogError
from catalog.importing import import_document, parse_time
from catalog.models import utcnow
from catalog.queries import item_by_key, status_summary
from connectors.errors import ConnectorError
from resolwe_storage.config import Config, load_config
from resolwe_storage.errors import InputError, UserError
from resolwe_storage.planout import write_plan_json, write_plan_table
from resolwe_storage.runtime import open_catalog
from scheduler.planning import Planner, item_facts
from scheduler.policy import explain, fmt_time, lost_files


class Context:
    """What every command shares: the configuration, and the catalog once opened."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None
        self._database: pw.Database | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    @property
    def database(self) -> pw.Database:
        if self._database is None:
            self._database = open_catalog(self.config.database)
        return self._database

    def open_unmigrated(self) -> pw.Database:
        """The catalog, opened and bound but not migrated (for ``migrate`` itself)."""
        if self._database is None:
            self._database = open_catalog(self.config.database, auto_migrate=False)
        return self._database


pass_context = click.make_pass_decorator(Context)


def _now_option(func: Any) -> Any:
    return click.option(
        "--now",
        "now",
        metavar="ISO-8601",
        help="Evaluate the policies at this time instead of the current one (UTC if no zone).",
    )(func)


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return utcnow()
    try:
        return parse_time(value)
    except ValueError as exc:
        raise InputError(f"--now: {exc}") from None


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
@click.version_option(package_name="resolwe-storage")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, log_level: str) -> None:
    """Resolwe storage: a catalog of data copies and the policies that move them."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    ctx.obj = Context(config_path)


@cli.command()
@pass_context
def migrate(context: Context) -> None:
    """Create or upgrade the catalog schema (also done on first use)."""
    from catalog.database import migrate as run_migrations

    applied = run_migrations(context.open_unmigrated())
    if applied:
        click.echo(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        click.echo("the catalog schema is up to date")


@cli.command("import")
@click.argument("source", metavar="FILE|-")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_context
def import_command(context: Context, source: str, as_json: bool) -> None:
    """Register items from a JSON import document; idempotent by key."""
    document = _read_json(source)
    config = context.config
    result = import_document(document, connectors=set(config.connectors), database=context.database)
    if as_json:
        click.echo(json.dumps(result.as_json()))
    else:
        click.echo(
            f"imported: {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged"
        )


def _read_json(source: str) -> Any:
    name = "standard input" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory") from None
    except UnicodeDecodeError:
        raise InputError(f"{name}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


@cli.command()
@_now_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (SPEC §6 shapes).")
@click.option(
    "--explain", "explain_key", metavar="KEY", help="Explain every decision for one item."
)
@pass_context
def plan(context: Context, now: str | None, as_json: bool, explain_key: str | None) -> None:
    """List the due copies, deletes, repairs and verifications without doing anything.

    Items with a file that has no good copy anywhere (lost) are named on
    stderr, whatever the output.
    """
    moment = _parse_now(now)
    policies = context.config.policies
    if explain_key is not None:
        _explain(context, explain_key, moment, as_json)
        return
    items = Planner(policies, context.database).due(now=moment)
    out = sys.stdout
    if as_json:
        write_plan_json(out, items)
        out.flush()
        _warn_lost()
        return
    counts = write_plan_table(out, items, width=max((len(n) for n in policies), default=6))
    out.flush()
    total = sum(counts.values())
    detail = ", ".join(f"{counts[name]} {name}" for name in sorted(counts))
    click.echo(f"{total} due action(s){': ' + detail if detail else ''}", err=True)
    _warn_lost()


def _warn_lost() -> None:
    """Name on stderr the items with a file that is good nowhere (SPEC §3 "lost")."""
    from catalog.integrity import describe_lost, keys_of, lost_files

    lost = lost_files()
    if lost:
        shown = dict(list(lost.items())[:10])
        more = f" and {len(lost) - len(shown)} more" if len(lost) > len(shown) else ""
        click.echo(
            f"warning: LOST: {len(lost)} item(s) with a file that has no good copy anywhere, "
            f"nothing of them is deleted: {describe_lost(shown, keys_of(shown))}{more}",
            err=True,
        )


def _explain(context: Context, key: str, now: datetime, as_json: bool) -> None:
    with context.database.atomic():
        facts = item_facts(item_by_key(key))
    decisions = explain(facts, context.config.policies, now=now)
    lost = lost_files(facts)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "key": key,
                    "now": fmt_time(now),
                    "locations": [
                        {
                            "connector": loc.connector,
                            "status": loc.status,
                            "damaged_files": sorted(loc.damaged_files),
                        }
                        for loc in facts.locations
                    ],
                    "lost": lost,
                    "decisions": [
                        {
                            "action": d.action,
                            "connector": d.connector,
                            "due": d.due,
                            "rule": d.rule or None,
                            "source": d.source,
                            "conditions": [
                                {"name": c.name, "holds": c.holds, "detail": c.detail}
                                for c in d.conditions
                            ],
                        }
                        for d in decisions
                    ],
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"item {key!r}: status {facts.status}, data_slug {facts.data_slug!r}, "
        f"process_type {facts.process_type!r}, created {fmt_time(facts.created)}"
    )
    for loc in facts.locations:
        click.echo(
            f"  location on {loc.connector}: {loc.status}, last_update "
            f"{fmt_time(loc.last_update)}, {loc.open_access_logs} open access log(s)"
            + (f", damaged: {', '.join(sorted(loc.damaged_files))}" if loc.damaged_files else "")
        )
    if lost:
        click.echo(f"  LOST: no good copy anywhere of {', '.join(lost)}")
    if not decisions:
        click.echo("no connectors are configured")
    for decision in decisions:
        verdict = "DUE" if decision.due else "not due"
        rule = f" ({decision.rule})" if decision.rule else ""
        click.echo(f"{decision.action} {decision.connector}: {verdict}{rule}")
        for condition in decision.conditions:
            mark = "yes" if condition.holds else "NO "
            click.echo(f"  [{mark}] {condition.name}: {condition.detail}")


#: What the location status codes mean, for ``status``.
LOCATION_STATES = {
    "PR": "preparing",
    "UP": "uploading",
    "OK": "ok",
    "DE": "deleting",
    "DM": "damaged",
}


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_context
def status(context: Context, as_json: bool) -> None:
    """Items by status; locations per connector and status; damaged copies, lost items."""
    with context.database.atomic():
        summary = status_summary()
    unknown = sorted(set(summary["locations"]) - set(context.config.connectors))
    summary["unconfigured_connectors"] = unknown
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    items = summary["items"]
    by_status = ", ".join(f"{s} {n}" for s, n in items["by_status"].items()) or "none"
    click.echo(f"items: {items['total']} ({by_status})")
    names = sorted(set(context.config.connectors) | set(summary["locations"]))
    for name in names:
        counts = summary["locations"].get(name, {})
        detail = (
            ", ".join(f"{s} {n} ({LOCATION_STATES.get(s, s)})" for s, n in counts.items())
            or "no locations"
        )
        flag = "  (not in the configuration)" if name in unknown else ""
        click.echo(f"  {name}: {detail}{flag}")
    if summary["damaged_locations"]:
        click.echo(
            f"damaged copies: {summary['damaged_locations']} (not counted; repaired by the scan)"
        )
    click.echo(f"open access logs: {summary['open_access_logs']}")
    if summary["lost_items"]:
        shown = "; ".join(
            f"{lost['key']} ({', '.join(lost['files'][:3])}"
            + (f" and {len(lost['files']) - 3} more)" if len(lost["files"]) > 3 else ")")
            for lost in summary["lost"][:10]
        )
        more = summary["lost_items"] - min(len(summary["lost"]), 10)
        click.echo(
            f"LOST: {summary['lost_items']} item(s) with a file that has no good copy anywhere: "
            f"{shown}{f' and {more} more' if more > 0 else ''}"
        )


@cli.command()
@click.argument("connector")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--key", required=True, help="The item's unique key.")
@click.option("--slug", "data_slug", default="", help="The item's data slug.")
@click.option("--process-type", default="", help="The item's process type, e.g. data:reads:")
@click.option("--json", "as_json", is_flag=True, help="Print the registered item as JSON.")
@pass_context
def ingest(
    context: Context,
    connector: str,
    directory: Path,
    key: str,
    data_slug: str,
    process_type: str,
    as_json: bool,
) -> None:
    """Hash the files of DIR under a local connector and register them as one item."""
    from resolwe_storage.ingest import ingest_directory

    summary = ingest_directory(
        context.config,
        context.database,
        connector=connector,
        directory=directory,
        key=key,
        data_slug=data_slug,
        process_type=process_type,
        progress=sys.stderr.isatty(),
    )
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(
            f"ingested {summary['files']} file(s), {summary['bytes']} bytes, as item "
            f"{key!r} on {connector}:{summary['url']} ({summary['result']})"
        )


@cli.command()
@click.argument("key")
@click.argument("path")
@click.option(
    "--expires",
    type=click.IntRange(min=1, max=7 * 24 * 3600),
    default=3600,
    show_default=True,
    help="Lifetime of a presigned URL, in seconds.",
)
@click.option("--connector", "connector_name", help="Use this connector's copy, not the preferred.")
@pass_context
def url(context: Context, key: str, path: str, expires: int, connector_name: str | None) -> None:
    """Print a URL of one file of an item: public, or presigned, from its preferred copy."""
    from resolwe_storage.urls import file_url

    context.database  # noqa: B018 - opened (and bound) before any query
    click.echo(file_url(context.config, key, path, expires=expires, connector=connector_name))


@cli.command()
@click.argument("key")
@click.option("--connector", "connector_name", help="Verify only the copy on this connector.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@_now_option
@pass_context
def verify(
    context: Context, key: str, connector_name: str | None, as_json: bool, now: str | None
) -> None:
    """Re-hash an item's copies against the catalog; report every mismatch.

    Its copies that count, and its damaged ones: a damaged copy found whole
    again counts again. Exit 1 when a file is not as the catalog says.
    """
    from resolwe_storage.storage import connector_named
    from resolwe_storage.urls import ok_copies
    from workers.verify import verify_location

    moment = _parse_now(now)
    if connector_name is not None and connector_name not in context.config.connectors:
        connector_named(context.config, connector_name)  # raises, naming the choices
    with context.database.atomic():
        _, locations = ok_copies(context.config, key, damaged=True)
    if connector_name is not None:
        locations = [loc for loc in locations if loc.connector_name == connector_name]
    if not locations:
        where = f" on {connector_name!r}" if connector_name else ""
        raise InputError(f"item {key!r} has no OK or damaged copy{where} to verify")
    reports = []
    for loc in locations:
        try:
            reports.append(
                verify_location(
                    loc, connector_named(context.config, loc.connector_name), now=moment
                )
            )
        except ConnectorError as exc:
            raise InputError(
                f"{loc.connector_name}: could not verify (nothing concluded): {exc}"
            ) from None
    if as_json:
        click.echo(json.dumps([report.as_json() for report in reports], indent=2))
    else:
        for report in reports:
            verdict = "ok" if report.ok else f"{len(report.problems)} problem(s), damaged"
            click.echo(
                f"{report.connector}:{report.url}: {report.files} file(s), "
                f"{report.bytes} bytes: {verdict}"
            )
            for problem in report.problems:
                click.echo(f"  {problem.path}: {problem.problem}")
    bad = [report for report in reports if not report.ok]
    lost = reports[-1].lost if reports else []
    if bad or lost:
        problems = sum(len(report.problems) for report in bad)
        message = f"{problems} problem(s) in {len(bad)} copy(ies)"
        if lost:
            message += f"; item {key!r} is LOST: no good copy anywhere of {', '.join(lost[:5])}"
            message += f" and {len(lost) - 5} more" if len(lost) > 5 else ""
        raise UserError(message)


# The job commands (scan, scheduler, worker, run, request) register themselves on ``cli``.
from resolwe_storage import cli_jobs as _cli_jobs  # noqa: E402, F401


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
    except pw.DatabaseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"error: database: {first}", err=True)
        return 1
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
