"""SPEC §5, condition by condition: the set-based planner and the per-item explainer.

Every case runs on SQLite and on PostgreSQL, and every case is checked twice:
against the SQL planner (``scheduler.planning``) and against the readable
statement of the rules (``scheduler.policy``). The two must agree with the
expected answer, and so with each other.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import NamedTuple

import peewee as pw
import pytest

from catalog.models import FileStorage, StorageLocation
from scheduler import planning
from scheduler.planning import Planner, item_facts, plan
from scheduler.policy import ItemFacts, LocationFacts, PlannedAction, due_actions, explain
from scheduler.rules import ConnectorPolicy, Override, Rule, VerifyRule
from tests.unit.scheduler.conftest import store

NOW = datetime(2026, 6, 1, 12, 0, 0)


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def loc(
    connector: str,
    status: str = "OK",
    *,
    updated: float = 100,
    locks: int = 0,
    verified: float | None = 1,
) -> LocationFacts:
    return LocationFacts(
        connector=connector,
        status=status,
        last_update=ago(updated),
        last_verified=ago(verified) if verified is not None else None,
        open_access_logs=locks,
    )


def item(
    *locations: LocationFacts,
    created: float = 100,
    status: str = "OK",
    slug: str = "slug",
    ptype: str = "data:test:",
    key: str = "item",
    files: tuple[str, ...] = (),
    removed: float | None = None,
) -> ItemFacts:
    return ItemFacts(
        key=key,
        data_slug=slug,
        process_type=ptype,
        status=status,
        created=ago(created),
        locations=locations,
        files=files,
        removed=ago(removed) if removed is not None else None,
    )


def damaged(connector: str, *bad: str, updated: float = 100) -> LocationFacts:
    """A damaged location: ``bad`` are its files that are not good."""
    return LocationFacts(
        connector=connector,
        status="DM",
        last_update=ago(updated),
        last_verified=None,
        damaged_files=frozenset(bad),
    )


AB = ("a", "b")


POLICIES = {
    "local": ConnectorPolicy(
        "local", priority=0, delete=Rule(delay=2, data_slug={"keep": Override(delay=-1)})
    ),
    "S3": ConnectorPolicy(
        "S3",
        priority=10,
        copy=Rule(delay=5),
        delete=Rule(
            delay=30,
            data_slug={"precious": Override(min_other_copies=2), "soon": Override(delay=1)},
            process_type={"data:big:": Override(delay=0)},
        ),
        verify=VerifyRule(interval=30),
    ),
    "GCS": ConnectorPolicy(
        "GCS",
        priority=20,
        copy=Rule(
            delay=2,
            data_slug={"fast": Override(delay=0), "never": Override(delay=-5)},
            process_type={
                "data:": Override(delay=1),
                "data:alignment:": Override(delay=-1),
                "data:alignment:bam:": Override(delay=3),
            },
        ),
        delete=Rule(delay=10, min_other_copies=1),
    ),
    # No rules at all: only a place that holds copies.
    "archive": ConnectorPolicy("archive", priority=5),
    # A copy rule without a delay: due at once.
    "tape": ConnectorPolicy("tape", priority=50, copy=Rule()),
}


def copy(target: str, source: str = "local") -> PlannedAction:
    return PlannedAction("item", "copy", target, source)


def delete(connector: str) -> PlannedAction:
    return PlannedAction("item", "delete", connector)


def verify(connector: str) -> PlannedAction:
    return PlannedAction("item", "verify", connector)


def remove(connector: str) -> PlannedAction:
    return PlannedAction("item", "remove", connector)


def repair(target: str, source: str | None = "local") -> PlannedAction:
    return PlannedAction("item", "repair", target, source)


class Case(NamedTuple):
    facts: ItemFacts
    expected: set[PlannedAction]


ALL_COPIES = {copy("S3"), copy("GCS"), copy("tape")}

CASES: dict[str, Case] = {
    # -- copy -------------------------------------------------------------
    "copy: due to every connector with a copy rule": Case(item(loc("local")), ALL_COPIES),
    "copy 2: item status not OK copies nothing": Case(item(loc("local"), status="PR"), set()),
    "copy 2: status ER copies nothing": Case(item(loc("local"), status="ER"), set()),
    "copy 3: item without locations copies nothing": Case(item(), set()),
    "copy 3: a PR location on the target blocks the copy": Case(
        item(loc("local"), loc("S3", "PR")), {copy("GCS"), copy("tape")}
    ),
    "copy 3: an UP location on the target blocks the copy": Case(
        item(loc("local"), loc("GCS", "UP")), {copy("S3"), copy("tape")}
    ),
    "copy 3: a DE location on the target blocks the copy": Case(
        item(loc("local"), loc("tape", "DE")), {copy("S3"), copy("GCS")}
    ),
    "copy 4: created exactly at now - delay is not due (strict)": Case(
        item(loc("local"), created=5), {copy("GCS"), copy("tape")}
    ),
    "copy 4: one second older than now - delay is due": Case(
        item(loc("local"), created=5 + 1 / 86400), ALL_COPIES
    ),
    "copy 4: a missing delay is 0, due at once": Case(
        item(loc("local"), created=1 / 86400), {copy("tape")}
    ),
    "copy 4: created in the future is never due": Case(item(loc("local"), created=-1), set()),
    "copy: process_type override 'data:' (delay 1) applies by prefix": Case(
        item(loc("local"), created=1.5, ptype="data:reads:"), {copy("GCS"), copy("tape")}
    ),
    "copy: the longest prefix wins, negative means never": Case(
        item(loc("local"), created=500, ptype="data:alignment:sam:"),
        {copy("S3"), copy("tape")},
    ),
    "copy: the longest prefix wins over shorter negative one": Case(
        item(loc("local"), created=4, ptype="data:alignment:bam:"),
        {copy("GCS"), copy("tape")},
    ),
    "copy: a prefix is not a match the other way round": Case(
        item(loc("local"), created=1.5, ptype="dat"), {copy("tape")}
    ),
    "copy: data_slug override beats process_type override": Case(
        item(loc("local"), created=500, slug="fast", ptype="data:alignment:"),
        ALL_COPIES,
    ),
    "copy: negative data_slug override means never": Case(
        item(loc("local"), created=500, slug="never"), {copy("S3"), copy("tape")}
    ),
    "copy: the source is the preferred OK location": Case(
        item(loc("local", "UP"), loc("archive"), loc("S3", locks=1, verified=1)),
        {copy("GCS", "archive"), copy("tape", "archive")},
    ),
    "copy: no OK location, no source, no copy": Case(
        item(loc("local", "PR"), loc("archive", "UP")), set()
    ),
    "copy: a copy rule is needed (archive has none)": Case(
        item(loc("S3"), loc("GCS"), loc("tape")), set()
    ),
    # -- delete -----------------------------------------------------------
    "delete: due from S3 when all conditions hold": Case(
        item(loc("local"), loc("S3", updated=31), loc("GCS", updated=5), loc("tape")),
        {delete("S3")},
    ),
    "delete 1: no delete rule on tape or archive": Case(
        item(loc("local"), loc("archive"), loc("tape"), loc("S3", updated=1), loc("GCS", "PR")),
        set(),
    ),
    "delete 2: item status not OK": Case(
        item(loc("local"), loc("S3", updated=31), loc("GCS"), loc("tape"), status="ER"), set()
    ),
    "delete 2: item created too recently": Case(
        item(loc("local"), loc("S3", updated=40), loc("GCS", updated=40), loc("tape"), created=20),
        {delete("GCS")},
    ),
    "delete 3: last_update exactly at now - delay is not due": Case(
        item(loc("local"), loc("S3", updated=30), loc("GCS", updated=10), loc("tape")), set()
    ),
    "delete 3: the location on C must be OK": Case(
        item(loc("local"), loc("S3", "UP"), loc("GCS", "DE"), loc("tape")), set()
    ),
    "delete 4: an open access log locks the location": Case(
        item(loc("local"), loc("S3", locks=1), loc("GCS", locks=2), loc("tape")), set()
    ),
    "delete 5: min_other_copies 1 needs two OK copies counting this one": Case(
        item(loc("local"), loc("S3")), {delete("S3")}
    ),
    "delete 5: PR/UP/DE locations are not copies": Case(
        item(loc("local", "UP"), loc("archive", "PR"), loc("S3"), loc("GCS")), {delete("GCS")}
    ),
    "delete 5: only one OK copy is never deleted": Case(item(loc("GCS"), loc("S3", "PR")), set()),
    "delete 5: min_other_copies override needs three copies": Case(
        item(loc("local"), loc("S3"), slug="precious"), set()
    ),
    "delete 5: min_other_copies override met with three copies": Case(
        item(loc("local"), loc("S3"), loc("tape"), slug="precious"), {delete("S3")}
    ),
    "delete 6: the preferred location is never deleted": Case(
        item(loc("local", "PR"), loc("S3"), loc("GCS")), {delete("GCS")}
    ),
    "delete 6: the most preferred connector never loses its copy": Case(
        item(loc("local"), loc("archive"), loc("tape"), loc("S3", "PR")),
        set(),
    ),
    "delete 6: local is deleted when a better copy exists? never, it is best": Case(
        item(loc("local", updated=50), loc("archive"), loc("tape"), created=50), set()
    ),
    "delete: data_slug delay override (soon: 1 day)": Case(
        item(loc("local"), loc("S3", updated=2), loc("tape"), created=2, slug="soon"),
        {delete("S3")},
    ),
    "delete: process_type delay override (data:big: 0 days)": Case(
        item(loc("local"), loc("S3", updated=0.01), created=0.01, ptype="data:big:x:"),
        {delete("S3")},
    ),
    "delete: negative delay on local means never": Case(
        item(loc("local"), loc("archive"), slug="keep"), set()
    ),
    # -- verify -----------------------------------------------------------
    "verify: never verified is due": Case(
        item(loc("local"), loc("S3", updated=1, verified=None), created=1), {verify("S3")}
    ),
    "verify: verified more than interval ago is due": Case(
        item(loc("local"), loc("S3", updated=1, verified=31), created=1), {verify("S3")}
    ),
    "verify: verified recently is not due": Case(
        item(loc("local"), loc("S3", updated=1, verified=29), created=1), set()
    ),
    "verify: only OK locations are verified": Case(
        item(loc("local"), loc("S3", "UP", verified=None), created=1), set()
    ),
    "verify: a damaged copy is repaired, not verified": Case(
        item(loc("local"), damaged("S3", "a"), created=1, files=AB), set()
    ),
    # -- damaged copies (SPEC §3): never counted, never preferred, repaired -------
    "delete: a damaged copy does not count for min_other_copies": Case(
        item(loc("local"), damaged("archive", "a"), loc("S3"), files=AB), {delete("S3")}
    ),
    "delete: with the other copy damaged nothing is deleted": Case(
        item(damaged("local", "a"), loc("S3"), files=AB), set()
    ),
    "delete: a damaged copy is never the preferred one": Case(
        item(damaged("local", "b"), loc("S3"), loc("GCS"), files=AB), {delete("GCS")}
    ),
    "delete: copies on unconfigured connectors do not count (a delete cannot confirm them)": Case(
        item(loc("local"), loc("retired"), loc("S3"), slug="precious", files=AB), set()
    ),
    "copy: a damaged location on the target blocks the copy": Case(
        item(loc("local"), damaged("S3", "a"), files=AB),
        {copy("GCS"), copy("tape")},
    ),
    "copy: a damaged copy is never the source": Case(
        item(damaged("local", "a"), loc("archive"), files=AB),
        {copy("S3", "archive"), copy("GCS", "archive"), copy("tape", "archive")},
    ),
    "repair: due from the preferred copy": Case(
        item(loc("local"), damaged("S3", "a"), files=AB), {repair("S3")}
    ),
    "repair: whatever the rules (archive has none)": Case(
        item(loc("local"), damaged("archive", "a", "b"), files=AB), {repair("archive")}
    ),
    "repair: from another damaged copy holding the file": Case(
        item(damaged("local", "b"), damaged("S3", "a"), files=AB),
        {repair("S3", "local"), repair("local", "S3")},
    ),
    "repair: not due when the bad files are good nowhere else (lost)": Case(
        item(damaged("local", "a"), damaged("S3", "a", "b"), files=AB),
        {repair("S3", "local")},
    ),
    "repair: a copy on an unconfigured connector is no source": Case(
        item(damaged("local", "a"), loc("retired"), files=AB), set()
    ),
    # -- removed items (SPEC §5 "unreferenced"): every copy goes, nothing else --
    "remove: every copy of a removed item goes, the preferred and the last included": Case(
        item(loc("local"), loc("S3"), damaged("GCS", "a"), files=AB, removed=1),
        {remove("local"), remove("S3"), remove("GCS")},
    ),
    "remove: a locked copy waits, one being deleted is under way already": Case(
        item(loc("local", locks=1), loc("S3", "DE"), loc("GCS", "UP"), removed=1),
        {remove("GCS")},
    ),
    "remove: a copy on an unconfigured connector cannot be removed": Case(
        item(loc("retired"), removed=1), set()
    ),
    "copy: a removed item is copied nowhere": Case(item(loc("local"), removed=1), set()),
    "delete: a removed item's copies go by removal, not by the delete rules": Case(
        item(loc("local"), loc("S3"), loc("GCS", updated=100), removed=1), set()
    ),
    "verify: a removed item is not verified": Case(
        item(loc("local"), loc("S3", verified=None), removed=1), set()
    ),
    "repair: a removed item is not repaired": Case(
        item(loc("local"), damaged("S3", "a"), files=AB, removed=1), set()
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_policy_case(name: str, catalog_db: pw.Database) -> None:
    case = CASES[name]
    # Each case speaks of one action (its name says which); the others are
    # held to the rules by the random cross-check below.
    action = name.split(":")[0].split()[0]
    store([case.facts])
    from_sql = [a for a in plan(POLICIES, catalog_db, now=NOW) if a.action == action]
    from_rules = [a for a in due_actions(case.facts, POLICIES, now=NOW) if a.action == action]
    assert set(from_sql) == case.expected, "set-based planner"
    assert set(from_rules) == case.expected, "per-item rules"
    assert from_sql == from_rules == sorted(case.expected, key=PlannedAction.sort_key)


def test_every_condition_of_spec_section_5_has_a_case() -> None:
    names = " ".join(CASES)
    for label in ("copy 2", "copy 3", "copy 4", *(f"delete {n}" for n in range(1, 7))):
        assert label in names, f"no case for {label}"


def test_lost_files_are_those_good_nowhere() -> None:
    from scheduler.policy import lost_files

    assert lost_files(item(damaged("local", "a"), damaged("S3", "a", "b"), files=AB)) == ["a"]
    assert lost_files(item(damaged("local", "a"), loc("S3"), files=AB)) == []
    assert lost_files(item(damaged("local", "a", "b"), loc("S3", "UP"), files=AB)) == AB_LIST


AB_LIST = ["a", "b"]


# -- ordering and shapes -----------------------------------------------------


def test_plan_is_sorted_by_key_action_target(catalog_db: pw.Database) -> None:
    keys = ["b", "a", "Z", "ä", "a-1", "a/1", "10", "9"]
    store(
        item(loc("local"), loc("S3", updated=40), loc("tape"), created=40, key=key) for key in keys
    )
    actions = list(plan(POLICIES, catalog_db, now=NOW))
    # Byte (code point) order of keys, then action, then target, on both databases.
    assert [a.key for a in actions] == sorted(a.key for a in actions)
    assert actions == sorted(actions, key=PlannedAction.sort_key)
    assert actions[:3] == [
        PlannedAction("10", "copy", "GCS", "local"),
        PlannedAction("10", "delete", "S3"),
        PlannedAction("9", "copy", "GCS", "local"),
    ]
    assert actions[-1] == PlannedAction("ä", "delete", "S3")


def test_json_shapes_follow_spec() -> None:
    assert copy("S3").as_json() == {
        "action": "copy",
        "key": "item",
        "source": "local",
        "target": "S3",
    }
    assert delete("S3").as_json() == {"action": "delete", "key": "item", "connector": "S3"}
    assert verify("S3").as_json() == {"action": "verify", "key": "item", "connector": "S3"}
    assert repair("S3").as_json() == {
        "action": "repair",
        "key": "item",
        "source": "local",
        "target": "S3",
    }


def test_no_rules_plan_nothing_but_removals(catalog_db: pw.Database) -> None:
    store([item(loc("local"))])
    bare = {"local": ConnectorPolicy("local")}
    assert list(plan(bare, catalog_db, now=NOW)) == []
    # A removal needs no rule: the item is gone, so are its copies.
    store([item(loc("local"), key="gone", removed=1)])
    assert list(plan(bare, catalog_db, now=NOW)) == [PlannedAction("gone", "remove", "local")]
    # Without removals (a negative delay: never), no statement at all.
    assert Planner(bare, catalog_db, removal_delay=-1).compile(NOW) is None


def test_locations_on_unconfigured_connectors_are_never_a_source(
    catalog_db: pw.Database,
) -> None:
    store([item(loc("retired"))])
    assert list(plan(POLICIES, catalog_db, now=NOW)) == []


def test_item_facts_reads_locks_and_locations(catalog_db: pw.Database) -> None:
    from catalog.queries import item_by_key

    # Locations come back by connector name, in byte order ("S3" < "local").
    facts = item(loc("S3", "UP", verified=3), loc("local", locks=2))
    store([facts])
    assert item_facts(item_by_key("item")) == facts


def test_explain_names_the_override_and_the_failing_condition() -> None:
    facts = item(loc("local"), created=500, ptype="data:alignment:sam:")
    decisions = {(d.action, d.connector): d for d in explain(facts, POLICIES, now=NOW)}
    gcs = decisions[("copy", "GCS")]
    assert not gcs.due
    assert "process_type override 'data:alignment:'" in gcs.rule
    failing = [c for c in gcs.conditions if not c.holds]
    assert [c.name for c in failing] == ["created delay"]
    assert "negative" in failing[0].detail
    assert decisions[("copy", "S3")].due
    assert decisions[("copy", "S3")].source == "local"
    locked = item(loc("local"), loc("S3", locks=1))
    s3 = {(d.action, d.connector): d for d in explain(locked, POLICIES, now=NOW)}
    unlocked = next(c for c in s3[("delete", "S3")].conditions if c.name == "unlocked")
    assert not unlocked.holds and "1 open access log" in unlocked.detail


# -- the two statements of the rules agree on random catalogs ----------------

CONNECTORS = ["local", "S3", "GCS", "archive", "tape", "retired"]
SLUGS = ["slug", "fast", "never", "precious", "soon", "keep", "other"]
TYPES = ["data:test:", "data:alignment:bam:", "data:alignment:sam:", "data:big:x:", "dat", ""]


def random_item(rng: random.Random, key: str) -> ItemFacts:
    def when() -> float:
        # Whole days hit the boundaries; fractions fall either side of them.
        return rng.choice([rng.randint(-1, 60), rng.uniform(0, 60)])

    chosen = rng.sample(CONNECTORS, rng.randint(0, 4))
    files = tuple(f"f{number}" for number in range(rng.randint(0, 3)))

    def damaged() -> frozenset[str]:
        return frozenset(path for path in files if rng.random() < 0.5) or frozenset(files[:1])

    locations = []
    for name in chosen:
        status = rng.choice(["OK", "OK", "OK", "PR", "UP", "DE", "DM", "DM"])
        locations.append(
            LocationFacts(
                connector=name,
                status=status,
                last_update=ago(when()),
                last_verified=rng.choice([None, ago(rng.uniform(0, 60))]),
                open_access_logs=rng.choice([0, 0, 0, 1, 2]),
                damaged_files=damaged() if status == "DM" else frozenset(),
            )
        )
    return ItemFacts(
        key=key,
        data_slug=rng.choice(SLUGS),
        process_type=rng.choice(TYPES),
        status=rng.choice(["OK", "OK", "OK", "PR", "ER"]),
        created=ago(when()),
        locations=tuple(locations),
        files=files,
        removed=ago(rng.choice([0.5, 2, 3, 10])) if rng.random() < 0.2 else None,
    )


@pytest.mark.parametrize("fields_per_sum", [planning.FIELDS_PER_SUM, 2, 1])
@pytest.mark.parametrize("seed", range(3))
def test_planner_agrees_with_rules_on_random_catalogs(
    seed: int, fields_per_sum: int, catalog_db: pw.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also with connectors' bit fields spread over several sums, as with many connectors."""
    monkeypatch.setattr(planning, "FIELDS_PER_SUM", fields_per_sum)
    rng = random.Random(seed)
    items = [random_item(rng, f"item-{number:04d}") for number in range(400)]
    with catalog_db.atomic():
        store(items)
    # Removed items: some within the grace of two days, some past it.
    expected = [
        action
        for facts in items
        for action in due_actions(facts, POLICIES, now=NOW, removal_delay=2)
    ]
    actual = list(plan(POLICIES, catalog_db, now=NOW, removal_delay=2))
    assert len(expected) > 100, "the random catalog should exercise many rules"
    repairs = [action for action in expected if action.action == "repair"]
    assert len(repairs) > 10, "and repairs, from copies that count and from damaged ones"
    assert any(action.source is not None for action in repairs)
    assert len([action for action in expected if action.action == "remove"]) > 10
    assert actual == sorted(expected, key=PlannedAction.sort_key)


@pytest.mark.parametrize("width", [1, 7, 400, 100_000])
def test_planning_by_ranges_finds_what_one_statement_finds(
    width: int, catalog_db: pw.Database
) -> None:
    rng = random.Random(7)
    items = [random_item(rng, f"item-{number:04d}") for number in range(300)]
    with catalog_db.atomic():
        for number, facts in enumerate(items):
            store([facts])
            if number % 10 == 0:  # ids with nothing due between them: no locations
                FileStorage.create(key=f"bare-{number:04d}")
    planner = Planner(POLICIES, catalog_db, removal_delay=2)
    whole = list(planner.due(now=NOW))
    ranges = list(planner.due_by_ranges(now=NOW, width=width))
    assert len(whole) > 100
    assert sorted(item for found in ranges for item in found) == sorted(whole)
    for found in ranges:
        assert found, "a range with nothing due is not handed over"
        ids = [item.item_id for item in found]
        assert max(ids) - min(ids) < width
        assert [item.key for item in found] == sorted(item.key for item in found)
    if width == 1:
        assert len(ranges) == len(whole)


def test_a_range_is_so_many_items_however_sparse_their_ids(catalog_db: pw.Database) -> None:
    with catalog_db.atomic():
        # Far apart: a range per so many ids would plan millions of empty ranges.
        for number, key in enumerate(("a", "b", "c")):
            when = ago(100)
            made = FileStorage.create(id=1 + number * 10**9, key=key, status="OK", created=when)
            StorageLocation.create(
                file_storage=made, connector_name="local", url=key, status="OK", last_update=when
            )
    ranges = list(Planner(POLICIES, catalog_db).due_by_ranges(now=NOW, width=2))
    assert [[due.key for due in found] for found in ranges] == [["a", "b"], ["c"]]


def test_each_range_is_planned_as_the_catalog_is_when_its_turn_comes(
    catalog_db: pw.Database,
) -> None:
    """Nothing is open while the caller writes between ranges, and later ranges see it."""
    with catalog_db.atomic():
        store([item(loc("local"), key=key) for key in ("a", "b", "c")])
    planner = Planner(POLICIES, catalog_db)
    ranges = planner.due_by_ranges(now=NOW, width=1)
    first = next(ranges)
    assert [due.key for due in first] == ["a"]
    c = FileStorage.get(FileStorage.key == "c")
    with catalog_db.atomic():  # as a scan reserves the copies of a range
        StorageLocation.create(file_storage=c, connector_name="S3", url="c/s3", status="PR")
        StorageLocation.create(file_storage=c, connector_name="GCS", url="c/gcs", status="PR")
        StorageLocation.create(file_storage=c, connector_name="tape", url="c/tape", status="PR")
    assert [due.key for found in ranges for due in found] == ["b"]


def test_an_empty_catalog_has_no_ranges(catalog_db: pw.Database) -> None:
    assert list(Planner(POLICIES, catalog_db).due_by_ranges(now=NOW)) == []


@pytest.mark.postgres
@pytest.mark.parametrize("catalog_db", ["postgres"], indirect=True)
def test_a_range_is_planned_without_postgresql_compiling_it_and_the_setting_goes_after(
    catalog_db: pw.Database,
) -> None:
    """A statement this large costs PostgreSQL about a second to compile, once per range."""
    with catalog_db.atomic():
        store([item(loc("local"), key=key) for key in ("a", "b")])
    before = catalog_db.execute_sql("SHOW jit").fetchone()[0]
    rows = Planner(POLICIES, catalog_db).due(now=NOW, ids=(0, 10**9))
    assert next(rows).key == "a"
    assert catalog_db.execute_sql("SHOW jit").fetchone()[0] == "off"
    assert [due.key for due in rows] == ["b"]
    assert catalog_db.execute_sql("SHOW jit").fetchone()[0] == before


def test_plan_of_items_without_a_key_is_sorted_by_action_then_target(
    catalog_db: pw.Database,
) -> None:
    """SPEC §6: the list is sorted by (key, action, target), items without a key too.

    Keys are optional (SPEC §3); items without one all have the key null, so
    their actions sort by action and target among themselves, not item by item.
    """
    store(
        [
            # The first (lower id): only a verification due.
            item(
                loc("local"),
                loc("S3", updated=0.5, verified=None),
                loc("tape"),
                key="k1",
                created=0.5,
            ),
            # The second: a copy due.
            item(loc("local"), key="k2", created=0.5),
        ]
    )
    FileStorage.update(key=None).execute()
    actions = list(plan(POLICIES, catalog_db, now=NOW))
    assert [(a.action, a.connector) for a in actions] == [("copy", "tape"), ("verify", "S3")]
    assert actions == sorted(actions, key=PlannedAction.sort_key)
