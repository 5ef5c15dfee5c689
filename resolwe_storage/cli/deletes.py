"""``deletes pause|resume``: the switch that stops every delete, kept in the catalog."""

from __future__ import annotations

import json

import click

from catalog.settings import deletes_paused, pause_deletes, resume_deletes
from resolwe_storage.cli.base import Context, cli, pass_context


@cli.group()
def deletes() -> None:
    """Pause or resume every delete (scheduler and workers alike)."""


@deletes.command("pause")
@click.option("--note", default="", help="Why, for status and the other operators.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def pause(context: Context, note: str, as_json: bool) -> None:
    """Stop every delete now: none is queued by a scan, none queued before runs."""
    with context.database.atomic():
        paused = pause_deletes(note=note)
    if as_json:
        click.echo(json.dumps(paused.as_json()))
    else:
        click.echo(paused.describe())


@deletes.command("resume")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def resume(context: Context, as_json: bool) -> None:
    """Let deletes run again (the next scan queues what is due)."""
    with context.database.atomic():
        resumed = resume_deletes()
    if as_json:
        click.echo(json.dumps({"deletes_paused": False, "resumed": resumed}))
    else:
        click.echo("deletes resumed" if resumed else "deletes were not paused")


@deletes.command("status")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def status(context: Context, as_json: bool) -> None:
    """Whether deletes are paused, since when and why."""
    with context.database.atomic():
        paused = deletes_paused()
    if as_json:
        running = {"deletes_paused": False, "since": None, "note": None}
        click.echo(json.dumps(paused.as_json() if paused is not None else running))
    else:
        click.echo(paused.describe() if paused is not None else "deletes run")
