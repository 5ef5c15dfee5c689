"""The plan writers give exactly the SPEC §6 JSON, however items are chunked."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolwe_storage import planout
from resolwe_storage.planout import write_plan_json, write_plan_table
from scheduler.planning import DueItem
from scheduler.policy import PlannedAction

ARMS = [
    ("copy", "GCS"),
    ("copy", "S3"),
    ("copy", 'lo"cal\\é'),
    ("delete", "S3"),
    ("verify", "GCS"),
    ("verify", "S3"),
]

due_items = st.builds(
    DueItem,
    key=st.none() | st.text(max_size=12),
    source=st.none() | st.sampled_from(["local", "S3", "ünïcode"]),
    arms=st.lists(st.sampled_from(ARMS), unique=True, min_size=1).map(
        lambda arms: tuple(sorted(arms))
    ),
)


def reference_json(items: list[DueItem]) -> str:
    """The plan as ``json.dumps`` of each action's ``as_json``, one per line."""
    rows = [
        json.dumps(
            PlannedAction(
                item.key, action, connector, item.source if action == "copy" else None
            ).as_json()
        )
        for item in items
        for action, connector in item.arms
    ]
    return "[" + ",".join(f"\n  {row}" for row in rows) + ("\n]\n" if rows else "]\n")


@settings(max_examples=200)
@given(items=st.lists(due_items, max_size=12), chunk=st.integers(min_value=1, max_value=5))
def test_json_matches_json_dumps(items: list[DueItem], chunk: int) -> None:
    out = io.StringIO()
    original = planout.DEFAULT_CHUNK_ITEMS
    planout.DEFAULT_CHUNK_ITEMS = chunk
    try:
        count = write_plan_json(out, iter(items))
    finally:
        planout.DEFAULT_CHUNK_ITEMS = original
    assert out.getvalue() == reference_json(items)
    parsed = json.loads(out.getvalue())
    assert count == len(parsed) == sum(len(item.arms) for item in items)


def test_empty_plan_is_an_empty_list() -> None:
    out = io.StringIO()
    assert write_plan_json(out, iter([])) == 0
    assert out.getvalue() == "[]\n"


def test_copy_names_source_and_target_others_the_connector() -> None:
    out = io.StringIO()
    write_plan_json(
        out, [DueItem("k1", "local", (("copy", "S3"), ("delete", "GCS"), ("verify", "S3")))]
    )
    assert json.loads(out.getvalue()) == [
        {"action": "copy", "key": "k1", "source": "local", "target": "S3"},
        {"action": "delete", "key": "k1", "connector": "GCS"},
        {"action": "verify", "key": "k1", "connector": "S3"},
    ]


@pytest.mark.parametrize("chunk", [1, 2, 1000])
def test_table_lists_every_action(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planout, "DEFAULT_CHUNK_ITEMS", chunk)
    items = [
        DueItem(None, "local", (("copy", "S3"),)),
        DueItem("k2", "local", (("copy", "GCS"), ("delete", "S3"))),
        DueItem("k3", None, (("verify", "S3"),)),
    ]
    out = io.StringIO()
    counts = write_plan_table(out, items, width=5)
    assert out.getvalue().splitlines() == [
        "ACTION  TARGET SOURCE KEY",
        "copy    S3     local  -",
        "copy    GCS    local  k2",
        "delete  S3     -      k2",
        "verify  S3     -      k3",
    ]
    assert counts == {"copy": 2, "delete": 1, "verify": 1}
