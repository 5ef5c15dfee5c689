"""Values made in a forked process: in order, errors after them, the process always reaped."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import catalog.forked
from catalog.errors import CatalogError, ReadingProcessFailed
from catalog.forked import can_fork, forked

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="forks only on Linux")


def reaped(pid: int) -> bool:
    """Whether ``pid`` is no process at all: ended and reaped (not left a zombie)."""
    return not Path(f"/proc/{pid}").exists()


def ended(pid: int) -> bool:
    """Whether ``pid`` runs no more: gone, or ended and waiting for its reaper (not ours)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_values_arrive_in_order_from_another_process() -> None:
    here = os.getpid()

    def produce() -> Iterator[tuple[int, int]]:
        for number in range(500):
            yield number, os.getpid()

    with forked(produce) as received:
        got = list(received)
    assert [number for number, _ in got] == list(range(500))
    assert {pid for _, pid in got} != {here} and len({pid for _, pid in got}) == 1
    assert reaped(got[0][1])


def test_the_producers_error_comes_after_its_values() -> None:
    def produce() -> Iterator[int]:
        yield 1
        yield 2
        raise CatalogError("line 3: not JSON")

    got = []
    with pytest.raises(CatalogError, match=r"^line 3: not JSON$"), forked(produce) as received:
        got.extend(received)
    assert got == [1, 2]


def test_an_error_that_does_not_pickle_is_told_by_its_name_and_message() -> None:
    class Local(Exception):  # a class pickle cannot find by name
        pass

    def produce() -> Iterator[int]:
        yield 1
        raise Local("odd")

    with pytest.raises(ReadingProcessFailed, match=r"Local: odd"), forked(produce) as received:
        list(received)


def test_a_producer_that_dies_is_an_error_not_a_short_input(tmp_path: Path) -> None:
    def produce() -> Iterator[int]:
        yield 1
        os._exit(3)  # as a process killed by the system would: no last word

    got = []
    with (
        pytest.raises(
            ReadingProcessFailed,
            match=r"reading process ended before the end of its input \(exit status 3\)",
        ),
        forked(produce) as received,
    ):
        got.extend(received)
    assert got == [1]


def test_a_producer_killed_is_said_to_be_killed() -> None:
    def produce() -> Iterator[int]:
        yield 1
        os.kill(os.getpid(), signal.SIGKILL)  # as the system's out-of-memory killer does

    with (
        pytest.raises(ReadingProcessFailed, match=r"\(killed by SIGKILL: out of memory\?\)$"),
        forked(produce) as received,
    ):
        assert list(received) == [1]


def test_a_consumer_that_stops_early_stops_the_producer(tmp_path: Path) -> None:
    made = tmp_path / "made"

    def produce() -> Iterator[bytes]:
        for number in range(10_000):
            made.write_text(f"{number} {os.getpid()}")
            yield b"x" * 100_000  # far more than the pipe holds

    with forked(produce) as received:
        assert next(received) == b"x" * 100_000
        time.sleep(0.2)
        # Ahead by what the pipe and the two buffers hold, then it waits.
        ahead = int(made.read_text().split()[0])
        assert ahead < 60
    pid = int(made.read_text().split()[1])
    assert reaped(pid)


def test_a_consumer_that_fails_stops_the_producer(tmp_path: Path) -> None:
    made = tmp_path / "made"

    def produce() -> Iterator[int]:
        made.write_text(str(os.getpid()))
        while True:
            yield 1

    with pytest.raises(RuntimeError, match="the writer failed"), forked(produce) as received:
        next(received)
        raise RuntimeError("the writer failed")
    assert reaped(int(made.read_text()))


def test_the_producer_ends_with_its_consumer(tmp_path: Path) -> None:
    # The consumer killed outright: its producer, waiting on input that does
    # not come, is killed too (as import - waiting on a quiet pipe would be).
    made = tmp_path / "producer"
    read_end, write_end = os.pipe()
    consumer = os.fork()
    if consumer == 0:
        try:

            def produce() -> Iterator[bytes]:
                made.write_text(str(os.getpid()))
                yield os.read(read_end, 1)  # nobody writes: waits

            with forked(produce) as received:
                list(received)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 10
    while not made.exists() or not made.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    producer = int(made.read_text())
    os.kill(consumer, signal.SIGKILL)
    os.waitpid(consumer, 0)
    try:
        while not ended(producer):
            assert time.monotonic() < deadline, "the producer outlived its consumer"
            time.sleep(0.01)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(producer, signal.SIGKILL)  # else it would hold this run's output open
        os.close(read_end)
        os.close(write_end)


def test_no_fork_beside_another_thread() -> None:
    alone = threading.active_count() == 1  # a test run may hold other tests' threads
    assert can_fork() == alone
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not can_fork()
    finally:
        stop.set()
        other.join()
    assert can_fork() == alone


def test_a_producer_that_closes_its_output_and_lives_on_is_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The import never hangs on a reading process that stopped writing but did not end."""
    monkeypatch.setattr(catalog.forked, "DEFAULT_REAP_SECONDS", 0.2)

    def produce() -> Iterator[int]:
        yield 1
        for descriptor in range(3, 1024):  # its end of the pipe among them
            with contextlib.suppress(OSError):
                os.close(descriptor)
        time.sleep(60)

    with (
        pytest.raises(ReadingProcessFailed, match=r"did not end in 0.2 s; killed\)$"),
        forked(produce) as received,
    ):
        assert list(received) == [1]
