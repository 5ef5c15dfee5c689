"""Policy rules of the storage connectors, as plain values.

The configuration (``resolwe_storage.config``) validates the user's settings
and builds these; the planner and the explainer read them. They never touch
the clock, the database or the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import NamedTuple

#: Priority of a connector whose configuration gives none (lower is preferred).
DEFAULT_PRIORITY = 100
#: Copies that must remain elsewhere when a delete rule gives no number.
DEFAULT_MIN_OTHER_COPIES = 1
#: Deletes from one connector a scan queues at most (items), unless the rule says otherwise:
#: a policy typo does not delete every copy at once.
DEFAULT_MAX_DELETES_PER_SCAN = 1_000
#: ... and at most this many bytes of them (1 TiB).
DEFAULT_MAX_DELETE_BYTES_PER_SCAN = 1024**4
#: Copies of removed items (past their grace) one scan queues for removal, at
#: most: a document that wrongly says many items are gone does not take every
#: copy of them, the last included, at once (``removal: {max_per_scan}``).
DEFAULT_MAX_REMOVALS_PER_SCAN = 1_000


class Override(NamedTuple):
    """Values a ``data_slug`` or ``process_type`` override sets (None: not set)."""

    delay: int | None = None
    min_other_copies: int | None = None


def _frozen(mapping: Mapping[str, Override] | None) -> Mapping[str, Override]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Rule:
    """A copy or delete rule: a delay in days with per-item overrides.

    A missing delay is 0 (due at once); a negative delay means never.
    ``min_other_copies`` and the caps per scan only matter for delete rules:
    a scan queues at most ``max_per_scan`` items' deletes from the
    connector, of at most ``max_bytes_per_scan`` bytes (None: no cap); the
    rest wait for the next scans, and the scan says so.
    """

    delay: int | None = None
    min_other_copies: int | None = None
    data_slug: Mapping[str, Override] = field(default_factory=dict)
    process_type: Mapping[str, Override] = field(default_factory=dict)
    max_per_scan: int | None = None
    max_bytes_per_scan: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_slug", _frozen(self.data_slug))
        object.__setattr__(self, "process_type", _frozen(self.process_type))


class VerifyRule(NamedTuple):
    """Re-hash the copies on a connector every ``interval`` days."""

    interval: int


class ConnectorPolicy(NamedTuple):
    """One configured connector as the policies see it."""

    name: str
    priority: int = DEFAULT_PRIORITY
    copy: Rule | None = None
    delete: Rule | None = None
    verify: VerifyRule | None = None
    #: Audit the connector's objects against the catalog every ``interval`` days.
    audit: VerifyRule | None = None


class Resolved(NamedTuple):
    """A setting as it applies to one item, and where it came from.

    ``source`` is ``"data_slug"``, ``"process_type"``, ``"rule"`` or
    ``"default"``; ``override_key`` names the override that chose it.
    """

    value: int
    source: str
    override_key: str | None = None

    def describe(self, name: str) -> str:
        """A phrase for an operator, e.g. "delay 3 from process_type override 'data:'"."""
        if self.source in ("data_slug", "process_type"):
            return f"{name} {self.value} from {self.source} override {self.override_key!r}"
        if self.source == "rule":
            return f"{name} {self.value} from the rule"
        return f"{name} {self.value} (default)"


def matching_process_type_keys(rule: Rule, process_type: str) -> list[str]:
    """Override keys of ``rule`` that are prefixes of ``process_type``, longest first."""
    keys = [key for key in rule.process_type if process_type.startswith(key)]
    return sorted(keys, key=len, reverse=True)


def resolve(
    rule: Rule, attribute: str, *, data_slug: str, process_type: str, default: int
) -> Resolved:
    """Resolve ``attribute`` of ``rule`` for an item (SPEC §5, "delay").

    The ``data_slug`` override whose key equals the item's slug wins, then the
    ``process_type`` override with the longest key that is a prefix of the
    item's type, then the rule's own value, then ``default``. An override that
    does not set the attribute does not choose it.
    """
    override = rule.data_slug.get(data_slug)
    if override is not None and getattr(override, attribute) is not None:
        return Resolved(getattr(override, attribute), "data_slug", data_slug)
    for key in matching_process_type_keys(rule, process_type):
        value = getattr(rule.process_type[key], attribute)
        if value is not None:
            return Resolved(value, "process_type", key)
    own = getattr(rule, attribute)
    if own is not None:
        return Resolved(own, "rule")
    return Resolved(default, "default")


def resolve_delay(rule: Rule, *, data_slug: str, process_type: str) -> Resolved:
    """The delay in days of ``rule`` for an item; negative means never."""
    return resolve(rule, "delay", data_slug=data_slug, process_type=process_type, default=0)


def resolve_min_other_copies(rule: Rule, *, data_slug: str, process_type: str) -> Resolved:
    """How many other copies a delete under ``rule`` must leave for an item."""
    return resolve(
        rule,
        "min_other_copies",
        data_slug=data_slug,
        process_type=process_type,
        default=DEFAULT_MIN_OTHER_COPIES,
    )


def preference_order(policies: Mapping[str, ConnectorPolicy]) -> list[str]:
    """Connector names from most to least preferred: by priority, then by name."""
    return sorted(policies, key=lambda name: (policies[name].priority, name))


def ineffective_rules(policies: Mapping[str, ConnectorPolicy]) -> list[str]:
    """What in ``policies`` cannot do what it says, one line each naming the key path.

    - a delete rule on the most preferred connector: its copy is always the
      item's preferred one, which is never deleted;
    - a ``min_other_copies`` no item can have, with the connectors configured;
    - a copy rule with no other connector to copy from;
    - a rule whose every delay is negative (never due);
    - ``process_type`` overrides of which one is a prefix of another: the
      longest matching one applies here, the first in order did in the
      original, so an item may get another delay than there.
    """
    found: list[str] = []
    order = preference_order(policies)
    for name in order:
        policy = policies[name]
        where = f"connectors.{name}.config"
        if policy.delete is not None and name == order[0]:
            found.append(
                f"{where}.delete never applies: {name} has the lowest priority "
                f"({policy.priority}), so its copy is always an item's preferred one, "
                "which is never deleted (give another connector a lower priority)"
            )
        if policy.delete is not None:
            others = len(policies) - 1
            wanted = [
                (f"{where}.delete{path}", value)
                for path, value in _values(policy.delete, "min_other_copies")
            ]
            for path, value in wanted:
                if value > others:
                    found.append(
                        f"{path}: {value} other copies can never exist with {others} other "
                        "connector(s) configured: never deleted"
                    )
        if policy.copy is not None and len(policies) == 1:
            found.append(
                f"{where}.copy never applies: no other connector is configured to copy from"
            )
        for kind, rule in (("copy", policy.copy), ("delete", policy.delete)):
            if rule is None:
                continue
            # An item no override matches gets the rule's own delay (0 when unset).
            own = rule.delay if rule.delay is not None else 0
            delays = [own] + [value for path, value in _values(rule, "delay") if path != ".delay"]
            if all(delay < 0 for delay in delays):
                found.append(f"{where}.{kind} never applies: every delay is negative")
            keys = sorted(rule.process_type)
            for shorter in keys:
                for longer in keys:
                    if longer != shorter and longer.startswith(shorter):
                        found.append(
                            f"{where}.{kind}.process_type: {shorter!r} and {longer!r} overlap: "
                            f"the longest matching key applies here (the original took the "
                            "first in order)"
                        )
    return found


def _values(rule: Rule, attribute: str) -> list[tuple[str, int]]:
    """Where ``attribute`` is set in ``rule`` (its own value, its overrides'), and to what."""
    found = []
    own = getattr(rule, attribute)
    if own is not None:
        found.append((f".{attribute}", own))
    for kind in ("data_slug", "process_type"):
        for key, override in getattr(rule, kind).items():
            value = getattr(override, attribute)
            if value is not None:
                found.append((f".{kind}.{key}.{attribute}", value))
    return found
