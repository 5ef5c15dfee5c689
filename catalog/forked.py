"""Values made in a forked process and handed back over a pipe, in order.

An import reads and checks its items in a process of its own while this one
writes them (``catalog.streaming``): on SQLite the two are this process's
own work, which one Python process does on one CPU at a time, whereas two
processes use two (a reading thread was slower than none: the two took
turns at Python's lock).

``forked(produce)`` forks; the new process iterates ``produce()`` and sends
each value, pickled, down a pipe; this one unpickles them as it iterates.
The pipe's buffer is all that lies between them: a producer that is ahead
waits for the consumer, so memory holds about one value in each process.
The producer's exception is raised here, after the values before it. The
block's end stops and reaps the producer whatever happened: a consumer that
stops early (its own error, enough problems found) kills it, and a producer
that died without a word is an error here, never a short input.

The forked process touches nothing this one has open (the catalog's
connection among them) and ends with ``os._exit``: no teardown, no stdio
buffers flushed twice. Forked only on Linux, from a process with no other
thread (``can_fork``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from catalog.errors import ReadingProcessFailed

#: Bytes the pipe is read and written in at a time (its buffer, and ours).
DEFAULT_PIPE_BUFFER = 1 << 20
#: Seconds a producer whose output ended early is given to end before it is killed.
DEFAULT_REAP_SECONDS = 5.0

logger = logging.getLogger(__name__)

_VALUE, _END, _ERROR = 0, 1, 2


def can_fork() -> bool:
    """Whether ``forked`` may fork here: Linux, and no other thread in this process."""
    return sys.platform == "linux" and threading.active_count() == 1


@contextlib.contextmanager
def forked(produce: Callable[[], Iterable[Any]]) -> Iterator[Iterator[Any]]:
    """The values of ``produce()``, made in a forked process (see the module)."""
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError):  # a larger pipe, where the system allows
        import fcntl

        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, DEFAULT_PIPE_BUFFER)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _produce_and_exit(produce, write_end, parent)
    os.close(write_end)
    reader = os.fdopen(read_end, "rb", buffering=DEFAULT_PIPE_BUFFER)
    told: list[bool] = []  # the producer's last word (its end or its error) was received
    reaped: list[bool] = []
    try:
        yield _received(reader, told, pid, reaped)
    finally:
        reader.close()
        if not told:  # the consumer stopped early, or the producer died
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if not reaped:
            os.waitpid(pid, 0)


def _received(reader: IO[bytes], told: list[bool], pid: int, reaped: list[bool]) -> Iterator[Any]:
    while True:
        try:
            # An unpickler each: one kept across values kept each value's
            # objects alive too (its memo, measured: 0.6 MB a batch).
            kind, value = pickle.load(reader)
        except EOFError:
            how = _reap(pid)
            reaped.append(True)
            raise ReadingProcessFailed(
                f"the import's reading process ended before the end of its input ({how})"
            ) from None
        if kind == _VALUE:
            yield value
            continue
        told.append(True)
        if kind == _END:
            return
        raise value


def _reap(pid: int) -> str:
    """Wait for a producer whose output ended early; how it ended.

    One that closed its output but lives on is given
    ``DEFAULT_REAP_SECONDS``, then killed: the import never hangs on it.
    """
    deadline = time.monotonic() + DEFAULT_REAP_SECONDS
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return _how(status)
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return f"it closed its output and did not end in {DEFAULT_REAP_SECONDS:g} s; killed"
        time.sleep(0.005)


def _how(status: int) -> str:
    """How a process ended, from its ``waitpid`` status, in a few words."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}" + (": out of memory?" if number == signal.SIGKILL else "")
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _produce_and_exit(produce: Callable[[], Iterable[Any]], write_end: int, parent: int) -> None:
    """In the forked process: send every value, then the end or the error; never returns."""
    code = 1
    try:
        # Ctrl-C reaches the whole process group: the consumer decides.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _end_with(parent)
        with os.fdopen(write_end, "wb", buffering=DEFAULT_PIPE_BUFFER) as writer:
            send = pickle.Pickler(writer, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                for value in produce():
                    send.dump((_VALUE, value))
                    send.clear_memo()
                    writer.flush()
            except Exception as exc:  # handed over, raised by the consumer
                send.dump((_ERROR, _picklable(exc)))
            else:
                send.dump((_END, None))
        code = 0
    except BrokenPipeError:
        code = 0  # the consumer stopped reading: it knows why
    except BaseException:
        logger.exception("the reading process failed")
    finally:
        os._exit(code)


def _end_with(parent: int) -> None:
    """Have this process killed when ``parent`` ends (Linux's parent-death signal).

    A consumer killed outright must not leave its producer waiting on a
    pipe that nobody writes to (``import -``).
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


#: ``prctl``'s option: the signal this process gets when its parent ends.
_PR_SET_PDEATHSIG = 1


def _picklable(exc: Exception) -> Exception:
    """``exc``, or a ReadingProcessFailed that tells it, where it does not survive pickling."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return ReadingProcessFailed(f"{type(exc).__name__}: {exc}")
    return exc
