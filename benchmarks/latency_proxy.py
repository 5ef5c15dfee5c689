"""A TCP proxy that makes a server on this machine answer as slowly as one far away.

    .venv/bin/python benchmarks/latency_proxy.py --target 127.0.0.1:5000 --port 5100 --delay-ms 100

Real object stores answer in 10-100 ms; ``moto_server`` and fake-gcs-server
on 127.0.0.1 answer in about 1 ms, so a client that sends one request at a
time looks as fast there as one that keeps many in flight. Put this proxy in
front of the server and point the client at the proxy.

What it adds: on every connection, each request/response *turn* waits
``delay_ms`` before the first bytes of its response are passed on (after the
server produced them). A turn begins when the client sends bytes after
response bytes flowed (or for the first time): so on a kept-alive
connection every request pays the delay once, a streamed body of many
chunks pays it once, and an ``Expect: 100-continue`` request pays it twice
(the interim ``100 Continue`` is a response too, and the body sent after it
begins a new turn), which is the round trip it costs against a real store.
Optionally ``connect_delay_ms`` is paid when a connection is opened (a TCP
handshake is a round trip too); it is 0 by default.

What it counts (``LatencyProxy.stats()``, and printed by the command line on
exit): connections opened, the most open at once, request turns, the most
requests awaiting their response at once ("in flight"), and the mean of that
over time, interim ``100`` responses, bytes each way. The most connections
and requests in flight at once is what shows how many requests a client
really keeps under way.

Standard library only (``asyncio``); the proxy runs in a thread of its own
when used from a synchronous program (``LatencyProxy.start``/``stop``, or
``with LatencyProxy(...):``). Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass

#: Bytes read from either side at once.
DEFAULT_READ_SIZE = 256 * 1024
#: Seconds ``stop`` waits for the connections to close.
DEFAULT_STOP_SECONDS = 5.0
#: How an interim "100 Continue" status line begins (HTTP/1.0 or 1.1).
_CONTINUE = (b"HTTP/1.1 100", b"HTTP/1.0 100")


@dataclass(frozen=True)
class ProxyStats:
    """What the proxy saw since it started or was last reset."""

    #: Connections accepted.
    connections: int
    #: The most connections open at once.
    max_connections: int
    #: Connections open now.
    open_connections: int
    #: Request/response turns (requests, counting a body sent after "100 Continue" as one).
    turns: int
    #: The most requests at once that had been sent and had no response bytes yet.
    max_in_flight: int
    #: The mean of that over the time since the reset (requests in flight, time-weighted).
    mean_in_flight: float
    #: Interim "100 Continue" responses (each one a round trip of its own).
    continues: int
    #: Bytes from clients to the server, and back.
    bytes_up: int
    bytes_down: int
    #: Seconds since the reset.
    seconds: float

    def line(self) -> str:
        return (
            f"connections {self.connections} (at most {self.max_connections} open at once), "
            f"requests {self.turns} (at most {self.max_in_flight} in flight, "
            f"{self.mean_in_flight:.1f} on average), 100-continue {self.continues}, "
            f"{self.bytes_up / 1e6:.1f} MB up, {self.bytes_down / 1e6:.1f} MB down "
            f"in {self.seconds:.1f} s"
        )


class _Counters:
    """Mutable counters, changed on the proxy's event loop only."""

    def __init__(self) -> None:
        self.open = 0
        self.in_flight = 0
        self.reset()

    def reset(self) -> None:
        """Count afresh; what is open or in flight now stays so."""
        now = time.monotonic()
        self.began = now
        self.connections = 0
        self.max_connections = self.open
        self.turns = 0
        self.max_in_flight = self.in_flight
        self.area = 0.0  # requests in flight x seconds
        self.changed = now
        self.continues = 0
        self.bytes_up = 0
        self.bytes_down = 0

    def _integrate(self) -> None:
        now = time.monotonic()
        self.area += self.in_flight * (now - self.changed)
        self.changed = now

    def opened(self) -> None:
        self.connections += 1
        self.open += 1
        self.max_connections = max(self.max_connections, self.open)

    def closed(self) -> None:
        self.open -= 1

    def request(self) -> None:
        self._integrate()
        self.turns += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def answered(self) -> None:
        self._integrate()
        self.in_flight -= 1

    def snapshot(self) -> ProxyStats:
        self._integrate()
        seconds = max(time.monotonic() - self.began, 1e-9)
        return ProxyStats(
            connections=self.connections,
            max_connections=self.max_connections,
            open_connections=self.open,
            turns=self.turns,
            max_in_flight=self.max_in_flight,
            mean_in_flight=self.area / seconds,
            continues=self.continues,
            bytes_up=self.bytes_up,
            bytes_down=self.bytes_down,
            seconds=seconds,
        )


class _Turns:
    """One connection's state: is a request waiting for its response, since when."""

    def __init__(self) -> None:
        #: "idle" (nothing sent yet), "request" (request bytes sent, no answer
        #: yet) or "response" (answer bytes flowed since the last request bytes).
        self.phase = "idle"
        self.began = 0.0


class LatencyProxy:
    """Listens on ``host:port`` (0: a free port), forwards to ``target_host:target_port``.

    ``delay_ms`` and ``connect_delay_ms`` may be changed while it runs; they
    apply to the turns and connections that begin afterwards.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay_ms: float = 0.0,
        connect_delay_ms: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.delay_ms = delay_ms
        self.connect_delay_ms = connect_delay_ms
        self.host = host
        self.port = port
        self._counters = _Counters()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- in a thread of its own, for synchronous programs ---------------------

    def start(self) -> LatencyProxy:
        """Run the proxy on an event loop in a daemon thread; returns once it listens."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.listen())
            except BaseException as exc:  # reported to start()
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=serve, name="latency-proxy", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self) -> ProxyStats:
        """Stop listening, close every connection, end the thread; the final counts."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return self._counters.snapshot()
        asyncio.run_coroutine_threadsafe(self.close(), loop).result(DEFAULT_STOP_SECONDS + 5)
        final = self.stats()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(DEFAULT_STOP_SECONDS + 5)
        self._loop = self._thread = None
        return final

    def stats(self) -> ProxyStats:
        """The counts so far (safe from any thread)."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._snapshot(), self._loop)
            return future.result(10)
        return self._counters.snapshot()

    def reset(self) -> None:
        """Start counting afresh (open connections and requests in flight are kept)."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._reset(), self._loop).result(10)
        else:
            self._counters.reset()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _snapshot(self) -> ProxyStats:
        return self._counters.snapshot()

    async def _reset(self) -> None:
        self._counters.reset()

    # -- on an event loop ------------------------------------------------------

    async def listen(self) -> None:
        """Start listening (on the running loop); ``port`` is the real one afterwards."""
        self._server = await asyncio.start_server(
            self._accepted, self.host, self.port, backlog=1024, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=DEFAULT_STOP_SECONDS)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), DEFAULT_STOP_SECONDS)

    async def _accepted(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        counters = self._counters
        counters.opened()
        try:
            await self._relay(client_in, client_out)
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            counters.closed()
            self._tasks.discard(task)  # type: ignore[arg-type]
            _close(client_out)

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        if self.connect_delay_ms > 0:
            await asyncio.sleep(self.connect_delay_ms / 1000)
        server_in, server_out = await asyncio.open_connection(self.target_host, self.target_port)
        turns = _Turns()
        up = asyncio.ensure_future(self._requests(client_in, server_out, turns))
        down = asyncio.ensure_future(self._responses(server_in, client_out, turns))
        try:
            # The client may close its sending side and still read the answer:
            # the connection ends when the server's side ends (or fails).
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            if up in done and not up.cancelled() and up.exception() is None and not down.done():
                await down
        finally:
            for task in (up, down):
                task.cancel()
            await asyncio.gather(up, down, return_exceptions=True)
            if turns.phase == "request":
                self._counters.answered()  # a request left without an answer
                turns.phase = "idle"
            _close(server_out)

    async def _requests(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, turns: _Turns
    ) -> None:
        counters = self._counters
        while data := await source.read(DEFAULT_READ_SIZE):
            if turns.phase != "request":
                turns.phase = "request"
                turns.began = time.monotonic()
                counters.request()
            counters.bytes_up += len(data)
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            with contextlib.suppress(OSError):
                sink.write_eof()

    async def _responses(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, turns: _Turns
    ) -> None:
        counters = self._counters
        while data := await source.read(DEFAULT_READ_SIZE):
            if turns.phase == "request":
                # The first bytes of this turn's answer: they arrive a round trip late.
                if self.delay_ms > 0:
                    await asyncio.sleep(self.delay_ms / 1000)
                if data.startswith(_CONTINUE):
                    counters.continues += 1
                turns.phase = "response"
                counters.answered()
            counters.bytes_down += len(data)
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            with contextlib.suppress(OSError):
                sink.write_eof()


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


async def _main(args: argparse.Namespace) -> ProxyStats:
    host, port = args.target
    proxy = LatencyProxy(
        host,
        port,
        delay_ms=args.delay_ms,
        connect_delay_ms=args.connect_delay_ms,
        host=args.host,
        port=args.port,
    )
    await proxy.listen()
    print(
        f"latency proxy: {proxy.endpoint} -> {host}:{port}, {args.delay_ms:g} ms per request",
        file=sys.stderr,
        flush=True,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)

    async def report() -> None:
        while True:
            await asyncio.sleep(args.report_every)
            print(
                f"latency proxy: {proxy._counters.snapshot().line()}", file=sys.stderr, flush=True
            )

    reporter = asyncio.ensure_future(report()) if args.report_every > 0 else None
    await stopping.wait()
    if reporter is not None:
        reporter.cancel()
    final = proxy._counters.snapshot()
    await proxy.close()
    return final


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=_address, required=True, help="HOST:PORT to forward to")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    parser.add_argument("--delay-ms", type=float, default=100.0, help="delay per request turn")
    parser.add_argument(
        "--connect-delay-ms", type=float, default=0.0, help="delay per connection opened"
    )
    parser.add_argument(
        "--report-every", type=float, default=0.0, help="print the counts every N seconds"
    )
    args = parser.parse_args()
    final = asyncio.run(_main(args))
    print(f"latency proxy: {final.line()}", file=sys.stderr)
    print(json_line(final))
    return 0


def json_line(stats: ProxyStats) -> str:
    import json

    return json.dumps({key: round(value, 3) for key, value in asdict(stats).items()})


if __name__ == "__main__":
    sys.exit(main())
