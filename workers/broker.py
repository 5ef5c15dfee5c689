"""The message broker: Redis in production, in-process for the embedded default.

Jobs are Dramatiq messages (``workers.messages`` is their contract).
``make_broker`` makes the broker: ``WakingRedisBroker`` on Redis
(``workers.redis_broker``), whose idle consumers wait for a wake-up token
rather than sleep blind, and which dead-letters a message that is not a
job; Dramatiq's ``StubBroker`` in process. Redis's client is loaded only
for a Redis broker: the embedded default goes without it (about a sixth of
a second of start-up with redis 8). ``enqueue_many`` sends many messages at
once, in one Redis pipeline per batch. ``Pending`` keeps one marker per
queued delete, verification or repair of a location (counting its jobs),
so that repeated scans do not queue the same work twice. ``answering``,
``QuietLogs`` and ``workers.outage`` say an outage of Redis once, in one
line.
``workers.monitor`` reads the queues for operators.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import BrokerConnectionError

from catalog.database import redact_url
from workers.outage import BROKER_OUTAGE, first_line

#: Milliseconds without a heartbeat after which a worker's messages go back
#: to the queue (Dramatiq's default is a minute; a killed worker's job is
#: redelivered within about this plus the maintenance interval).
DEFAULT_HEARTBEAT_TIMEOUT_MS = 10_000
#: Redis commands per million that also run queue maintenance (requeueing
#: the messages of dead workers); Dramatiq's default is 1,000.
DEFAULT_MAINTENANCE_CHANCE = 100_000
#: Milliseconds dead-lettered messages are kept (a week, as Dramatiq does).
DEFAULT_DEAD_MESSAGE_TTL_MS = 7 * 24 * 3600 * 1000
#: Messages per Redis pipeline round trip.
DEFAULT_ENQUEUE_BATCH = 1_000
#: Seconds a pending-work marker lives when its job never reports back.
DEFAULT_PENDING_TTL = 24 * 3600
#: Seconds a Redis command may wait for its answer, and a connection to be
#: made: a Redis behind a network that drops packets silently is an outage
#: (logged, retried), not a scan or a lease renewal hung for good. The
#: consumers' own waits (``BLPOP``) are far shorter. A URL's own
#: ``?socket_timeout=...`` or ``?socket_connect_timeout=...`` wins.
DEFAULT_REDIS_SOCKET_TIMEOUT = 60
DEFAULT_REDIS_CONNECT_TIMEOUT = 10
#: Prefix of our own Redis keys (Dramatiq's live under ``dramatiq:``).
KEY_PREFIX = "resolwe-storage"
#: Where the scheduler leaves its last scan's report, for the dashboard.
LAST_SCAN_KEY = f"{KEY_PREFIX}:last-scan"


logger = logging.getLogger(__name__)


#: Redis's errors of a broker out of reach, and of one that answers but
#: takes no write now: full (``maxmemory``), or a replica made read-only by
#: a failover. Either way the write was refused, and trying later will work.
_REDIS_OUTAGES = ("ConnectionError", "TimeoutError", "OutOfMemoryError", "ReadOnlyError")


def unreachable() -> tuple[type[BaseException], ...]:
    """The errors of a broker out of reach (down, restarting, unreachable) or taking no writes.

    Redis's own join Dramatiq's once Redis's client is loaded (by a Redis
    broker): before, nothing can raise them.
    """
    redis = sys.modules.get("redis")
    errors = [getattr(getattr(redis, "exceptions", None), name, None) for name in _REDIS_OUTAGES]
    return (*(error for error in errors if error is not None), BrokerConnectionError)


def on_redis(broker: dramatiq.Broker) -> bool:
    """Whether ``broker`` is a Redis broker (without loading Redis's client to ask)."""
    module = sys.modules.get("dramatiq.brokers.redis")
    return module is not None and isinstance(broker, module.RedisBroker)


class BrokerUnavailable(Exception):
    """The broker (Redis) did not answer; nothing that needed it was done.

    The message is one line naming the broker (its password hidden), the
    cause, and what was not done.
    """


@contextmanager
def answering(broker: dramatiq.Broker, *, what: str = "") -> Iterator[None]:
    """The block, with a broker that does not answer raised as ``BrokerUnavailable``.

    One line naming the broker (its password hidden) and the cause; ``what``
    says what was not done.
    """
    try:
        yield
    except unreachable() as exc:
        raise BrokerUnavailable(
            f"the broker {describe(broker)} did not answer ({first_line(exc)})"
            + (f"; {what}" if what else "")
        ) from None


def describe(broker: dramatiq.Broker) -> str:
    """The broker's URL, for a message: password hidden."""
    kwargs = getattr(getattr(broker, "client", None), "connection_pool", None)
    kwargs = getattr(kwargs, "connection_kwargs", {}) if kwargs is not None else {}
    if not kwargs:
        return "in process"
    host, port, db = kwargs.get("host", "?"), kwargs.get("port", "?"), kwargs.get("db", 0)
    return redact_url(f"redis://{host}:{port}/{db}")


class QuietLogs(logging.Filter):
    """Keeps Dramatiq's logs to what an operator needs.

    Dramatiq's consumers log a CRITICAL line each time they find the broker
    gone (every second, per queue) and a warning each second per job whose
    acknowledgement waits: dropped, ``BROKER_OUTAGE`` says it once instead.
    A try of a job that fails with an ``expected`` error (a backend, the
    catalog or the broker out of reach) is an info line without traceback:
    a job given up is said once, with its reason, by ``GiveUpHistory``. Any
    other error keeps its traceback: it is a bug.
    """

    NOISE = (
        "Consumer encountered a connection error",
        "Restarting consumer in",
        "Failed to post_process_message(",
    )

    def __init__(self, expected: tuple[type[BaseException], ...] = ()) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("dramatiq."):
            return True
        message = str(record.msg)
        if any(message.startswith(noise) for noise in self.NOISE):
            return False
        level = logging.getLogger().getEffectiveLevel()
        if message.startswith("Retries exceeded"):
            return level <= logging.INFO  # GiveUpHistory says so, with the reason
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and isinstance(error, self.expected):
            # One try of a job that is retried, or given up (said once more then).
            if level > logging.INFO:
                return False
            record.msg = f"{record.getMessage().rstrip('.')}: {type(error).__name__}: {error}"
            record.msg = record.msg.replace(" with unhandled exception", "")
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_logs(expected: tuple[type[BaseException], ...] = ()) -> None:
    """Install ``QuietLogs`` on the root logger's handlers (once)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, QuietLogs) for f in handler.filters):
            handler.addFilter(QuietLogs(expected))


def dead_note_key(message_id: str) -> str:
    """The Redis key of what is known of a dead-lettered job: its items' keys, why it died."""
    return f"{KEY_PREFIX}:dead:{message_id}"


def note_dead(
    broker: dramatiq.Broker, message_id: str, *, keys: Sequence[str], reason: str
) -> None:
    """Keep, beside a job given up, its items' keys and the reason, as long as the dead letter.

    On Redis only (``workers.monitor.dead_letters`` reads it); a broker that
    does not answer loses the note, not the job.
    """
    if not on_redis(broker):
        return
    note = json.dumps({"keys": list(keys), "reason": reason})
    try:
        broker.client.set(dead_note_key(message_id), note, px=DEFAULT_DEAD_MESSAGE_TTL_MS)
    except unreachable() as exc:
        BROKER_OUTAGE.failed(exc)


def make_broker(url: str | None) -> dramatiq.Broker:
    """A Redis broker for ``redis://`` URLs (``WakingRedisBroker``); an in-process one for None."""
    if url is None:
        return StubBroker()
    import redis

    from workers.redis_broker import WakingRedisBroker

    # Dramatiq would make the pool from the URL alone, with no timeouts.
    pool = redis.ConnectionPool.from_url(
        url,
        socket_timeout=DEFAULT_REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=DEFAULT_REDIS_CONNECT_TIMEOUT,
    )
    return WakingRedisBroker(
        connection_pool=pool,
        heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT_MS,
        maintenance_chance=DEFAULT_MAINTENANCE_CHANCE,
        dead_message_ttl=DEFAULT_DEAD_MESSAGE_TTL_MS,
    )


def enqueue_many(broker: dramatiq.Broker, messages: Iterable[dramatiq.Message]) -> int:
    """Enqueue ``messages``; on Redis in pipelined batches. Returns how many."""
    if not on_redis(broker):
        count = 0
        for message in messages:
            broker.declare_queue(message.queue_name)
            broker.enqueue(message)
            count += 1
        return count
    from workers.redis_broker import enqueue_batch

    count = 0
    batch: list[dramatiq.Message] = []
    for message in messages:
        batch.append(message)
        if len(batch) >= DEFAULT_ENQUEUE_BATCH:
            count += enqueue_batch(broker, batch)
            batch = []
    if batch:
        count += enqueue_batch(broker, batch)
    return count


def queued_here(broker: StubBroker) -> int:
    """Messages waiting on the in-process ``broker``, its delay queues' included."""
    return sum(queue.qsize() for queue in broker.queues.values())


def keep_share(broker: StubBroker, index: int, count: int) -> None:
    """Keep every ``count``-th message waiting on the in-process ``broker``, from ``index``.

    One process's share of the jobs queued before it was forked from
    ``count`` others (``workers.process.run_queued``): each keeps its own
    share of each queue, in the order queued, and no message is in two
    shares or none.
    """
    for queue in broker.queues.values():
        waiting = []
        while not queue.empty():
            waiting.append(queue.get_nowait())
            queue.task_done()
        for position, message in enumerate(waiting):
            if position % count == index:
                queue.put(message)


#: The in-process markers of each in-process broker.
_LOCAL_MARKERS: weakref.WeakKeyDictionary[dramatiq.Broker, dict[str, int]] = (
    weakref.WeakKeyDictionary()
)
_LOCAL_LOCK = threading.Lock()


class Pending:
    """Markers of queued or running work, so that it is not queued twice.

    A marker counts the jobs of one piece of work (a location's verification
    or delete, queued as several jobs) still to end: each job ends with
    ``done``, and the last one frees it. On Redis, one key per piece of work
    with a time to live (work whose jobs are lost entirely frees its marker
    within ``DEFAULT_PENDING_TTL``); in process, a dict.
    """

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._client = broker.client if on_redis(broker) else None
        # In process, every Pending of one broker shares one set of markers.
        with _LOCAL_LOCK:
            self._local = _LOCAL_MARKERS.setdefault(broker, {})
        self._lock = _LOCAL_LOCK

    @staticmethod
    def key(action: str, item_id: int, connector: str) -> str:
        return f"{KEY_PREFIX}:pending:{action}:{item_id}:{connector}"

    def claim(self, keys: Sequence[str], jobs: Sequence[int] | None = None) -> list[bool]:
        """Mark each of ``keys`` with its number of ``jobs`` (default 1).

        True for those that were not marked yet.
        """
        counts = list(jobs) if jobs is not None else [1] * len(keys)
        if self._client is None:
            with self._lock:
                fresh = [key not in self._local for key in keys]
                for key, count, new in zip(keys, counts, fresh, strict=True):
                    if new:
                        self._local[key] = count
            return fresh
        pipe = self._client.pipeline(transaction=False)
        for key, count in zip(keys, counts, strict=True):
            pipe.set(key, count, nx=True, ex=DEFAULT_PENDING_TTL)
        return [bool(done) for done in pipe.execute()]

    def done(self, key: str) -> None:
        """One job of the work marked ``key`` ended; the last one frees the marker.

        A broker that does not answer leaves the marker to expire
        (``DEFAULT_PENDING_TTL``): the work is done, and must not fail for it.
        """
        if self._client is None:
            with self._lock:
                left = self._local.get(key, 1) - 1
                if left > 0:
                    self._local[key] = left
                else:
                    self._local.pop(key, None)
            return
        try:
            if self._client.decr(key) <= 0:
                self._client.delete(key)
        except unreachable() as exc:
            BROKER_OUTAGE.failed(exc)

    def release(self, key: str) -> None:
        """Free the marker ``key`` now, whatever jobs it still counts."""
        self.release_many([key])

    def release_many(self, keys: Sequence[str]) -> None:
        """Free the markers ``keys`` now (one Redis round trip)."""
        if not keys:
            return
        if self._client is None:
            with self._lock:
                for key in keys:
                    self._local.pop(key, None)
            return
        self._client.delete(*keys)
