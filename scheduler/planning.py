"""Set-based planning: which copies, deletes and verifications are due.

The rules of SPEC §5 (stated one item at a time in ``scheduler.policy``) are
compiled into one SQL statement: a ``UNION ALL`` with one arm per connector
and action, each a filter over the catalog's indexes. Per-item delays become
``CASE`` expressions over precomputed cutoff times, the preferred location a
``MIN`` over a rank derived from the connectors' priorities. The database
sorts; rows stream out through a server-side cursor (PostgreSQL) or SQLite's
lazy cursor, so memory stays flat however large the catalog.

Nothing here reads the clock, a broker or a storage backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import peewee as pw

from catalog.models import FileStorage, StorageLocation
from catalog.queries import open_lock_counts
from scheduler.policy import (
    COPY,
    DELETE,
    VERIFY,
    ItemFacts,
    LocationFacts,
    PlannedAction,
    cutoff,
)
from scheduler.rules import DEFAULT_MIN_OTHER_COPIES, ConnectorPolicy, Rule, preference_order

#: Rows fetched per round trip from PostgreSQL's server-side cursor.
DEFAULT_FETCH_ROWS = 20_000


@dataclass
class _Sql:
    """SQL text with its parameters, built up piece by piece."""

    param: str
    text: str = ""
    params: list[Any] | None = None

    def __post_init__(self) -> None:
        self.params = []

    def add(self, text: str, *params: Any) -> _Sql:
        self.text += text
        assert self.params is not None
        self.params.extend(params)
        return self

    def value(self, value: Any) -> _Sql:
        return self.add(self.param, value)


class Planner:
    """Compiles the policies into SQL and runs it against a bound catalog."""

    def __init__(self, policies: Mapping[str, ConnectorPolicy], database: pw.Database) -> None:
        self.policies = dict(policies)
        self.database = database
        self.postgres = isinstance(database, pw.PostgresqlDatabase)
        self.order = preference_order(self.policies)
        self.rank = {name: position for position, name in enumerate(self.order)}
        arms = sorted(
            (action, name)
            for name, policy in self.policies.items()
            for action, rule in (
                (COPY, policy.copy),
                (DELETE, policy.delete),
                (VERIFY, policy.verify),
            )
            if rule is not None
        )
        self.arms = {arm: position for position, arm in enumerate(arms)}

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

    def _cutoff_case(self, sql: _Sql, rule: Rule, now: datetime) -> None:
        def convert(days: int) -> Any:
            moment = cutoff(now, days)
            return None if moment is None else self._time(moment)

        sql.add("(")
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

    # -- arms -------------------------------------------------------------

    def _copy_arm(self, sql: _Sql, policy: ConnectorPolicy, now: datetime) -> bool:
        assert policy.copy is not None
        if self._never(policy.copy):
            return False
        sql.add(f"SELECT item_key, id, {self.arms[(COPY, policy.name)]} AS arm, src FROM (")
        sql.add("SELECT f.key AS item_key, f.id AS id, (SELECT MIN(")
        self._rank_case(sql, "s.connector_name")
        sql.add(
            ") FROM storage_location s WHERE s.file_storage_id = f.id AND s.status = 'OK') AS src"
            " FROM file_storage f WHERE f.status = 'OK' AND f.created < "
        )
        self._cutoff_case(sql, policy.copy, now)
        sql.add(
            " AND NOT EXISTS (SELECT 1 FROM storage_location t"
            " WHERE t.file_storage_id = f.id AND t.connector_name = "
        ).value(policy.name)
        sql.add(")) c WHERE src IS NOT NULL")
        return True

    def _delete_arm(self, sql: _Sql, policy: ConnectorPolicy, now: datetime) -> bool:
        rule = policy.delete
        assert rule is not None
        better = self.order[: self.rank[policy.name]]
        if self._never(rule) or not better:
            # The most preferred connector always holds the preferred copy.
            return False
        sql.add(
            f"SELECT f.key AS item_key, f.id AS id, {self.arms[(DELETE, policy.name)]} AS arm,"
            " NULL AS src FROM storage_location l"
            " JOIN file_storage f ON f.id = l.file_storage_id"
            " WHERE l.connector_name = "
        ).value(policy.name)
        sql.add(" AND l.status = 'OK' AND f.status = 'OK' AND f.created < ")
        self._cutoff_case(sql, rule, now)
        sql.add(" AND l.last_update < ")
        self._cutoff_case(sql, rule, now)
        sql.add(
            " AND NOT EXISTS (SELECT 1 FROM access_log a"
            " WHERE a.storage_location_id = l.id AND a.finished IS NULL)"
            " AND (SELECT COUNT(*) FROM storage_location o"
            " WHERE o.file_storage_id = f.id AND o.status = 'OK') > "
        )
        self._override_case(
            sql, rule, "min_other_copies", DEFAULT_MIN_OTHER_COPIES, lambda value: value
        )
        # Not the preferred location: an OK copy exists on a better connector.
        sql.add(
            " AND EXISTS (SELECT 1 FROM storage_location p"
            " WHERE p.file_storage_id = f.id AND p.status = 'OK' AND p.connector_name IN ("
        )
        for position, name in enumerate(better):
            if position:
                sql.add(", ")
            sql.value(name)
        sql.add("))")
        return True

    def _verify_arm(self, sql: _Sql, policy: ConnectorPolicy, now: datetime) -> bool:
        assert policy.verify is not None
        limit = cutoff(now, policy.verify.interval)
        assert limit is not None
        sql.add(
            f"SELECT f.key AS item_key, f.id AS id, {self.arms[(VERIFY, policy.name)]} AS arm,"
            " NULL AS src FROM storage_location l"
            " JOIN file_storage f ON f.id = l.file_storage_id"
            " WHERE l.connector_name = "
        ).value(policy.name)
        sql.add(" AND l.status = 'OK' AND (l.last_verified IS NULL OR l.last_verified < ")
        sql.value(self._time(limit)).add(")")
        return True

    def compile(self, now: datetime) -> _Sql | None:
        """The whole plan as one statement, or None when no rule can ever fire."""
        sql = _Sql(param=self.database.param)
        builders = {COPY: self._copy_arm, DELETE: self._delete_arm, VERIFY: self._verify_arm}
        first = True
        for action, name in self.arms:
            mark = (len(sql.text), len(sql.params or []))
            if not first:
                sql.add(" UNION ALL ")
            if builders[action](sql, self.policies[name], now):
                first = False
            else:
                sql.text = sql.text[: mark[0]]
                del sql.params[mark[1] :]  # type: ignore[index]
        if first:
            return None
        sql.text = (
            f"SELECT item_key, arm, src FROM ({sql.text}) due"
            " ORDER BY item_key NULLS FIRST, arm, id"
        )
        return sql

    def plan(self, *, now: datetime) -> Iterator[PlannedAction]:
        """Stream the due actions in ``plan`` order (key, action, target)."""
        sql = self.compile(now)
        if sql is None:
            return
        arms = {position: arm for arm, position in self.arms.items()}
        with self.database.atomic():
            for key, arm, src in self._rows(sql):
                action, connector = arms[arm]
                source = self.order[src] if src is not None else None
                yield PlannedAction(key, action, connector, source)

    def _rows(self, sql: _Sql) -> Iterator[tuple[Any, ...]]:
        """Run ``sql`` inside the caller's transaction, fetching rows in batches."""
        cursor = self.database.cursor()
        if not self.postgres:
            cursor.execute(sql.text, sql.params)
            while rows := cursor.fetchmany(DEFAULT_FETCH_ROWS):
                yield from rows
            return
        # A server-side cursor keeps PostgreSQL from sending the whole result
        # at once; peewee runs psycopg2 in autocommit mode with explicit
        # transactions, so the cursor is declared in SQL rather than by name.
        cursor.execute(f"DECLARE resolwe_storage_plan NO SCROLL CURSOR FOR {sql.text}", sql.params)
        try:
            while True:
                cursor.execute(f"FETCH FORWARD {DEFAULT_FETCH_ROWS} FROM resolwe_storage_plan")
                rows = cursor.fetchall()
                if not rows:
                    break
                yield from rows
        finally:
            cursor.execute("CLOSE resolwe_storage_plan")


def plan(
    policies: Mapping[str, ConnectorPolicy], database: pw.Database, *, now: datetime
) -> Iterator[PlannedAction]:
    """Stream every due action of the catalog in ``database`` at ``now``."""
    return Planner(policies, database).plan(now=now)


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
        )
        for location in StorageLocation.select()
        .where(StorageLocation.file_storage == item)
        .order_by(StorageLocation.connector_name)
    )
    return ItemFacts(
        key=item.key,
        data_slug=item.data_slug,
        process_type=item.process_type,
        status=item.status,
        created=item.created,
        locations=locations,
    )
