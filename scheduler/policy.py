"""The policy rules of SPEC §5, evaluated for one item, with reasons.

This is the readable statement of the rules: ``plan --explain`` prints what it
finds, and the tests hold the set-based planner (``scheduler.planning``) to
the same answers. Pure: ``now`` is passed in; nothing here reads the clock,
the database or the network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

from scheduler.rules import (
    ConnectorPolicy,
    Resolved,
    preference_order,
    resolve_delay,
    resolve_min_other_copies,
)

COPY = "copy"
DELETE = "delete"
REMOVE = "remove"
REPAIR = "repair"
VERIFY = "verify"
ACTIONS = (COPY, DELETE, REMOVE, REPAIR, VERIFY)
#: A location being deleted already (a removal leaves it alone: its job is under way).
LOCATION_DELETING = "DE"

ITEM_STATUS_DONE = "OK"
LOCATION_DONE = "OK"
#: A copy of which some file is missing, different or stale (SPEC §3).
LOCATION_DAMAGED = "DM"


class LocationFacts(NamedTuple):
    """What the rules need to know of one location."""

    connector: str
    status: str
    last_update: datetime
    last_verified: datetime | None = None
    open_access_logs: int = 0
    #: Of a damaged location (``DM``): the paths of its files that are not good.
    damaged_files: frozenset[str] = frozenset()


class ItemFacts(NamedTuple):
    """What the rules need to know of one item (times naive UTC)."""

    key: str | None
    data_slug: str
    process_type: str
    status: str
    created: datetime
    locations: Sequence[LocationFacts] = ()
    #: The paths of the item's files (not folders); needed only to tell
    #: which files of a damaged item are good somewhere.
    files: Sequence[str] = ()
    #: When the producer said the item is gone (None: it is not).
    removed: datetime | None = None


class PlannedAction(NamedTuple):
    """One due action; ``connector`` is the target of a copy, else the location's."""

    key: str | None
    action: str
    connector: str
    source: str | None = None

    def as_json(self) -> dict[str, str | None]:
        """The shape of SPEC §6: copy and repair have source and target, others connector."""
        if self.action in (COPY, REPAIR):
            return {
                "action": self.action,
                "key": self.key,
                "source": self.source,
                "target": self.connector,
            }
        return {"action": self.action, "key": self.key, "connector": self.connector}

    def sort_key(self) -> tuple[bool, str, str, str]:
        """Order of ``plan`` output: key (no key first), action, target."""
        return (self.key is not None, self.key or "", self.action, self.connector)


class Condition(NamedTuple):
    """One condition of a rule for one item: does it hold, and why."""

    name: str
    holds: bool
    detail: str


class Decision(NamedTuple):
    """Whether one action on one connector is due for an item, and why."""

    action: str
    connector: str
    due: bool
    conditions: tuple[Condition, ...]
    rule: str = ""
    source: str | None = None

    def planned(self, key: str | None) -> PlannedAction | None:
        """The planned action if due, else None."""
        if not self.due:
            return None
        return PlannedAction(key, self.action, self.connector, self.source)


def fmt_time(moment: datetime) -> str:
    """ISO-8601 in UTC with a 'Z', as every output of ours prints times."""
    return moment.isoformat() + "Z"


def cutoff(now: datetime, days: int) -> datetime | None:
    """The moment before which something must lie to be ``days`` old; None: never."""
    if days < 0:
        return None
    return now - timedelta(days=days)


def preferred_location(
    item: ItemFacts, policies: Mapping[str, ConnectorPolicy]
) -> LocationFacts | None:
    """The item's ``OK`` location on the most preferred configured connector."""
    done = {loc.connector: loc for loc in item.locations if loc.status == LOCATION_DONE}
    for name in preference_order(policies):
        if name in done:
            return done[name]
    return None


def counted_copies(item: ItemFacts, policies: Mapping[str, ConnectorPolicy]) -> int:
    """The item's copies that count: ``OK`` locations on configured connectors.

    A damaged copy never counts, nor one on a connector the configuration
    no longer names: a delete could not confirm it on its backend.
    """
    return sum(
        1 for loc in item.locations if loc.status == LOCATION_DONE and loc.connector in policies
    )


def holds_good(location: LocationFacts, path: str) -> bool:
    """Whether ``location`` holds file ``path`` good: it counts, or is damaged elsewhere."""
    if location.status == LOCATION_DONE:
        return True
    return location.status == LOCATION_DAMAGED and path not in location.damaged_files


def lost_files(item: ItemFacts) -> list[str]:
    """The item's files that are good nowhere (SPEC §3 "lost"), in path order.

    Only an item with a damaged location and no ``OK`` one can have any:
    an ``OK`` copy holds every file.
    """
    if any(loc.status == LOCATION_DONE for loc in item.locations):
        return []
    if not any(loc.status == LOCATION_DAMAGED for loc in item.locations):
        return []
    return sorted(
        path for path in item.files if not any(holds_good(loc, path) for loc in item.locations)
    )


def _delay_condition(what: str, moment: datetime, resolved: Resolved, now: datetime) -> Condition:
    limit = cutoff(now, resolved.value)
    if limit is None:
        return Condition(f"{what} delay", False, f"{resolved.describe('delay')} is negative: never")
    holds = moment < limit
    relation = "before" if holds else "not before"
    return Condition(
        f"{what} delay",
        holds,
        f"{what} {fmt_time(moment)} is {relation} {fmt_time(limit)} "
        f"(now − {resolved.describe('delay')})",
    )


def _no_rule(action: str, connector: str) -> Decision:
    return Decision(
        action,
        connector,
        False,
        (Condition("rule", False, f"{connector} has no {action} rule"),),
    )


def explain_copy(
    item: ItemFacts, policy: ConnectorPolicy, policies: Mapping[str, ConnectorPolicy], now: datetime
) -> Decision:
    """SPEC §5 "Copy to C is due for F", condition by condition."""
    if policy.copy is None:
        return _no_rule(COPY, policy.name)
    resolved = resolve_delay(policy.copy, data_slug=item.data_slug, process_type=item.process_type)
    conditions = [Condition("rule", True, f"{policy.name} has a copy rule")]
    conditions.append(_status_condition(item))
    on_target = [loc for loc in item.locations if loc.connector == policy.name]
    if not item.locations:
        conditions.append(Condition("locations", False, "the item has no location"))
    elif on_target:
        statuses = ", ".join(sorted(loc.status for loc in on_target))
        conditions.append(
            Condition("locations", False, f"already has a location on {policy.name} ({statuses})")
        )
    else:
        conditions.append(
            Condition(
                "locations",
                True,
                f"{len(item.locations)} location(s), none on {policy.name}",
            )
        )
    source = preferred_location(item, policies)
    if source is None:
        conditions.append(
            Condition("source", False, "no OK location on a configured connector to copy from")
        )
    else:
        conditions.append(
            Condition("source", True, f"copy from the preferred location on {source.connector}")
        )
    conditions.append(_delay_condition("created", item.created, resolved, now))
    due = all(condition.holds for condition in conditions)
    return Decision(
        COPY,
        policy.name,
        due,
        tuple(conditions),
        rule=resolved.describe("delay"),
        source=source.connector if source is not None else None,
    )


def _status_condition(item: ItemFacts) -> Condition:
    if item.status == ITEM_STATUS_DONE:
        return Condition("status", True, "item status is OK")
    return Condition("status", False, f"item status is {item.status!r}, not OK")


def explain_delete(
    item: ItemFacts, policy: ConnectorPolicy, policies: Mapping[str, ConnectorPolicy], now: datetime
) -> Decision:
    """SPEC §5 "Delete from C is due for F", condition by condition."""
    if policy.delete is None:
        return _no_rule(DELETE, policy.name)
    resolved = resolve_delay(
        policy.delete, data_slug=item.data_slug, process_type=item.process_type
    )
    min_other = resolve_min_other_copies(
        policy.delete, data_slug=item.data_slug, process_type=item.process_type
    )
    conditions = [Condition("rule", True, f"{policy.name} has a delete rule")]
    conditions.append(_status_condition(item))
    conditions.append(_delay_condition("created", item.created, resolved, now))
    here = next(
        (
            loc
            for loc in item.locations
            if loc.connector == policy.name and loc.status == LOCATION_DONE
        ),
        None,
    )
    if here is None:
        others = [loc.status for loc in item.locations if loc.connector == policy.name]
        detail = (
            f"the location on {policy.name} is {others[0]}, not OK"
            if others
            else f"no location on {policy.name}"
        )
        conditions.append(Condition("location", False, detail))
    else:
        conditions.append(Condition("location", True, f"OK location on {policy.name}"))
        conditions.append(_delay_condition("last_update", here.last_update, resolved, now))
        if here.open_access_logs:
            conditions.append(
                Condition("unlocked", False, f"{here.open_access_logs} open access log(s) lock it")
            )
        else:
            conditions.append(Condition("unlocked", True, "no open access log"))
    copies = counted_copies(item, policies)
    enough = copies > min_other.value
    conditions.append(
        Condition(
            "copies",
            enough,
            f"{copies} OK location(s) on configured connectors counting this one, "
            f"{'more than' if enough else 'not more than'} "
            f"{min_other.describe('min_other_copies')}",
        )
    )
    preferred = preferred_location(item, policies)
    if here is not None and preferred is here:
        conditions.append(Condition("not preferred", False, "it is the preferred location"))
    elif here is not None:
        where = preferred.connector if preferred is not None else "no configured connector"
        conditions.append(
            Condition(
                "not preferred", preferred is not None, f"the preferred location is on {where}"
            )
        )
    due = all(condition.holds for condition in conditions)
    rule = f"{resolved.describe('delay')}; {min_other.describe('min_other_copies')}"
    return Decision(DELETE, policy.name, due, tuple(conditions), rule=rule)


def explain_verify(item: ItemFacts, policy: ConnectorPolicy, now: datetime) -> Decision:
    """SPEC §5 "Verify": an OK location last verified over N days ago, or never."""
    if policy.verify is None:
        return _no_rule(VERIFY, policy.name)
    interval = policy.verify.interval
    conditions = [Condition("rule", True, f"{policy.name} has a verify rule")]
    here = next(
        (
            loc
            for loc in item.locations
            if loc.connector == policy.name and loc.status == LOCATION_DONE
        ),
        None,
    )
    if here is None:
        conditions.append(Condition("location", False, f"no OK location on {policy.name}"))
    else:
        conditions.append(Condition("location", True, f"OK location on {policy.name}"))
        limit = now - timedelta(days=interval)
        if here.last_verified is None:
            conditions.append(Condition("interval", True, "never verified"))
        else:
            holds = here.last_verified < limit
            conditions.append(
                Condition(
                    "interval",
                    holds,
                    f"last verified {fmt_time(here.last_verified)}, "
                    f"{'before' if holds else 'not before'} {fmt_time(limit)} "
                    f"(now − interval {interval})",
                )
            )
    due = all(condition.holds for condition in conditions)
    return Decision(VERIFY, policy.name, due, tuple(conditions), rule=f"interval {interval}")


def repair_source(
    item: ItemFacts, target: str, policies: Mapping[str, ConnectorPolicy]
) -> LocationFacts | None:
    """Where a repair of the copy on ``target`` takes its files from, as ``plan`` names it.

    The preferred location; without one (no copy counts), the most
    preferred other damaged copy on a configured connector. A worker picks
    per file the most preferred copy that holds it good.
    """
    source = preferred_location(item, policies)
    if source is not None:
        return source
    damaged = {
        loc.connector: loc
        for loc in item.locations
        if loc.status == LOCATION_DAMAGED and loc.connector != target
    }
    for name in preference_order(policies):
        if name in damaged:
            return damaged[name]
    return None


def explain_repair(
    item: ItemFacts, policy: ConnectorPolicy, policies: Mapping[str, ConnectorPolicy]
) -> Decision:
    """SPEC §5 "Repair": a damaged location with a file that is good on another copy."""
    here = next((loc for loc in item.locations if loc.connector == policy.name), None)
    if here is None or here.status != LOCATION_DAMAGED:
        detail = (
            f"the location on {policy.name} is {here.status}, not damaged"
            if here is not None
            else f"no location on {policy.name}"
        )
        return Decision(REPAIR, policy.name, False, (Condition("damaged", False, detail),))
    bad = sorted(here.damaged_files)
    conditions = [Condition("damaged", True, f"damaged on {policy.name}: {_some(bad)}")]
    others = [
        loc for loc in item.locations if loc.connector != policy.name and loc.connector in policies
    ]
    preferred = preferred_location(item, policies)
    fixable = [path for path in bad if any(holds_good(loc, path) for loc in others)]
    if preferred is not None:
        conditions.append(
            Condition("source", True, f"the copy on {preferred.connector} holds every file good")
        )
    elif fixable:
        conditions.append(Condition("source", True, f"good on another copy: {_some(fixable)}"))
    else:
        conditions.append(
            Condition("source", False, "no other copy on a configured connector holds them good")
        )
    source = repair_source(item, policy.name, policies)
    due = all(condition.holds for condition in conditions)
    return Decision(
        REPAIR,
        policy.name,
        due,
        tuple(conditions),
        source=source.connector if source is not None and due else None,
    )


def _some(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:3])
    return shown + (f" and {len(paths) - 3} more" if len(paths) > 3 else "") if paths else "none"


def explain_remove(
    item: ItemFacts, name: str, now: datetime, removal_delay: int
) -> Decision | None:
    """SPEC §5 "unreferenced items": the copy on ``name`` of a removed item goes after the grace.

    Every copy goes, the preferred and the last included, but never a
    locked one (it waits for the lock). None for an item not removed, or
    without a location on ``name``.
    """
    if item.removed is None:
        return None
    here = next((loc for loc in item.locations if loc.connector == name), None)
    if here is None:
        return None
    limit = cutoff(now, removal_delay)
    ended = limit is not None and item.removed < limit
    conditions = [
        Condition(
            "grace",
            ended,
            f"removed {fmt_time(item.removed)}, "
            + ("the removal grace of " if ended else "within the removal grace of ")
            + f"{removal_delay} day(s)"
            + ("" if ended else (" (never over: negative)" if limit is None else "")),
        ),
        Condition(
            "not deleting",
            here.status != LOCATION_DELETING,
            f"the location on {name} is {here.status}",
        ),
        Condition(
            "unlocked",
            not here.open_access_logs,
            f"{here.open_access_logs} open access log(s) lock it"
            if here.open_access_logs
            else "no open access log",
        ),
    ]
    due = all(condition.holds for condition in conditions)
    return Decision(REMOVE, name, due, tuple(conditions), rule=f"removal delay {removal_delay}")


def explain(
    item: ItemFacts,
    policies: Mapping[str, ConnectorPolicy],
    *,
    now: datetime,
    removal_delay: int = 0,
) -> list[Decision]:
    """Every decision for ``item``: per connector (by name), copy, delete, remove, repair, verify.

    A removed item has none due but its removals: it counts nowhere.
    """
    decisions: list[Decision] = []
    for name in sorted(policies):
        policy = policies[name]
        per_connector = [
            explain_copy(item, policy, policies, now),
            explain_delete(item, policy, policies, now),
            explain_remove(item, name, now, removal_delay),
            explain_repair(item, policy, policies),
            explain_verify(item, policy, now),
        ]
        for decision in per_connector:
            if decision is None:
                continue
            if item.removed is not None and decision.action != REMOVE:
                gone = Condition("not removed", False, f"removed {fmt_time(item.removed)}")
                decision = Decision(
                    decision.action,
                    decision.connector,
                    False,
                    (gone, *decision.conditions),
                    rule=decision.rule,
                )
            decisions.append(decision)
    return decisions


def due_actions(
    item: ItemFacts,
    policies: Mapping[str, ConnectorPolicy],
    *,
    now: datetime,
    removal_delay: int = 0,
) -> list[PlannedAction]:
    """The due actions for ``item``, in ``plan`` order."""
    planned = [
        d.planned(item.key) for d in explain(item, policies, now=now, removal_delay=removal_delay)
    ]
    return sorted((p for p in planned if p is not None), key=PlannedAction.sort_key)
