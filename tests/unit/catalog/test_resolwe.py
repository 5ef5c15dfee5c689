"""What a FileStorage read from Resolwe is digested as (``catalog.resolwe._encoder``)."""

from __future__ import annotations

import copy
import json
from typing import Any

from catalog.resolwe import _encoder


def an_item(size: int = 3) -> dict[str, Any]:
    return {
        "key": "resolwe:7",
        "status": "OK",
        "locations": [{"connector": "local", "url": "7", "status": "OK"}],
        "files": [
            {"path": f"f{number}", "size": size, "md5": "", "crc32c": ""} for number in range(3)
        ],
    }


def test_equal_items_encode_alike_whichever_strings_they_share() -> None:
    encode = _encoder()
    shared = an_item()  # "" and "OK" are one object each, used several times
    rebuilt = json.loads(json.dumps(shared))  # the same values, each its own object
    assert rebuilt == shared
    assert encode(shared) == encode(rebuilt)
    # Again, on the same encoder: nothing of the last item is left in it.
    assert encode(copy.deepcopy(shared)) == encode(shared)


def test_a_change_anywhere_in_an_item_changes_its_encoding() -> None:
    encode = _encoder()
    first = encode(an_item())
    assert encode(an_item(size=4)) != first
    moved = an_item()
    moved["locations"][0]["status"] = "DE"
    assert encode(moved) != first
