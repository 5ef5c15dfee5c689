"""Delete delays count from the last access: a URL handed out by ``url`` keeps a copy.

Each command in a process of its own, as users run them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import Cli, local_pair


def test_a_url_handed_out_postpones_the_delete_of_that_copy(tmp_path: Path) -> None:
    config = local_pair(tmp_path, public_url="/archive", delete={"delay": 30})
    item = {
        "key": "data-1",
        "created": "2020-01-01T00:00:00Z",
        "locations": [
            {"connector": "local", "url": "1", "status": "OK"},
            {"connector": "archive", "url": "1", "status": "OK"},
        ],
        "files": [{"path": "a.txt", "size": 3}],
    }
    (tmp_path / "items.json").write_text(json.dumps({"items": [item]}))
    cli = Cli(config)
    cli.ok("import", "items.json")
    # Last used in 2020: the copy on archive is due for deletion.
    due = json.loads(cli.ok("plan", "--json").out)
    assert {"action": "delete", "key": "data-1", "connector": "archive"} in due
    assert cli.ok("url", "data-1", "a.txt").out.strip() == "/archive/1/a.txt"
    # Read just now: 30 days to go.
    due = json.loads(cli.ok("plan", "--json").out)
    assert [action for action in due if action["action"] == "delete"] == []
