"""dramatiq's import goes without asyncio; asyncio works as usual once used (``workers.deferred``).

Each case runs in a process of its own: what is imported is the question.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_dramatiq_loads_without_asyncio() -> None:
    out = run(
        """
        import sys
        import workers, dramatiq, dramatiq.asyncio
        print(sorted(name for name in sys.modules if name.startswith("asyncio.")))
        print(type(sys.modules["asyncio"]).__name__)
        """
    )
    assert out.splitlines() == ["[]", "_StandIn"]


@pytest.mark.parametrize(
    "use",
    [
        "import asyncio\nasync def f(): return 5\nassert asyncio.run(f()) == 5",
        "from asyncio import Queue, run\nassert Queue().empty()",
        "import asyncio.subprocess\nassert asyncio.subprocess.PIPE == -1",
        "import dramatiq.asyncio as d\nd.asyncio.new_event_loop().close()",
    ],
    ids=["import and run", "from import", "a submodule", "through dramatiq"],
)
def test_asyncio_works_once_used(use: str) -> None:
    out = run(
        f"""
        import sys
        import workers, dramatiq, dramatiq.asyncio
        {textwrap.indent(use, " " * 8).strip()}
        real = sys.modules["asyncio"]
        print(type(real).__name__, real.__file__.endswith("__init__.py"))
        print(dramatiq.asyncio.asyncio is real, "asyncio.base_events" in sys.modules)
        """
    )
    assert out.splitlines() == ["module True", "True True"]


def test_an_async_actor_runs_on_the_event_loop_thread() -> None:
    out = run(
        """
        import workers, dramatiq
        from dramatiq.brokers.stub import StubBroker
        from dramatiq.middleware import AsyncIO

        broker = StubBroker(middleware=[AsyncIO()])
        broker.emit_after("process_boot")
        seen = []

        @dramatiq.actor(broker=broker)
        async def note(value):
            import asyncio
            await asyncio.sleep(0)
            seen.append(value)

        worker = dramatiq.Worker(broker, worker_threads=1)
        worker.start()
        note.send(7)
        broker.join(note.queue_name)
        worker.join()
        worker.stop()
        broker.emit_before("process_stop")
        print(seen)
        """
    )
    assert out == "[7]"


def test_asyncio_loaded_before_is_kept() -> None:
    out = run(
        """
        import asyncio, sys
        import workers, dramatiq, dramatiq.asyncio
        print(dramatiq.asyncio.asyncio is asyncio, sys.modules["asyncio"] is asyncio)
        """
    )
    assert out == "True True"


def test_threads_using_the_stand_in_at_once_get_one_asyncio() -> None:
    out = run(
        """
        import sys, threading
        import workers, dramatiq, dramatiq.asyncio
        stand_in = dramatiq.asyncio.asyncio
        start = threading.Barrier(8)
        found = []

        def use():
            start.wait()
            found.append(stand_in.get_event_loop_policy)

        threads = [threading.Thread(target=use) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        real = sys.modules["asyncio"]
        print(len(found), len(set(map(id, found))), real.get_event_loop_policy is found[0])
        """
    )
    assert out == "8 1 True"
