"""``remove`` and ``restore``: items the producer says are gone, and undoing that in the grace."""

from __future__ import annotations

import json

import click

from catalog.models import utcnow
from catalog.removal import remove_items, restore_item
from resolwe_storage.cli.base import Context, cli, pass_context


@cli.command()
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@click.option("--json", "as_json", is_flag=True, help="Print each removal as JSON.")
@pass_context
def remove(context: Context, keys: tuple[str, ...], as_json: bool) -> None:
    """Remove the items KEY...: they count nowhere now; every copy goes after the grace.

    All or nothing: an unknown key removes none. The grace is the
    configuration's removal: {delay: DAYS} (default 0); within it, restore
    undoes the removal.
    """
    delay = context.config.removal_delay
    with context.database.atomic():
        removals = remove_items(keys, now=utcnow(), actor="operator")
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "key": removal.key,
                        "removed": f"{removal.removed:%Y-%m-%dT%H:%M:%SZ}",
                        "new": removal.new,
                        "grace_days": delay,
                    }
                    for removal in removals
                ]
            )
        )
        return
    for removal in removals:
        when = f"{removal.removed:%Y-%m-%dT%H:%M:%SZ}"
        click.echo(
            f"removed {removal.key!r} at {when}"
            if removal.new
            else f"{removal.key!r} was removed {when}"
        )
    click.echo(f"its copies go after the grace of {delay} day(s) (restore KEY undoes it till then)")


@cli.command()
@click.argument("key")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def restore(context: Context, key: str, as_json: bool) -> None:
    """Undo the removal of item KEY, while its grace lasts."""
    with context.database.atomic():
        removed = restore_item(
            key, now=utcnow(), removal_delay=context.config.removal_delay, actor="operator"
        )
    if as_json:
        click.echo(json.dumps({"key": key, "restored": True}))
    else:
        click.echo(f"restored {key!r} (removed {removed:%Y-%m-%dT%H:%M:%SZ})")
