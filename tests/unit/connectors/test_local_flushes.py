"""What the local connector flushes to disk, seen in its system calls (strace).

A write is durable when it returns (``LocalConnector``: "a copy recorded as
done survives a crash"): the file, its entry in its folder, and the entries
of the folders the write made, each in the folder above it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tests.processes import Call, traced

WRITE_IN_NEW_FOLDERS = """
import io, sys
from connectors.local import LocalConnector
connector = LocalConnector("local", path=sys.argv[1])
connector.write("item/sub/f", io.BytesIO(b"the file"))
"""

KEEP_IN_A_BLOCK = """
import io, sys
from connectors.local import LocalConnector
connector = LocalConnector("local", path=sys.argv[1])
with connector.landing() as block:
    connector.make_durable("item/sub/f")
    assert not block.landed
    print("flush now", flush=True)
assert block.landed
print("landed", flush=True)
"""


#: The code under test, imported by the traced process as by this one.
REPOSITORY = str(Path(__file__).resolve().parents[3])


def _python(script: str, root: Path, tmp_path: Path) -> list[Call]:
    """``script`` run with ``root`` in a Python process of its own, traced."""
    paths = [REPOSITORY, *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return traced([sys.executable, "-c", script, str(root)], cwd=tmp_path, env=env)


def _fsynced(calls: list[Call], path: Path) -> bool:
    return any(call.name in ("fsync", "fdatasync") and call.on(path) for call in calls)


def test_a_write_flushes_the_entries_of_the_folders_it_made(tmp_path: Path) -> None:
    """``item/sub`` made by the write: its entry in ``item``, and ``item``'s in the root,
    are flushed before the write returns, or a crash after the copy is recorded may
    lose the folders and the file in them."""
    root = tmp_path / "root"
    root.mkdir()
    calls = _python(WRITE_IN_NEW_FOLDERS, root, tmp_path)
    assert (root / "item" / "sub" / "f").read_bytes() == b"the file"
    assert _fsynced(calls, root / "item" / "sub")  # names the file
    assert _fsynced(calls, root / "item"), "the new folder 'sub' was never flushed in 'item'"
    assert _fsynced(calls, root), "the new folder 'item' was never flushed in the root"


def test_an_object_kept_in_a_landing_block_is_flushed_with_the_block(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "item" / "sub").mkdir(parents=True)
    (root / "item" / "sub" / "f").write_bytes(b"left by a writer that died")
    calls = _python(KEEP_IN_A_BLOCK, root, tmp_path)
    marks = [
        i for i, call in enumerate(calls) if call.name == "write" and "flush now" in call.arguments
    ]
    landed = [
        i for i, call in enumerate(calls) if call.name == "write" and "landed" in call.arguments
    ]
    assert marks and landed
    between = calls[marks[0] : landed[0]]
    assert any(call.name == "syncfs" and call.under(root) for call in between) or (
        _fsynced(between, root / "item" / "sub" / "f") and _fsynced(between, root / "item" / "sub")
    )
