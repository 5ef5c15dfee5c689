"""An item's files: ``url`` of one, ``verify`` its copies."""

from __future__ import annotations

import json

import click

from connectors.errors import ConnectorError
from resolwe_storage.cli.base import Context, cli, now_option, parse_now, pass_context
from resolwe_storage.errors import InputError, UserError


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
    from resolwe_storage.wiring import configured

    if connector_name is not None:
        configured(context.config, connector_name)  # as verify: one line naming the choices
    context.database  # noqa: B018 - opened (and bound) before any query
    click.echo(file_url(context.config, key, path, expires=expires, connector=connector_name))


@cli.command()
@click.argument("key")
@click.option("--connector", "connector_name", help="Verify only the copy on this connector.")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@now_option
@pass_context
def verify(
    context: Context, key: str, connector_name: str | None, as_json: bool, now: str | None
) -> None:
    """Re-hash an item's copies against the catalog; report every mismatch.

    Its copies that count, and its damaged ones: a damaged copy found whole
    again counts again. Exit 1 when a file is not as the catalog says.
    """
    from resolwe_storage.urls import ok_copies
    from resolwe_storage.wiring import configured, connector_named
    from workers.verify import verify_location

    moment = parse_now(now)
    if connector_name is not None:
        configured(context.config, connector_name)
    with context.database.atomic():
        _, locations = ok_copies(
            context.config, key, damaged=True, connector=connector_name, purpose="to verify"
        )
    reports = []
    unread = None
    for loc in locations:
        try:
            reports.append(
                verify_location(
                    loc, connector_named(context.config, loc.connector_name), now=moment
                )
            )
        except ConnectorError as exc:
            # What the copies before it were found to be is recorded: it is listed too.
            unread = f"{loc.connector_name}: could not verify (nothing concluded): {exc}"
            break
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
    if unread is not None and not (bad or lost):
        raise InputError(unread)
    if bad or lost:
        problems = sum(len(report.problems) for report in bad)
        message = f"{problems} problem(s) in {len(bad)} copy(ies)"
        if lost:
            message += f"; item {key!r} is LOST: no good copy anywhere of {', '.join(lost[:5])}"
            message += f" and {len(lost) - 5} more" if len(lost) > 5 else ""
        if unread is not None:
            message += f"; {unread}"
        raise UserError(message)
