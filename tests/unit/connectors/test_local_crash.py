"""The local connector as worker processes use it: killed mid-write, side by side.

Each writer here is a Python process of its own, held at a chosen point (it
waits for a line on its stdin) and then let go or killed with SIGKILL, as a
worker is by an out-of-memory killer or a timeout.
"""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from connectors import local as local_module
from connectors.errors import ConnectorError
from connectors.local import PARTIAL_SUFFIX, LocalConnector
from connectors.transfer import copy_file
from tests.connector_conformance import hashes_of, read_all

#: The code under test, imported by the child processes as by this one.
REPOSITORY = str(Path(__file__).resolve().parents[3])
#: Seconds a child is given to reach its next point (a loaded machine is slow).
CHILD_SECONDS = 60
#: Older than the age at which a temporary file counts as a dead writer's.
A_DAY_AND_MORE = local_module.DEFAULT_STALE_PARTIAL + 3600


class Child:
    """A Python process running ``script`` with ``args``; it says where it is on stdout."""

    def __init__(self, script: str, *args: str) -> None:
        paths = [REPOSITORY, *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # the end

    def reached(self, point: str) -> None:
        """Wait until the child says it is at ``point`` (and waits there)."""
        try:
            line = self.lines.get(timeout=CHILD_SECONDS)
        except queue.Empty:
            self.kill()
            raise AssertionError(f"the child never reached {point!r}") from None
        if line != point:
            self.process.wait(CHILD_SECONDS)
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise AssertionError(f"the child said {line!r}, not {point!r}:\n{stderr}")

    def go(self) -> None:
        """Let the child carry on from where it waits."""
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(CHILD_SECONDS)

    def finish(self) -> tuple[int, str]:
        """The child's exit code and stderr, once it ends."""
        _, stderr = self.process.communicate(timeout=CHILD_SECONDS)
        return self.process.returncode, stderr


def temporaries(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.name.endswith(PARTIAL_SUFFIX))


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


LONG_BLOCK = """
import io, sys
from connectors import local
from connectors.local import LocalConnector

# The block's pending files are kept fresh at most this often: here at every
# write, as the hour has passed by the time a day has.
local.DEFAULT_PENDING_TOUCH = 0
connector = LocalConnector("local", path=sys.argv[1])
with connector.landing() as block:
    connector.write("item/a", io.BytesIO(b"the job's first file"))
    print("written", flush=True)
    sys.stdin.readline()  # the job copies on for a day
    if sys.argv[2] == "writes":
        connector.write("item/b", io.BytesIO(b"the job's last file"))
    else:  # finds it there (left by a killed try), whole
        connector.make_durable("item/b")
    print("written", flush=True)
    sys.stdin.readline()
assert block.landed
"""


@pytest.mark.parametrize("then", ["writes", "keeps"])
def test_a_sweep_spares_the_files_of_a_landing_block_that_lasts_a_day(
    tmp_path: Path, then: str
) -> None:
    """A block's first files wait, unchanged, for all its others to be copied.

    A job of a large item on a slow disk lasts a day; meanwhile another
    process's sweep (its listing of the folder, an audit's) must not take
    them for a dead writer's, or the block cannot land them.
    """
    root = tmp_path / "root"
    (root / "item").mkdir(parents=True)
    if then == "keeps":
        (root / "item" / "b").write_bytes(b"the job's last file")
    child = Child(LONG_BLOCK, str(root), then)
    child.reached("written")
    (first,) = temporaries(root / "item")
    age(first, A_DAY_AND_MORE)  # unchanged since, while the job went on
    child.go()
    child.reached("written")
    other = LocalConnector("local", path=root)  # another worker process's: an audit
    listed = [info.path for info in other.list("item/")]  # not landed yet: not shown
    assert listed == ([] if then == "writes" else ["item/b"])
    child.go()
    code, stderr = child.finish()
    assert code == 0, stderr
    assert read_all(other, "item/a") == b"the job's first file"
    assert read_all(other, "item/b") == b"the job's last file"
    assert temporaries(root / "item") == []


KILLED_MID_WRITE = """
import io, sys
from connectors.local import LocalConnector

class Stalling(io.RawIOBase):
    '''Half the bytes, then waits (a source that stalls, a worker about to be killed).'''
    def __init__(self):
        self.sent = 0
    def readable(self):
        return True
    def readinto(self, buffer):
        if self.sent == 1 << 20:
            print("half", flush=True)
            sys.stdin.readline()
        piece = min(len(buffer), 1 << 16)
        buffer[:piece] = b"x" * piece
        self.sent += piece
        return piece

connector = LocalConnector("local", path=sys.argv[1])
connector.write("item/big", Stalling(), size=2 << 20)
"""


def test_a_writer_killed_mid_write_leaves_nothing_an_object_or_a_dark_one(tmp_path: Path) -> None:
    """Its temporary file is no object (not listed, not at the name), replaced by
    the next write, and swept once a day old."""
    root = tmp_path / "root"
    root.mkdir()
    child = Child(KILLED_MID_WRITE, str(root))
    child.reached("half")
    child.kill()
    (left,) = temporaries(root / "item")
    assert left.stat().st_size == 1 << 20
    connector = LocalConnector("local", path=root)
    assert connector.stat("item/big") is None
    assert list(connector.list()) == []  # an audit finds no dark object
    connector.write("item/big", io.BytesIO(b"whole"))  # the job again, in another process
    assert [info.path for info in connector.list()] == ["item/big"]
    assert temporaries(root / "item") == [left]  # as fresh as a live writer's: kept
    age(left, A_DAY_AND_MORE)
    assert [info.path for info in LocalConnector("local", path=root).list()] == ["item/big"]
    assert temporaries(root / "item") == []


KILLED_MID_LANDING = """
import io, os, sys
from connectors import local
from connectors.local import LocalConnector

point = sys.argv[2]
flushes = []
renames = []
make_durable, replace = local._make_durable, os.replace

def held(where):
    if where == point:
        print(point, flush=True)
        sys.stdin.readline()

def counted_flush(folders, paths):
    flushes.append(1)
    if len(flushes) == 2:
        held("renamed all")
    make_durable(folders, paths)
    if len(flushes) == 1:
        held("flushed")

def counted_replace(source, destination):
    replace(source, destination)
    renames.append(destination)
    if len(renames) == 1:
        held("renamed one")

local._make_durable = counted_flush
os.replace = counted_replace
connector = LocalConnector("local", path=sys.argv[1])
with connector.landing():
    for name in "abc":
        connector.write(f"item/{name}", io.BytesIO(name.encode() * 100_000))
print("not killed", flush=True)
"""


@pytest.mark.parametrize("point", ["flushed", "renamed one", "renamed all"])
def test_a_writer_killed_mid_landing_leaves_whole_files_that_a_retry_keeps(
    tmp_path: Path, point: str
) -> None:
    """Whatever stands at its name is whole; the retried copy keeps it (made durable
    first) and writes the rest."""
    root = tmp_path / "root"
    root.mkdir()
    child = Child(KILLED_MID_LANDING, str(root), point)
    child.reached(point)
    child.kill()
    landed = {"flushed": "", "renamed one": "a", "renamed all": "abc"}[point]
    connector = LocalConnector("local", path=root)
    assert [info.path for info in connector.list()] == [f"item/{name}" for name in landed]
    for name in landed:
        assert read_all(connector, f"item/{name}") == name.encode() * 100_000
    assert len(temporaries(root / "item")) == 3 - len(landed)

    source = LocalConnector("source", path=tmp_path / "source")
    kinds = {}
    with connector.landing() as block:
        for name in "abc":
            data = name.encode() * 100_000
            source.write(f"item/{name}", io.BytesIO(data))
            kinds[name] = copy_file(
                source, f"item/{name}", connector, f"item/{name}", expected=hashes_of(data)
            ).how
    assert block.landed
    assert kinds == {name: "skipped" if name in landed else "server-side" for name in "abc"}
    for name in "abc":
        assert read_all(connector, f"item/{name}") == name.encode() * 100_000


DELETING = """
import sys, time
from connectors.local import LocalConnector

connector = LocalConnector("local", path=sys.argv[1])
print("deleting", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    connector.delete("item/sub/f", within="item/")  # its folders too, left empty
"""


def test_a_write_beside_a_delete_of_its_folder_never_says_the_object_does_not_exist(
    tmp_path: Path,
) -> None:
    """Another process deletes the object and prunes its folders, again and again.

    Each write either lands or fails as a transient error (retried): never
    ``ObjectNotFound``, which a job takes as an answer about bytes (and does
    not retry): the folder was there when the write looked, and went before
    its temporary file was made in it.
    """
    root = tmp_path / "root"
    root.mkdir()
    seconds = 3.0
    child = Child(DELETING, str(root), str(seconds))
    child.reached("deleting")
    connector = LocalConnector("local", path=root)
    outcomes: dict[str, int] = {}
    end = time.monotonic() + seconds - 0.5
    while time.monotonic() < end:
        try:
            connector.write("item/sub/f", io.BytesIO(b"f"))
        except ConnectorError as exc:
            assert exc.transient, exc
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        else:
            outcomes["landed"] = outcomes.get("landed", 0) + 1
    code, stderr = child.finish()
    assert code == 0, stderr
    assert outcomes.get("landed"), outcomes
