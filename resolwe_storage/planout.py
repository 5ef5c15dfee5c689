"""Writing a plan: the JSON list of SPEC §6 and the readable table.

A plan of a large catalog has millions of rows, so the writers work per
item (``scheduler.planning.DueItem``) rather than per action object: the JSON
text of each (arms, source) combination is prepared once, with a hole for
the key, and output goes out in large chunks. The result is byte for byte
what ``json.dumps`` of ``PlannedAction.as_json()`` would give.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TextIO

from scheduler.planning import DueItem
from scheduler.policy import PlannedAction

#: Items formatted between two writes to the output.
DEFAULT_CHUNK_ITEMS = 4096

_Shapes = tuple[tuple[str, str], ...]


def _shapes(item: DueItem) -> _Shapes:
    """Text before and after the key of each action, with the separator before it."""
    shapes = []
    for action, connector in item.arms:
        prefix = f',\n  {{"action": {json.dumps(action)}, "key": '
        shaped = PlannedAction(None, action, connector, item.source_of(action, connector))
        if "source" in shaped.as_json():
            suffix = f', "source": {json.dumps(shaped.source)}, "target": {json.dumps(connector)}}}'
        else:
            suffix = f', "connector": {json.dumps(connector)}}}'
        shapes.append((prefix, suffix))
    return tuple(shapes)


def write_plan_json(out: TextIO, items: Iterable[DueItem]) -> int:
    """Write the due actions of ``items`` as one JSON list; return how many.

    One object per line, sorted as ``items`` come (the planner's order).
    """
    cache: dict[tuple[object, ...], _Shapes] = {}
    pieces: list[str] = []
    count = 0
    started = False
    out.write("[")
    for number, item in enumerate(items, 1):
        shapes = cache.get((item.arms, item.source, item.repairs))
        if shapes is None:
            shapes = cache[item.arms, item.source, item.repairs] = _shapes(item)
        key = "null" if item.key is None else encode_basestring_ascii(item.key)
        for prefix, suffix in shapes:
            pieces += (prefix, key, suffix)
        count += len(shapes)
        if number % DEFAULT_CHUNK_ITEMS == 0 and pieces:
            started = _flush(out, pieces, started)
    started = _flush(out, pieces, started)
    out.write("\n]\n" if started else "]\n")
    return count


def _flush(out: TextIO, pieces: list[str], started: bool) -> bool:
    """Write ``pieces``, dropping the very first separator's comma; True once written."""
    if not pieces:
        return started
    text = "".join(pieces)
    pieces.clear()
    out.write(text if started else text[1:])
    return True


def write_plan_table(out: TextIO, items: Iterable[DueItem], *, width: int) -> Counter[str]:
    """Write one line per due action under a header; return the counts per action."""
    counts: Counter[str] = Counter()
    width = max(width, 6)
    out.write(f"{'ACTION':<7} {'TARGET':<{width}} {'SOURCE':<{width}} KEY\n")
    lines: list[str] = []
    for item in items:
        key = item.key if item.key is not None else "-"
        for action, connector in item.arms:
            counts[action] += 1
            source = item.source_of(action, connector) or "-"
            lines.append(f"{action:<7} {connector:<{width}} {source:<{width}} {key}\n")
        if len(lines) >= DEFAULT_CHUNK_ITEMS:
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines))
    return counts
