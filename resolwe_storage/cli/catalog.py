"""Catalog commands: migrate, import, status, ingest."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import click

from catalog.queries import status_summary
from catalog.settings import deletes_paused
from resolwe_storage.cli.base import LOCATION_STATES, Context, cli, pass_context
from resolwe_storage.errors import InputError


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
@click.argument("source", metavar="[FILE|-]", required=False)
@click.option(
    "--format",
    "format_",
    type=click.Choice(["json", "jsonl"]),
    help="A JSON document, or JSON Lines (one item a line); "
    "default: by the file's extension (.jsonl, .ndjson), else json.",
)
@click.option(
    "--from-resolwe",
    "resolwe_dsn",
    metavar="DSN",
    help="Read the storage tables of a Resolwe PostgreSQL database instead (read only); "
    "run again to catch up.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_context
def import_command(
    context: Context,
    source: str | None,
    format_: str | None,
    resolwe_dsn: str | None,
    as_json: bool,
) -> None:
    """Register items from an import document, JSON Lines or a Resolwe database; idempotent.

    Read as it comes, in batches, in one transaction: a wrong item stores
    nothing (the first few problems are named, with their place). Items
    are matched by key; a Resolwe FileStorage N is item resolwe:N.
    """
    from catalog.streaming import import_items, read_items, sniff_format

    if (source is None) == (resolwe_dsn is None):
        raise InputError("import: give a FILE (or - for standard input) or --from-resolwe DSN")
    config = context.config
    skipped = None
    with contextlib.ExitStack() as stack:
        if resolwe_dsn is not None:
            items, skipped = _from_resolwe(context, resolwe_dsn)
        else:
            assert source is not None
            name = "standard input" if source == "-" else source
            chosen = format_ or ("json" if source == "-" else sniff_format(source))
            stream = stack.enter_context(_opened(source, name))
            items = read_items(stream, format=chosen, name=name, texts=True)
            # The first item read before the catalog is opened: a file that
            # is not a document at all leaves no catalog behind.
            items = itertools.chain(list(itertools.islice(items, 1)), items)
        progress = _Progress() if sys.stderr.isatty() else None
        counts = import_items(
            items,
            connectors=set(config.connectors),
            database=context.database,
            progress=progress,
            check_apart=True,  # a file, a pipe, or a source not opened yet
            read_state=skipped,
            # A FileStorage is known by its id and its creation: another
            # database's (a wrong DSN) is refused, not taken as news.
            created_identifies=resolwe_dsn is not None,
            # Resolwe lists every copy it has: one it dropped (deleted
            # there) no longer counts here on its word.
            lists_every_copy=resolwe_dsn is not None,
        )
        if progress is not None:
            progress.finish()
    result: dict[str, Any] = {
        "created": counts.created,
        "updated": counts.updated,
        "unchanged": counts.unchanged,
    }
    if skipped is not None:
        result["skipped_locations"] = dict(sorted(skipped.counts.items()))
        for connector, count in sorted(skipped.counts.items()):
            click.echo(
                f"warning: {count} location(s) on Resolwe's connector {connector!r} left out: "
                "not configured here (map it with resolwe: {connectors: {...}})",
                err=True,
            )
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"imported: {counts.created} created, {counts.updated} updated, "
            f"{counts.unchanged} unchanged"
        )


def _from_resolwe(context: Context, dsn: str) -> tuple[Iterator[tuple[Any, ...]], Any]:
    """The items of the Resolwe database at ``dsn``, and where its skipped locations are told."""
    from catalog.resolwe import Skipped, connector_map, resolwe_items
    from scheduler.rules import ineffective_rules

    config = context.config
    for warning in ineffective_rules(config.policies):
        if " overlap: " in warning:
            # The one rule that differs from the original's (README: migrating).
            click.echo(f"warning: {warning}", err=True)
    skipped = Skipped()
    names = connector_map(config.resolwe_connectors, config.connectors)
    return resolwe_items(dsn, connectors=names, skipped=skipped, texts=True), skipped


@cli.command("export")
@click.argument("target", metavar="[FILE|-]", default="-")
@click.option(
    "--format",
    "format_",
    type=click.Choice(["json", "jsonl"]),
    help="A JSON document, or JSON Lines (one item a line); "
    "default: by the file's extension (.jsonl, .ndjson), else json.",
)
@pass_context
def export_command(context: Context, target: str, format_: str | None) -> None:
    """Write every item of the catalog as an import document (or JSON Lines), in key order.

    What import reads back: export | import into an empty catalog holds the
    same items, copies, files, locks and damage. Streamed: any catalog size.
    """
    from catalog.export import export_items, exported_count, snapshot, write_items
    from catalog.streaming import sniff_format

    chosen = format_ or ("json" if target == "-" else sniff_format(target))
    database = context.database
    # On a terminal, unless the export itself goes there.
    progress = _ExportProgress() if sys.stderr.isatty() else None
    if target == "-" and sys.stdout.isatty():
        progress = None

    def write(out: IO[str]) -> int:
        with snapshot(database):
            items = export_items()
            if progress is not None:
                items = progress.counted(items, total=exported_count())
            try:
                return write_items(items, out, format=chosen)
            finally:
                if progress is not None:
                    progress.finish()

    if target == "-":
        write(sys.stdout)
        return
    path = Path(target)
    if path.is_dir():
        raise InputError(f"{target}: is a directory")
    if path.exists() and not path.is_file():
        # A pipe or a device (/dev/stdout): written through, never replaced by a file.
        try:
            with path.open("w", encoding="utf-8") as out:
                count = write(out)
        except OSError as exc:
            raise InputError(f"{target}: {exc.strerror}") from None
        click.echo(f"exported {count} item(s) to {target}", err=True)
        return
    partial = Path(f"{target}.partial")

    def terminated(signum: int, frame: object) -> None:
        raise InputError(f"export stopped by signal {signum}: nothing written to {target}")

    # An orchestrator's SIGTERM ends the export as an error does: no partial file left.
    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        with partial.open("w", encoding="utf-8") as out:
            count = write(out)
            # On disk before it takes the last export's place: renamed first,
            # a power cut could leave an empty file under the name, the last
            # export gone with it.
            out.flush()
            os.fsync(out.fileno())
        partial.replace(target)  # all or nothing: no half-written export under its name
        _flush_folder(path.absolute().parent)  # the rename itself
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise InputError(f"{target}: {exc.strerror}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo(f"exported {count} item(s) to {target}", err=True)


def _flush_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (its entries flushed)."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def _opened(source: str, name: str) -> Iterator[IO[bytes]]:
    """The bytes of ``source`` (``-``: standard input); InputError naming what went wrong."""
    if source == "-":
        yield sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin  # type: ignore[misc]
        return
    try:
        stream = open(source, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise InputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror}") from None
    with stream:
        yield stream


class _Progress:
    """Items imported so far, and how fast, on one line of a terminal."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.shown = False

    def __call__(self, counts: Any) -> None:
        seconds = max(time.monotonic() - self.began, 1e-6)
        click.echo(
            f"\rimporting: {counts.items:,} items ({counts.items / seconds:,.0f}/s): "
            f"{counts.created:,} created, {counts.updated:,} updated, "
            f"{counts.unchanged:,} unchanged ",
            err=True,
            nl=False,
        )
        self.shown = True

    def finish(self) -> None:
        if self.shown:
            click.echo(err=True)


class _ExportProgress:
    """Items written so far of the total, and how fast, on one line of a terminal."""

    #: Items between two updates of the line (an export writes tens of thousands a second).
    EVERY = 2_000

    def __init__(self) -> None:
        self.began = time.monotonic()
        self.total = 0
        self.count = 0
        self.shown = False

    def counted(self, items: Iterator[dict[str, Any]], *, total: int) -> Iterator[dict[str, Any]]:
        """``items``, counted as they go, the line updated every ``EVERY``."""
        self.total = total
        for item in items:
            yield item
            self.count += 1
            if self.count % self.EVERY == 0:
                self._show()

    def finish(self) -> None:
        """The last count shown, and the line ended (when one was begun)."""
        if self.shown:
            self._show()
            click.echo(err=True)

    def _show(self) -> None:
        seconds = max(time.monotonic() - self.began, 1e-6)
        share = f" ({100 * self.count // self.total} %)" if self.total else ""
        click.echo(
            f"\rexporting: {self.count:,} of {self.total:,} items{share}, "
            f"{self.count / seconds:,.0f}/s ",
            err=True,
            nl=False,
        )
        self.shown = True


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@pass_context
def status(context: Context, as_json: bool) -> None:
    """Items by status; locations per connector and status; damaged copies, lost items."""
    with context.database.atomic():
        summary = status_summary()
        paused = deletes_paused()
    summary["deletes_paused"] = paused is not None
    unknown = sorted(set(summary["locations"]) - set(context.config.connectors))
    summary["unconfigured_connectors"] = unknown
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    items = summary["items"]
    by_status = ", ".join(f"{s} {n}" for s, n in items["by_status"].items()) or "none"
    removed = f"; {items['removed']} removed, their copies going" if items["removed"] else ""
    click.echo(f"items: {items['total']} ({by_status}{removed})")
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
    if paused is not None:
        click.echo(f"{paused.describe()} (resolwe-storage deletes resume)")
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
