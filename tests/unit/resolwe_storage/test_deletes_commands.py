"""``deletes pause|resume|status``, and what ``status`` and ``plan`` say of the guards.

Each command in a process of its own, as users run them.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.processes import Cli, local_pair


def test_a_pause_is_kept_in_the_catalog_and_said_by_status_and_plan(tmp_path: Path) -> None:
    config = local_pair(tmp_path, delete={"delay": 1, "max_per_scan": 1})
    items = [
        {
            "key": f"data-{n}",
            "created": "2020-01-01T00:00:00Z",
            "locations": [
                {"connector": "local", "url": str(n), "status": "OK"},
                {"connector": "archive", "url": str(n), "status": "OK"},
            ],
            "files": [{"path": "a.txt", "size": 3}],
        }
        for n in range(3)
    ]
    (tmp_path / "items.json").write_text(json.dumps({"items": items}))
    cli = Cli(config)
    cli.ok("import", "items.json")
    planned = cli.ok("plan", "--json")
    assert len(json.loads(planned.out)) == 3
    assert "archive: 3 deletes due; a scan queues at most 1 (delete.max_per_scan)" in planned.err

    assert json.loads(cli.ok("deletes", "status", "--json").out)["deletes_paused"] is False
    paused = cli.ok("deletes", "pause", "--note", "checking the policy")
    assert paused.out.startswith("deletes are paused since ")
    assert paused.out.strip().endswith(": checking the policy")
    shown = json.loads(cli.ok("deletes", "status", "--json").out)
    assert (shown["deletes_paused"], shown["note"]) == (True, "checking the policy")
    assert json.loads(cli.ok("status", "--json").out)["deletes_paused"] is True
    assert "deletes are paused since" in cli.ok("status").out
    planned = cli.ok("plan")
    assert "no delete is queued or run (3 due)" in planned.err
    history = json.loads(cli.ok("history", "--action", "pause deletes", "--json").out)
    assert len(history) == 1

    assert cli.ok("deletes", "resume").out.strip() == "deletes resumed"
    assert cli.ok("deletes", "resume").out.strip() == "deletes were not paused"
    assert json.loads(cli.ok("status", "--json").out)["deletes_paused"] is False
