"""``request``: queue work now, whatever the policies say."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from resolwe_storage.cli.base import Context, broker_url, cli, pass_context

if TYPE_CHECKING:
    from resolwe_storage.api import StorageService


@cli.group()
def request() -> None:
    """Queue work now, whatever the policies say."""


@request.command("copy")
@click.argument("key")
@click.option("--to", "target", required=True, metavar="CONNECTOR", help="Copy to this connector.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def request_copy(context: Context, key: str, target: str, as_json: bool) -> None:
    """Queue a copy of item KEY to --to, per file (small files share a job)."""
    with _service(context, "request copy") as service:
        queued = service.request_copy(key, to=target)
    _report_request(as_json, {"key": key, "action": "copy", "target": target, "jobs": queued})


@request.command("verify")
@click.argument("key")
@click.option("--connector", metavar="CONNECTOR", help="Only the copy on this connector.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def request_verify(context: Context, key: str, connector: str | None, as_json: bool) -> None:
    """Queue a verification of item KEY's OK copies (or of one)."""
    with _service(context, "request verify") as service:
        queued = service.request_verify(key, connector=connector)
    _report_request(
        as_json, {"key": key, "action": "verify", "connector": connector, "jobs": queued}
    )


@contextmanager
def _service(context: Context, command: str) -> Iterator[StorageService]:
    """The API on the configured broker, which is closed after (no connection left behind)."""
    from resolwe_storage.api import StorageService
    from workers.broker import make_broker

    broker = make_broker(broker_url(context, command))
    try:
        yield StorageService(context.config, context.database, broker)
    finally:
        broker.close()


def _report_request(as_json: bool, outcome: dict[str, Any]) -> None:
    if as_json:
        click.echo(json.dumps(outcome))
    else:
        click.echo(f"queued {outcome['jobs']} job(s)")
