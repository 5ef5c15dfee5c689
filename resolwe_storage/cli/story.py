"""An item's story: ``show KEY`` (its files, copies, states, locks, history) and ``history``."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import click

from catalog.story import (
    BAD,
    DEFAULT_HISTORY_LIMIT,
    DEFAULT_STORY_HISTORY,
    action_names,
    history,
    item_story,
)
from resolwe_storage.cli.base import (
    LOCATION_STATES,
    Context,
    cli,
    parse_now,
    pass_context,
    printable,
)

#: Lines of files (or of bad files per copy) the text of ``show`` prints, at most.
DEFAULT_SHOWN_FILES = 20


@cli.command()
@click.argument("key")
@click.option(
    "--history",
    "history_limit",
    type=click.IntRange(min=0),
    default=DEFAULT_STORY_HISTORY,
    show_default=True,
    help="Show this many of the item's latest actions.",
)
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON (every file).")
@pass_context
def show(context: Context, key: str, history_limit: int, as_json: bool) -> None:
    """The story of item KEY: its files, its copies, each file's state on them, locks, history."""
    with context.database.atomic():
        story = item_story(key, history=history_limit)
    if as_json:
        click.echo(json.dumps(story, indent=2))
        return
    _echo(
        f"item {story['key']!r}: status {story['status']}, data_slug {story['data_slug']!r}, "
        f"process_type {story['process_type']!r}, created {story['created']}"
        + (f", REMOVED {story['removed']}" if story["removed"] else "")
    )
    files = story["files"]
    total = sum(entry["size"] or 0 for entry in files)
    _echo(f"files: {len(files)}, {total} bytes")
    for entry in files[:DEFAULT_SHOWN_FILES]:
        hashes = ", ".join(
            f"{name} {entry[name]}" for name in ("md5", "crc32c", "awss3etag") if entry[name]
        )
        size = "?" if entry["size"] is None else entry["size"]
        _echo(f"  {entry['path']}  {size} bytes" + (f"  {hashes}" if hashes else ""))
    _more(len(files))
    if not story["locations"]:
        _echo("no locations")
    for location in story["locations"]:
        _print_location(location)
    if story["lost"]:
        _echo(f"LOST: no good copy anywhere of {', '.join(story['lost'])}")
    _print_history(story["history"], f"history (latest {history_limit})")


def _echo(line: str) -> None:
    click.echo(printable(line))


def _print_location(location: dict[str, Any]) -> None:
    status = location["status"]
    _echo(
        f"location {location['connector']}:{location['url']}: {status} "
        f"({LOCATION_STATES.get(status, status)}), last access {location['last_access']}, "
        f"last verified {location['last_verified'] or 'never'}"
    )
    counts = Counter(state["state"] for state in location["files"].values())
    _echo("  files: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"))
    bad = [(path, state) for path, state in location["files"].items() if state["state"] == BAD]
    for path, state in bad[:DEFAULT_SHOWN_FILES]:
        _echo(f"  bad: {path}: {state['problem']} (found {state['found']})")
    _more(len(bad))
    for lock in location["locks"]:
        expires = f", expires {lock['expires']}" if lock["expires"] else ""
        _echo(f"  locked: {lock['reason'] or '(no reason)'} since {lock['since']}{expires}")


def _more(count: int) -> None:
    if count > DEFAULT_SHOWN_FILES:
        _echo(f"  ... and {count - DEFAULT_SHOWN_FILES} more (--json lists them all)")


def _print_history(actions: list[dict[str, Any]], title: str) -> None:
    _echo(f"{title}:" if actions else f"{title}: nothing recorded")
    for row in actions:
        where = " -> ".join(name for name in (row["source"], row["target"]) if name)
        detail = [row["result"]]
        if row["bytes"] is not None:
            detail.append(f"{row['bytes']} bytes")
        if row["duration_ms"] is not None:
            detail.append(f"{row['duration_ms']} ms")
        _echo(
            f"  {row['started']} {row['actor']} {row['action']}"
            + (f" {row['key']!r}" if row.get("key") else "")
            + (f" {where}" if where else "")
            + (f" {row['path']}" if row["path"] else "")
            + f": {', '.join(detail)}"
            + (f": {row['error']}" if row["error"] else "")
        )


@cli.command("history")
@click.argument("key", required=False)
@click.option("--since", metavar="ISO-8601", help="Only actions started at or after this time.")
@click.option("--action", "action_name", metavar="ACTION", help="Only this action (copy, ...).")
@click.option("--failed", is_flag=True, help="Only jobs that failed for good.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=DEFAULT_HISTORY_LIMIT,
    show_default=True,
    help="At most this many, newest first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@pass_context
def history_command(
    context: Context,
    key: str | None,
    since: str | None,
    action_name: str | None,
    failed: bool,
    limit: int,
    as_json: bool,
) -> None:
    """The action history, newest first: of item KEY, or of everything."""
    moment = parse_now(since, option="--since") if since is not None else None
    with context.database.atomic():
        actions = history(key=key, since=moment, action=action_name, failed=failed, limit=limit)
        kinds = action_names() if action_name is not None and not actions else None
    if as_json:
        click.echo(json.dumps(actions, indent=2))
        return
    _print_history(actions, f"history{f' of {key!r}' if key else ''}")
    if kinds is not None and action_name not in kinds:
        # A mistyped kind reads like a quiet history: name the kinds there are.
        held = ", ".join(repr(kind) for kind in kinds) or "none yet"
        _echo(f"no {action_name!r} action recorded yet; the history holds: {held}")
