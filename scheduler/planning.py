"""Set-based planning: which copies, deletes and verifications are due.

The rules of SPEC §5 (stated one item at a time in ``scheduler.policy``) are
compiled into one SQL statement that reads the catalog once: items joined to
their locations, grouped per item, in key order. Per-item delays become
``CASE`` expressions over precomputed cutoff times, the preferred location a
``MIN`` over a rank derived from the connectors' priorities, and each
(action, connector) one bit of a per-item mask; only items with a bit set
leave the database. On SQLite the items come in key order straight off the
key index, so the first rows stream out at once; PostgreSQL aggregates and
sorts, and its rows come through a server-side cursor. Memory stays flat
however large the catalog.

Nothing here reads the clock, a broker or a storage backend.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import peewee as pw

from catalog.integrity import bad_files
from catalog.models import STATUS_DAMAGED, FileStorage, ReferencedPath, StorageLocation
from catalog.queries import open_lock_counts
from catalog.sql import stream
from scheduler.policy import (
    COPY,
    DELETE,
    REMOVE,
    REPAIR,
    VERIFY,
    ItemFacts,
    LocationFacts,
    PlannedAction,
    cutoff,
)
from scheduler.rules import DEFAULT_MIN_OTHER_COPIES, ConnectorPolicy, Rule, preference_order

#: Bits of a connector's field in the per-item sums: a location there (any
#: status), an OK one, one whose verification is due, a damaged one.
HERE_BIT, OK_BIT, VERIFY_BIT, DAMAGED_BIT = 1, 2, 4, 8
#: Bits of one connector's field.
FIELD_BITS = 4
#: Connectors per SUM column: four bits each, within a signed 64-bit integer.
FIELDS_PER_SUM = 15
#: Arms per mask column (bits of a signed 64-bit integer).
ARMS_PER_MASK = 62
#: Items (the next so many by id) planned by one statement of
#: ``Planner.due_by_ranges``: what the scan holds at once, about 200 bytes an item due.
DEFAULT_PLAN_RANGE = 50_000


class DueItem(NamedTuple):
    """One item with actions due: its key, its copy source, the due arms."""

    key: str | None
    #: The connector of the preferred location, where copies come from.
    source: str | None
    #: ``(action, connector)`` pairs in output order.
    arms: tuple[tuple[str, str], ...]
    #: The item's id in the catalog (what jobs name it by: keys are optional).
    item_id: int = 0
    #: ``(target, source)`` of each due repair (``scheduler.policy.repair_source``).
    repairs: tuple[tuple[str, str | None], ...] = ()

    def source_of(self, action: str, connector: str) -> str | None:
        """The source ``plan`` names for an arm: a copy's or a repair's, else None."""
        if action == COPY:
            return self.source
        if action == REPAIR:
            return dict(self.repairs).get(connector)
        return None


@dataclass
class _Sql:
    """SQL text with its parameters, built up piece by piece.

    With ``inline``, values are written into the text as literals instead:
    SQLite shares the work of identical aggregate calls only when their
    arguments are identical expressions, and two ``?`` never are.
    """

    param: str
    inline: bool = False
    text: str = ""
    params: list[Any] = field(default_factory=list)

    def add(self, text: str, *params: Any) -> _Sql:
        self.text += text
        self.params.extend(params)
        return self

    def value(self, value: Any) -> _Sql:
        if self.inline:
            literal = _literal(value)
            if literal is not None:
                return self.add(literal)
        return self.add(self.param, value)


def _literal(value: Any) -> str | None:
    """``value`` as an SQL literal, or None when it had better stay a parameter."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and "\x00" not in value:
        return "'" + value.replace("'", "''") + "'"
    return None


class Planner:
    """Compiles the policies into one grouped SQL statement and runs it.

    One pass over the catalog: every item joined to its locations, grouped per
    item, in key order. Per connector, aggregates over the item's locations
    (has one here? an eligible ``OK`` one? how many ``OK`` in all? the rank of
    the preferred one) feed one ``CASE`` per arm, (action, connector), whose
    sum is a bit mask of the arms due for that item. Only items with some
    action due leave the database; Python merely expands the bits, in arm
    order, which is the ``(action, target)`` order of SPEC §6.
    """

    def __init__(
        self,
        policies: Mapping[str, ConnectorPolicy],
        database: pw.Database,
        *,
        removal_delay: int = 0,
    ) -> None:
        self.policies = dict(policies)
        self.database = database
        #: Days after its removal that a removed item's copies go (negative: never).
        self.removal_delay = removal_delay
        self.postgres = isinstance(database, pw.PostgresqlDatabase)
        self.order = preference_order(self.policies)
        self.rank = {name: position for position, name in enumerate(self.order)}
        #: Every (action, connector) with a rule, in output order; bit i of an
        #: item's mask stands for ``arms[i]``.
        #: A damaged copy is repaired whatever the rules say: every connector
        #: has that arm, where there is another to repair from.
        repairs = True if len(self.policies) > 1 else None
        self.arms: tuple[tuple[str, str], ...] = tuple(
            sorted(
                (action, name)
                for name, policy in self.policies.items()
                for action, rule in (
                    (COPY, policy.copy),
                    (DELETE, policy.delete),
                    (REMOVE, True),  # every connector: a removed item's copies all go
                    (REPAIR, repairs),
                    (VERIFY, policy.verify),
                )
                if rule is not None
            )
        )
        self._expanded: dict[tuple[int, ...], tuple[tuple[str, str], ...]] = {}
        #: Where each connector's bit field lies: (which SUM, bit offset).
        self._slot = {
            name: (position // FIELDS_PER_SUM, FIELD_BITS * (position % FIELDS_PER_SUM))
            for position, name in enumerate(self.order)
        }

    # -- value conversion -------------------------------------------------

    def _time(self, moment: datetime) -> Any:
        # peewee stores SQLite datetimes as text in this very format, so plain
        # text comparison orders them; PostgreSQL compares real timestamps.
        return moment if self.postgres else moment.isoformat(" ")

    # -- expressions ------------------------------------------------------

    def _rank_case(self, sql: _Sql, column: str) -> None:
        """Rank of the connector in ``column``; NULL for unconfigured ones."""
        sql.add(f"CASE {column}")
        for name in self.order:
            sql.add(" WHEN ").value(name).add(f" THEN {self.rank[name]}")
        sql.add(" END")

    def _override_case(
        self, sql: _Sql, rule: Rule, attribute: str, default: Any, convert: Any
    ) -> None:
        """Per-item value of a rule attribute, resolved as ``rules.resolve`` does.

        ``convert`` turns a setting into its SQL value (a cutoff time for a
        delay). A ``CASE`` picks the first match: data_slug overrides, then
        process_type overrides longest first, then the rule's own value.
        """
        whens: list[tuple[str, str, Any]] = []
        for slug, override in sorted(rule.data_slug.items()):
            if getattr(override, attribute) is not None:
                whens.append(("f.data_slug = ", slug, getattr(override, attribute)))
        keys = sorted(rule.process_type, key=lambda key: (-len(key), key))
        for key in keys:
            override = rule.process_type[key]
            if getattr(override, attribute) is not None:
                whens.append(
                    (f"substr(f.process_type, 1, {len(key)}) = ", key, getattr(override, attribute))
                )
        own = getattr(rule, attribute)
        fallback = convert(own if own is not None else default)
        if not whens:
            sql.value(fallback)
            return
        sql.add("CASE")
        for test, operand, value in whens:
            sql.add(f" WHEN {test}").value(operand).add(" THEN ").value(convert(value))
        sql.add(" ELSE ").value(fallback).add(" END")

    def _older(self, sql: _Sql, column: str, rule: Rule, now: datetime) -> None:
        """``column`` lies before the item's cutoff under ``rule`` (never when negative)."""

        def convert(days: int) -> Any:
            moment = cutoff(now, days)
            return None if moment is None else self._time(moment)

        sql.add(f"{column} < (")
        self._override_case(sql, rule, "delay", 0, convert)
        sql.add(")")
        if self.postgres:
            sql.add("::timestamp")

    @staticmethod
    def _never(rule: Rule) -> bool:
        """True when no item can ever have a non-negative delay under ``rule``."""
        delays = [rule.delay if rule.delay is not None else 0]
        delays += [o.delay for o in rule.data_slug.values() if o.delay is not None]
        delays += [o.delay for o in rule.process_type.values() if o.delay is not None]
        return all(delay < 0 for delay in delays)

    # -- per-item facts, folded into as few aggregates as possible --------
    #
    # An item has at most one location per connector (a unique index says
    # so), so a SUM over its locations of per-connector bit fields is their OR:
    # each configured connector gets four bits (here, OK here, verification
    # due here, damaged here) in one of a few integer columns. SQLite computes
    # an aggregate once however often the statement names it, so long as the
    # repetitions are the very same expression; every test below reads these
    # few sums.

    def _facts(self, chunk: int, now: datetime) -> _Sql:
        """The SUM of chunk ``chunk``'s bit fields over the item's locations."""
        sql = _Sql(param=self.database.param, inline=not self.postgres)
        sql.add("CAST(SUM(CASE l.connector_name")
        for name in self.order[chunk * FIELDS_PER_SUM : (chunk + 1) * FIELDS_PER_SUM]:
            shift = self._slot[name][1]
            sql.add(" WHEN ").value(name).add(" THEN (1 + CASE WHEN l.status = 'OK' THEN 2")
            verify = self.policies[name].verify
            if verify is not None:
                limit = cutoff(now, verify.interval)
                assert limit is not None
                sql.add(" + CASE WHEN l.last_verified IS NULL OR l.last_verified < ")
                sql.value(self._time(limit)).add(" THEN 4 ELSE 0 END")
            sql.add(f" WHEN l.status = 'DM' THEN {DAMAGED_BIT}")
            sql.add(f" ELSE 0 END) * {1 << shift}")
        sql.add(" ELSE 0 END) AS BIGINT)")
        return sql

    def _any(self, sql: _Sql, facts: list[_Sql], names: Sequence[str], bit: int) -> None:
        """True when ``bit`` is set for any of ``names`` (false for none)."""
        masks: dict[int, int] = {}
        for name in names:
            chunk, shift = self._slot[name]
            masks[chunk] = masks.get(chunk, 0) | bit << shift
        if not masks:
            sql.add("1 = 0")
            return
        sql.add("(")
        for position, (chunk, mask) in enumerate(sorted(masks.items())):
            sql.add(" OR " if position else "").add("(").add(
                facts[chunk].text, *facts[chunk].params
            )
            sql.add(f" & {mask}) <> 0")
        sql.add(")")

    def _source(self, sql: _Sql, facts: list[_Sql]) -> None:
        """Rank of the item's preferred location: its best configured ``OK`` one."""
        sql.add("CASE")
        for name in self.order:
            sql.add(" WHEN ")
            self._any(sql, facts, [name], OK_BIT)
            sql.add(f" THEN {self.rank[name]}")
        sql.add(" END")

    # -- arms: each a condition on one item group -------------------------

    def _copy_due(
        self, sql: _Sql, facts: list[_Sql], policy: ConnectorPolicy, now: datetime
    ) -> bool:
        rule = policy.copy
        assert rule is not None
        if self._never(rule):
            return False
        sql.add("f.removed IS NULL AND f.status = 'OK' AND ")
        self._older(sql, "f.created", rule, now)
        sql.add(" AND NOT ")
        self._any(sql, facts, [policy.name], HERE_BIT)
        # A source: an OK copy on a configured connector.
        sql.add(" AND ")
        self._any(sql, facts, self.order, OK_BIT)
        return True

    def _delete_due(
        self, sql: _Sql, facts: list[_Sql], policy: ConnectorPolicy, now: datetime
    ) -> bool:
        rule = policy.delete
        assert rule is not None
        better = self.order[: self.rank[policy.name]]
        if self._never(rule) or not better:
            # The most preferred connector always holds the preferred copy.
            return False
        sql.add("f.removed IS NULL AND f.status = 'OK' AND ")
        self._older(sql, "f.created", rule, now)
        # The location here is OK, idle long enough and unlocked; the lock
        # probe runs only for locations that pass the cheaper tests.
        sql.add(" AND MAX(CASE WHEN l.connector_name = ").value(policy.name)
        sql.add(" AND l.status = 'OK' AND ")
        self._older(sql, "l.last_update", rule, now)
        sql.add(
            " THEN CASE WHEN EXISTS (SELECT 1 FROM access_log a"
            " WHERE a.storage_location_id = l.id AND a.finished IS NULL)"
            " THEN 0 ELSE 1 END ELSE 0 END) = 1"
            # The copies that count: OK, on a connector we can confirm them on.
            " AND SUM(CASE WHEN l.status = 'OK' AND "
        )
        self._configured(sql, "l.connector_name")
        sql.add(" THEN 1 ELSE 0 END) > ")
        self._override_case(
            sql, rule, "min_other_copies", DEFAULT_MIN_OTHER_COPIES, lambda value: value
        )
        # Not the preferred location: an OK copy exists on a better connector.
        sql.add(" AND ")
        self._any(sql, facts, better, OK_BIT)
        return True

    def _verify_due(
        self, sql: _Sql, facts: list[_Sql], policy: ConnectorPolicy, now: datetime
    ) -> bool:
        assert policy.verify is not None
        sql.add("f.removed IS NULL AND ")
        self._any(sql, facts, [policy.name], VERIFY_BIT)
        return True

    def _remove_due(
        self, sql: _Sql, facts: list[_Sql], policy: ConnectorPolicy, now: datetime
    ) -> bool:
        """Removed before the grace, and a location here not being deleted, unlocked."""
        limit = cutoff(now, self.removal_delay)
        if limit is None:
            return False
        sql.add("f.removed IS NOT NULL AND f.removed < ").value(self._time(limit))
        if self.postgres:
            sql.add("::timestamp")
        sql.add(" AND MAX(CASE WHEN l.connector_name = ").value(policy.name)
        sql.add(
            " AND l.status <> 'DE' THEN CASE WHEN EXISTS (SELECT 1 FROM access_log a"
            " WHERE a.storage_location_id = l.id AND a.finished IS NULL)"
            " THEN 0 ELSE 1 END ELSE 0 END) = 1"
        )
        return True

    def _repair_due(
        self, sql: _Sql, facts: list[_Sql], policy: ConnectorPolicy, now: datetime
    ) -> bool:
        """Damaged here, and a file bad here is good on another configured copy.

        An OK copy elsewhere holds every file; without one, a damaged copy
        elsewhere must hold one of the files bad here good (have no bad row
        for it). That probe runs only for items with a damaged copy here,
        which are few.
        """
        sql.add("f.removed IS NULL AND ")
        self._any(sql, facts, [policy.name], DAMAGED_BIT)
        sql.add(" AND (")
        self._any(sql, facts, [name for name in self.order if name != policy.name], OK_BIT)
        sql.add(
            " OR EXISTS (SELECT 1 FROM storage_location t JOIN location_file x"
            " ON x.storage_location_id = t.id AND x.problem IS NOT NULL"
            " WHERE t.file_storage_id = f.id AND t.connector_name = "
        ).value(policy.name)
        sql.add(
            " AND EXISTS (SELECT 1 FROM storage_location m WHERE m.file_storage_id = f.id"
            " AND m.id <> t.id AND m.status = 'DM' AND "
        )
        self._configured(sql, "m.connector_name")
        sql.add(
            " AND NOT EXISTS (SELECT 1 FROM location_file y WHERE y.storage_location_id = m.id"
            " AND y.referenced_path_id = x.referenced_path_id AND y.problem IS NOT NULL))))"
        )
        return True

    def _configured(self, sql: _Sql, column: str) -> None:
        """``column`` names a configured connector."""
        sql.add(f"{column} IN (")
        for number, name in enumerate(self.order):
            sql.add(", " if number else "").value(name)
        sql.add(")")

    def _masks(self, facts: list[_Sql], now: datetime) -> list[_Sql] | None:
        """Per ``ARMS_PER_MASK`` arms, the sum of ``CASE WHEN <arm due> THEN 2**i``.

        None if no arm can ever fire.
        """
        builders = {
            COPY: self._copy_due,
            DELETE: self._delete_due,
            REMOVE: self._remove_due,
            REPAIR: self._repair_due,
            VERIFY: self._verify_due,
        }
        masks = []
        fired = False
        for start in range(0, len(self.arms), ARMS_PER_MASK):
            sql = _Sql(param=self.database.param, inline=not self.postgres)
            terms = 0
            for bit, (action, name) in enumerate(self.arms[start : start + ARMS_PER_MASK]):
                mark = (len(sql.text), len(sql.params))
                sql.add(" + " if terms else "").add("CASE WHEN ")
                if builders[action](sql, facts, self.policies[name], now):
                    sql.add(f" THEN {1 << bit} ELSE 0 END")
                    terms += 1
                else:
                    sql.text = sql.text[: mark[0]]
                    del sql.params[mark[1] :]
            if not terms:
                sql.add("0")
            fired = fired or terms > 0
            masks.append(sql)
        return masks if fired else None

    def compile(self, now: datetime, ids: tuple[int, int] | None = None) -> _Sql | None:
        """The whole plan as one statement, or None when no rule can ever fire.

        Its rows are ``(key, id, source rank, facts..., masks...)`` for the
        items with something due, ordered by key (no key first), then id.
        ``ids``: only the items whose id is above the first and at most the second.
        """
        inline = not self.postgres
        chunks = (len(self.order) + FIELDS_PER_SUM - 1) // FIELDS_PER_SUM
        facts = [self._facts(chunk, now) for chunk in range(chunks)]
        masks = self._masks(facts, now)
        if masks is None:
            return None
        sql = _Sql(param=self.database.param, inline=inline)
        sql.add("SELECT f.key, f.id, ")
        self._source(sql, facts)
        for fact in facts:
            sql.add(", ").add(fact.text, *fact.params)
        for number, mask in enumerate(masks):
            sql.add(", ").add(mask.text, *mask.params).add(f" AS mask{number}")
        sql.add(" FROM file_storage f JOIN storage_location l ON l.file_storage_id = f.id")
        if ids is not None:
            # On both sides of the join: PostgreSQL then reads the locations of
            # the range from their index, rather than every location before it.
            sql.add(" WHERE f.id > ").value(ids[0]).add(" AND f.id <= ").value(ids[1])
            sql.add(" AND l.file_storage_id > ").value(ids[0])
            sql.add(" AND l.file_storage_id <= ").value(ids[1])
        sql.add(" GROUP BY f.key, f.id HAVING ")
        for number, mask in enumerate(masks):
            sql.add(" OR " if number else "")
            if self.postgres:
                sql.add("(").add(mask.text, *mask.params).add(") <> 0")
            else:
                # SQLite names the result column here and computes it once.
                sql.add(f"mask{number} <> 0")
        sql.add(" ORDER BY f.key NULLS FIRST, f.id" if self.postgres else " ORDER BY f.key, f.id")
        return sql

    def expand(self, masks: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
        """The arms ``(action, connector)`` set in ``masks``, in output order."""
        arms = self._expanded.get(masks)
        if arms is None:
            arms = tuple(
                arm
                for bit, arm in enumerate(self.arms)
                if masks[bit // ARMS_PER_MASK] >> (bit % ARMS_PER_MASK) & 1
            )
            self._expanded[masks] = arms
        return arms

    def _repair_sources(
        self, arms: tuple[tuple[str, str], ...], source: str | None, facts: tuple[int, ...]
    ) -> tuple[tuple[str, str | None], ...]:
        """The source ``plan`` names for each due repair (``scheduler.policy.repair_source``)."""
        repairs = []
        for action, target in arms:
            if action != REPAIR:
                continue
            found = source
            if found is None:
                found = next(
                    (
                        name
                        for name in self.order
                        if name != target
                        and facts[self._slot[name][0]] >> self._slot[name][1] & DAMAGED_BIT
                    ),
                    None,
                )
            repairs.append((target, found))
        return tuple(repairs)

    def due(self, *, now: datetime, ids: tuple[int, int] | None = None) -> Iterator[DueItem]:
        """Stream, per item with something due, its key, copy source and arms.

        In one transaction, one statement. ``ids``: only the items whose id
        is above the first and at most the second.
        """
        sql = self.compile(now, ids)
        if sql is None:
            return
        order = self.order
        chunks = (len(self.order) + FIELDS_PER_SUM - 1) // FIELDS_PER_SUM
        # Which bits of each mask column are repairs: only those items need
        # their facts decoded (a repair's source), and they are few.
        repair_bits = [0] * ((len(self.arms) + ARMS_PER_MASK - 1) // ARMS_PER_MASK)
        for bit, (action, _) in enumerate(self.arms):
            if action == REPAIR:
                repair_bits[bit // ARMS_PER_MASK] |= 1 << (bit % ARMS_PER_MASK)
        with self.database.atomic():
            if ids is not None and self.postgres and (self.database.server_version or 0) >= 110000:
                # PostgreSQL compiles a statement this large to machine code
                # (JIT) in about a second, once per range: 23 of the 29 s that
                # the ranges of a million items took, against 6.5 s without.
                self.database.execute_sql("SET LOCAL jit = off")
            if chunks == 1 and len(repair_bits) == 1:
                # The usual case (up to 15 connectors), without unpacking lists per row.
                [repairing] = repair_bits
                expanded = self._expanded
                for key, item_id, src, fact, mask in self._rows(sql):
                    source = order[src] if src is not None else None
                    arms = expanded.get((mask,)) or self.expand((mask,))
                    repairs = ()
                    if mask & repairing:
                        repairs = self._repair_sources(arms, source, (fact,))
                    yield DueItem(key, source, arms, item_id, repairs)
                return
            for key, item_id, src, *rest in self._rows(sql):
                source = order[src] if src is not None else None
                facts, masks = tuple(rest[:chunks]), tuple(rest[chunks:])
                arms = self.expand(masks)
                repairs = ()
                if any(mask & bits for mask, bits in zip(masks, repair_bits, strict=True)):
                    repairs = self._repair_sources(arms, source, facts)
                yield DueItem(key, source, arms, item_id, repairs)

    def due_by_ranges(
        self, *, now: datetime, width: int = DEFAULT_PLAN_RANGE
    ) -> Iterator[list[DueItem]]:
        """What ``due`` finds, the next ``width`` items by id at a time, each range read whole.

        For a caller that writes to the catalog between ranges (the scan):
        each range is planned in a statement and transaction of its own,
        read to its end before it is handed over, so no statement is open
        while the caller writes, and what is held at once is one range's
        due items, however large the catalog. A range is the next ``width``
        items by id (however sparse the ids), up to the largest id when the
        plan began (items made meanwhile wait for the next plan). Items are
        in key order within a range. Each range sees the catalog as it is
        when it is planned.
        """
        if self.compile(now) is None:
            return
        lowest, highest = (
            FileStorage.select(pw.fn.MIN(FileStorage.id), pw.fn.MAX(FileStorage.id)).tuples().get()
        )
        if highest is None:
            return
        after = lowest - 1
        while after < highest:
            boundary = (
                FileStorage.select(FileStorage.id)
                .where(FileStorage.id > after)
                .order_by(FileStorage.id)
                .offset(width - 1)
                .limit(1)
                .scalar()
            )
            upto = highest if boundary is None else min(boundary, highest)
            found = list(self.due(now=now, ids=(after, upto)))
            if found:
                yield found
            after = upto

    def plan(self, *, now: datetime) -> Iterator[PlannedAction]:
        """Stream the due actions in ``plan`` order (key, action, target)."""
        for item in in_plan_order(self.due(now=now)):
            for action, connector in item.arms:
                yield PlannedAction(item.key, action, connector, item.source_of(action, connector))

    def _rows(self, sql: _Sql) -> Iterator[tuple[Any, ...]]:
        """Run ``sql`` inside the caller's transaction, fetching rows in batches."""
        return stream(self.database, sql.text, sql.params, name="resolwe_storage_plan")


def in_plan_order(items: Iterable[DueItem]) -> Iterator[DueItem]:
    """``items`` as ``due`` streams them (by key, items without one first), in ``plan`` order.

    The items without a key share one (null), so SPEC §6's order (key,
    action, target) sorts their actions among them by action and target,
    not item by item: they are held (an arm each) until the first item with
    a key, then given out sorted. The others stream as they come.
    """
    keyless: list[DueItem] = []
    for item in items:
        if item.key is None:
            keyless.extend(item._replace(arms=(arm,)) for arm in item.arms)
            continue
        if keyless:
            yield from sorted(keyless, key=lambda one: one.arms[0])
            keyless = []
        yield item
    yield from sorted(keyless, key=lambda one: one.arms[0])


def plan(
    policies: Mapping[str, ConnectorPolicy],
    database: pw.Database,
    *,
    now: datetime,
    removal_delay: int = 0,
) -> Iterator[PlannedAction]:
    """Stream every due action of the catalog in ``database`` at ``now``."""
    return Planner(policies, database, removal_delay=removal_delay).plan(now=now)


def item_facts(item: FileStorage) -> ItemFacts:
    """What the rules need to know of ``item``, read from the catalog."""
    locks = open_lock_counts(item)
    locations = tuple(
        LocationFacts(
            connector=location.connector_name,
            status=location.status,
            last_update=location.last_update,
            last_verified=location.last_verified,
            open_access_logs=locks.get(location.id, 0),
            damaged_files=frozenset(bad.path for bad in bad_files(location.id))
            if location.status == STATUS_DAMAGED
            else frozenset(),
        )
        for location in StorageLocation.select()
        .where(StorageLocation.file_storage == item)
        .order_by(StorageLocation.connector_name)
    )
    files = tuple(
        path
        for (path,) in ReferencedPath.select(ReferencedPath.path)
        .where((ReferencedPath.file_storage == item) & ~ReferencedPath.path.endswith("/"))
        .order_by(ReferencedPath.path)
        .tuples()
    )
    return ItemFacts(
        key=item.key,
        data_slug=item.data_slug,
        process_type=item.process_type,
        status=item.status,
        created=item.created,
        locations=locations,
        files=files,
        removed=item.removed,
    )
