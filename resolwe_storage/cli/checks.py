"""``check-config``: the configuration loaded and checked, and what in it cannot work."""

from __future__ import annotations

import json

import click

from resolwe_storage.cli.base import Context, cli, pass_context
from resolwe_storage.errors import UserError
from scheduler.rules import ineffective_rules, preference_order


@cli.command("check-config")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_context
def check_config(context: Context, as_json: bool) -> None:
    """Load and validate the configuration; name every rule that can never apply.

    Exit 1 if any rule cannot do what it says (the same lines are logged as
    warnings when the scheduler, a worker, run, scan or plan start).
    """
    from catalog.database import redact_url

    config = context.config
    warnings = ineffective_rules(config.policies)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "source": config.source,
                    "database": redact_url(config.database),
                    "broker": redact_url(config.broker) if config.broker else None,
                    "connectors": preference_order(config.policies),
                    "warnings": warnings,
                },
                indent=2,
            )
        )
    else:
        click.echo(
            f"{config.source or 'the defaults'}: {len(config.connectors)} connector(s), "
            f"most preferred first: {', '.join(preference_order(config.policies)) or 'none'}"
        )
        for warning in warnings:
            click.echo(f"warning: {warning}")
    if warnings:
        raise UserError(f"{len(warnings)} rule(s) of the configuration can never apply")
