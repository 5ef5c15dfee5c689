"""``plan``: the due actions, without doing anything; ``--explain`` one item."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

import click

from catalog.queries import item_by_key
from catalog.settings import deletes_paused
from resolwe_storage.cli.base import Context, cli, now_option, parse_now, pass_context
from resolwe_storage.planout import write_plan_json, write_plan_table
from scheduler.planning import DueItem, Planner, in_plan_order, item_facts
from scheduler.policy import DELETE, explain, fmt_time, lost_files
from scheduler.rules import ConnectorPolicy


@cli.command()
@now_option
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
    moment = parse_now(now)
    policies = context.config.policies
    context.warn_ineffective_rules()
    if explain_key is not None:
        _explain(context, explain_key, moment, as_json)
        return
    deletes: Counter[str] = Counter()
    planner = Planner(policies, context.database, removal_delay=context.config.removal_delay)
    items = _counting_deletes(in_plan_order(planner.due(now=moment)), deletes)
    out = sys.stdout
    if as_json:
        write_plan_json(out, items)
        out.flush()
    else:
        counts = write_plan_table(out, items, width=max((len(n) for n in policies), default=6))
        out.flush()
        total = sum(counts.values())
        detail = ", ".join(f"{counts[name]} {name}" for name in sorted(counts))
        click.echo(f"{total} due action(s){': ' + detail if detail else ''}", err=True)
    _warn_guards(policies, deletes)
    _warn_lost()


def _counting_deletes(items: Iterable[DueItem], deletes: Counter[str]) -> Iterator[DueItem]:
    """``items`` as they stream out, their due deletes counted per connector."""
    for item in items:
        for action, connector in item.arms:
            if action == DELETE:
                deletes[connector] += 1
        yield item


def _warn_guards(policies: Mapping[str, ConnectorPolicy], deletes: Counter[str]) -> None:
    """Say on stderr what the deletion guards will hold back of the due deletes."""
    paused = deletes_paused()
    if paused is not None:
        click.echo(
            f"warning: {paused.describe()}: no delete is queued or run "
            f"({sum(deletes.values())} due); resolwe-storage deletes resume",
            err=True,
        )
        return
    for connector, count in sorted(deletes.items()):
        rule = policies[connector].delete if connector in policies else None
        cap = rule.max_per_scan if rule is not None else None
        if cap is not None and count > cap:
            click.echo(
                f"warning: {connector}: {count} deletes due; a scan queues at most {cap} "
                "(delete.max_per_scan), the next scans the rest",
                err=True,
            )


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
    config = context.config
    decisions = explain(facts, config.policies, now=now, removal_delay=config.removal_delay)
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
