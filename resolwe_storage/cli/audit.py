"""``audit``: the catalog against what the backends hold; lost, mismatched and dark objects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

import click

from connectors.errors import ConnectorError
from resolwe_storage.cli.base import Context, cli, pass_context
from resolwe_storage.errors import InputError, UserError

if TYPE_CHECKING:
    from workers.audit import AuditReport, Finding

#: Findings the text and ``--json`` show, at most (``--report`` has them all).
DEFAULT_SHOWN_FINDINGS = 1_000
#: Findings per connector the text lists.
DEFAULT_LISTED_FINDINGS = 20


@cli.command()
@click.argument("names", nargs=-1, metavar="[CONNECTOR...]")
@click.option("--json", "as_json", is_flag=True, help="Print the counts and findings as JSON.")
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every finding to FILE, one JSON object a line.",
)
@click.option("--delete-dark", is_flag=True, help="Remove dark objects older than --older-than.")
@click.option(
    "--older-than",
    type=click.FloatRange(min=0),
    metavar="DAYS",
    help="With --delete-dark: the grace period; younger dark objects stay.",
)
@pass_context
def audit(
    context: Context,
    names: tuple[str, ...],
    as_json: bool,
    report_path: Path | None,
    delete_dark: bool,
    older_than: float | None,
) -> None:
    """Compare the catalog with each connector's objects (all, or those named).

    A file the catalog expects that is missing (lost) or of another size or
    checksum (mismatched) is recorded bad on its copy, which is then damaged
    and repaired by the scan from a good copy; exit 1 when there is one.
    Objects the catalog does not account for (dark) are reported, and
    removed only with --delete-dark --older-than DAYS.
    """
    if delete_dark != (older_than is not None):
        raise InputError("--delete-dark and --older-than DAYS go together (the grace period)")
    from catalog.models import utcnow
    from resolwe_storage.wiring import configured, connector_named
    from workers.audit import audit_connector

    config = context.config
    chosen = list(names) or list(config.connectors)
    for name in chosen:
        configured(config, name)  # one error line naming the choices
    database = context.database
    if delete_dark:
        from catalog.settings import deletes_paused

        with database.connection_context():
            paused = deletes_paused()
        if paused is not None:
            raise UserError(
                f"--delete-dark: {paused.describe()}; nothing is removed while deletes are "
                "paused (resolwe-storage deletes resume)"
            )
    now = utcnow()
    before = now - timedelta(days=older_than) if older_than is not None else None
    shown: list[Finding] = []
    total = 0
    reports: list[AuditReport] = []
    with _report_file(report_path) as out:

        def found(finding: Finding) -> None:
            nonlocal total
            total += 1
            if out is not None:
                out.write(json.dumps(finding) + "\n")
            if len(shown) < DEFAULT_SHOWN_FINDINGS:
                shown.append(finding)

        for name in chosen:
            try:
                report = audit_connector(
                    connector_named(config, name),
                    database,
                    now=now,
                    delete_dark_before=before,
                    found=found,
                )
            except ConnectorError as exc:
                raise UserError(
                    f"{name}: the audit stopped, nothing more concluded: {exc}"
                    + (f" ({', '.join(r.connector for r in reports)} done)" if reports else "")
                ) from None
            reports.append(report)
            if not as_json:
                _print(report, [f for f in shown if f["connector"] == name])
    # Items with a file good nowhere now: no repair comes for those (SPEC §3 "lost").
    lost_items = {key: files for report in reports for key, files in report.lost_items.items()}
    if as_json:
        click.echo(
            json.dumps(
                {
                    "connectors": [report.as_json() for report in reports],
                    "findings": shown,
                    "findings_total": total,
                    "lost_items": [
                        {"key": key, "files": files} for key, files in sorted(lost_items.items())
                    ],
                    "report": str(report_path) if report_path else None,
                },
                indent=2,
            )
        )
    lost = sum(report.lost for report in reports)
    mismatched = sum(report.mismatched for report in reports)
    if lost or mismatched:
        items = sorted({key for report in reports for key in report.damaged_items})
        repaired = [key for key in items if key not in lost_items]
        message = f"{lost} lost and {mismatched} mismatched file(s): their copies are damaged now"
        if repaired:
            message += f"; the scan repairs them from good copies: items {_some(repaired)}"
        if lost_items:
            named = [
                f"{key} ({', '.join(files[:3])}"
                + (f" and {len(files) - 3} more)" if len(files) > 3 else ")")
                for key, files in sorted(lost_items.items())
            ]
            message += f"; {len(named)} item(s) LOST, no good copy anywhere: {_some(named)}"
        raise UserError(message)


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _print(report: AuditReport, findings: list[Finding]) -> None:
    dark = f"{report.dark} dark ({report.dark_bytes} bytes)"
    if report.dark_deleted or report.dark_kept:
        dark += f", {report.dark_deleted} removed, {report.dark_kept} kept"
    click.echo(
        f"{report.connector}: {report.objects} object(s), {report.expected} file(s) expected: "
        f"{report.lost} lost, {report.mismatched} mismatched, {dark}; {report.seconds:.2f} s"
    )
    for finding in findings[:DEFAULT_LISTED_FINDINGS]:
        click.echo("  " + _describe(finding))
    if len(findings) > DEFAULT_LISTED_FINDINGS:
        click.echo("  ... and more (--report FILE lists them all)")


def _describe(finding: Finding) -> str:
    if finding["kind"] == "dark":
        under = finding.get("under")
        where = f", under item {under['item']!r} ({under['status']})" if under else ""
        done = ", removed" if finding.get("deleted") else ""
        return (
            f"dark: {finding['key']} ({finding['size']} bytes, written {finding['modified']}"
            f"{where}){done}"
        )
    return f"{finding['kind']}: {finding['key']} (item {finding['item']!r}): {finding['problem']}"


@contextmanager
def _report_file(path: Path | None) -> Iterator[IO[str] | None]:
    """The ``--report`` file, written as findings come (None without one)."""
    if path is None:
        yield None
        return
    try:
        file = path.open("w", encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--report {path}: {exc.strerror}") from None
    with file:
        yield file
