"""The message broker: Redis in production, in-process for the embedded default.

Jobs are Dramatiq messages (``workers.messages`` is their contract).
``make_broker`` makes the broker: ``WakingRedisBroker`` on Redis, whose idle
consumers wait for a wake-up token rather than sleep blind, and which
dead-letters a message that is not a job; Dramatiq's ``StubBroker`` in
process. ``enqueue_many`` sends many messages at once, in one Redis pipeline
per batch. ``Pending`` keeps one marker per queued delete, verification or
repair of a location (counting its jobs), so that repeated scans do not
queue the same work twice. ``answering``, ``Outage`` and ``QuietLogs`` say
an outage of Redis once, in one line. ``workers.monitor`` reads the queues
for operators.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.brokers.stub import StubBroker
from dramatiq.common import compute_backoff
from dramatiq.errors import BrokerConnectionError, ConnectionClosed, DecodeError
from dramatiq.message import Message
from dramatiq.middleware import Middleware

from catalog.database import redact_url

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
#: Prefix of our own Redis keys (Dramatiq's live under ``dramatiq:``).
KEY_PREFIX = "resolwe-storage"
#: Where the scheduler leaves its last scan's report, for the dashboard.
LAST_SCAN_KEY = f"{KEY_PREFIX}:last-scan"
#: Wake-up tokens pushed for one batch of new jobs, at most (one per job
#: below that): each wakes one idle consumer.
DEFAULT_WAKE_TOKENS = 64
#: Seconds an unclaimed wake-up token lives (no consumer was idle for it).
DEFAULT_WAKE_TTL = 5


logger = logging.getLogger(__name__)

#: Errors of a broker that does not answer (down, restarting, unreachable).
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, BrokerConnectionError)


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
    except UNREACHABLE as exc:
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Outage:
    """Says once that a service stopped answering, and once that it answers again.

    A process that keeps running through an outage (a worker, the
    scheduler) would otherwise log every failed attempt: hundreds of lines
    for a restart of Redis.
    """

    def __init__(self, what: str, log: logging.Logger = logger) -> None:
        self.what = what
        self.log = log
        self.since: float | None = None
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        """It did not answer (``exc``): logged at the first failure of an outage only."""
        with self._lock:
            if self.since is not None:
                return
            self.since = time.monotonic()
        self.log.error(
            "%s does not answer: %s; carrying on when it does", self.what, first_line(exc)
        )

    def ok(self) -> None:
        """It answered: logged if it had not been."""
        if self.since is None:
            return
        with self._lock:
            if self.since is None:
                return
            seconds, self.since = time.monotonic() - self.since, None
        self.log.warning("%s answers again, after %.0f s", self.what, seconds)

    @property
    def down(self) -> bool:
        return self.since is not None


#: The broker as this process's workers see it.
BROKER_OUTAGE = Outage("the broker (Redis)")


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


def wake_key(namespace: str, queue: str) -> str:
    """The Redis list an idle consumer of ``queue`` waits on for new work."""
    return f"{namespace}:{queue}.wake"


class _WakingConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, but idle it waits on Redis for new work, not blind.

    Dramatiq's consumer finding its queue empty sleeps up to its timeout
    before it looks again, so new work waits half of that on average, each
    idle process on its own. Here the sleep is ``BLPOP`` on the queue's
    wake-up list (``wake_key``), which every enqueue of ours pushes a token
    onto: an idle worker starts the moment a job is queued, and still looks
    at least once per timeout (a job queued by someone who pushes no token).
    While its prefetch is full (busy) it backs off as Dramatiq's does.

    A message that cannot be decoded (not JSON, no ``message_id``: put on
    the queue by hand or by a service with a bug) is dead-lettered with a
    log line naming it, and the others fetched with it go on; Dramatiq's own
    consumer would stop at it and hold them all. An outage of Redis is
    logged once when it starts and once when it ends (``BROKER_OUTAGE``).
    """

    def __next__(self) -> Any:
        try:
            while True:
                if self.message_cache:
                    data = self.message_cache.pop(0)
                    try:
                        message = Message.decode(data) if data is not None else None
                    except DecodeError:
                        self._quarantine(data)
                        continue
                    if message is None:
                        continue
                    self.misses = 0
                    self.queued_message_ids.add(message.message_id)
                    return dramatiq.MessageProxy(message)
                if self.outstanding_message_count >= self.prefetch:
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                    return None
                self.message_cache = self.broker.do_fetch(
                    self.queue_name, self.prefetch - self.outstanding_message_count
                )
                BROKER_OUTAGE.ok()
                if self.message_cache:
                    continue
                key = wake_key(self.broker.namespace, self.queue_name)
                self.broker.client.blpop([key], timeout=self.timeout / 1000)
                return None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            BROKER_OUTAGE.failed(exc)
            raise ConnectionClosed(exc) from None

    def _quarantine(self, data: bytes) -> None:
        """Dead-letter an undecodable message; its Redis id is found by its body."""
        client, namespace = self.broker.client, self.broker.namespace
        acks = f"{namespace}:__acks__.{self.broker.broker_id}.{self.queue_name}"
        bodies = f"{namespace}:{self.queue_name}.msgs"
        ids = list(client.smembers(acks))
        found = [
            redis_id
            for redis_id, body in zip(ids, client.hmget(bodies, ids) if ids else [], strict=True)
            if body == data
        ]
        for redis_id in found:
            self.broker.do_nack(self.queue_name, redis_id)
        shown = data[:120].decode("utf-8", "replace") if isinstance(data, bytes) else repr(data)
        logger.error(
            "queue %s: a message that is not a job (%r%s) was dead-lettered",
            self.queue_name,
            shown,
            "..." if len(data) > 120 else "",
        )

    def ack(self, message: Any) -> None:
        try:
            super().ack(message)
        except ConnectionClosed as exc:
            BROKER_OUTAGE.failed(exc)
            raise

    def nack(self, message: Any) -> None:
        try:
            super().nack(message)
        except ConnectionClosed as exc:
            BROKER_OUTAGE.failed(exc)
            raise


class WakingRedisBroker(RedisBroker):
    """A Redis broker whose idle consumers wake when work is queued (``_WakingConsumer``).

    Messages and queues are Dramatiq's own, unchanged; a wake-up token is
    pushed with every message enqueued through it (``enqueue``, and
    ``enqueue_many`` in batches).
    """

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        enqueued = super().enqueue(message, delay=delay)
        if not delay:
            wake(self, {enqueued.queue_name: 1})
        return enqueued


def wake(broker: RedisBroker, counts: dict[str, int], pipe: Any = None) -> None:
    """Push wake-up tokens for ``counts`` new jobs per queue (on ``pipe``, if given)."""
    own = pipe is None
    if own:
        pipe = broker.client.pipeline(transaction=False)
    for queue, count in counts.items():
        if queue.endswith(".DQ"):  # a delayed job waits for its time anyway
            continue
        key = wake_key(broker.namespace, queue)
        tokens = min(count, DEFAULT_WAKE_TOKENS)
        pipe.rpush(key, *([b"1"] * tokens))
        pipe.ltrim(key, -DEFAULT_WAKE_TOKENS, -1)
        pipe.expire(key, DEFAULT_WAKE_TTL)
    if own:
        pipe.execute()


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
    if not isinstance(broker, RedisBroker):
        return
    note = json.dumps({"keys": list(keys), "reason": reason})
    try:
        broker.client.set(dead_note_key(message_id), note, px=DEFAULT_DEAD_MESSAGE_TTL_MS)
    except UNREACHABLE as exc:
        BROKER_OUTAGE.failed(exc)


def make_broker(url: str | None) -> dramatiq.Broker:
    """A Redis broker for ``redis://`` URLs (``WakingRedisBroker``); an in-process one for None."""
    if url is None:
        broker: dramatiq.Broker = StubBroker()
    else:
        broker = WakingRedisBroker(
            url=url,
            heartbeat_timeout=DEFAULT_HEARTBEAT_TIMEOUT_MS,
            maintenance_chance=DEFAULT_MAINTENANCE_CHANCE,
            dead_message_ttl=DEFAULT_DEAD_MESSAGE_TTL_MS,
        )
    return broker


def enqueue_many(broker: dramatiq.Broker, messages: Iterable[dramatiq.Message]) -> int:
    """Enqueue ``messages``; on Redis in pipelined batches. Returns how many."""
    if not isinstance(broker, RedisBroker):
        count = 0
        for message in messages:
            broker.declare_queue(message.queue_name)
            broker.enqueue(message)
            count += 1
        return count
    count = 0
    batch: list[dramatiq.Message] = []
    for message in messages:
        batch.append(message)
        if len(batch) >= DEFAULT_ENQUEUE_BATCH:
            count += _redis_batch(broker, batch)
            batch = []
    if batch:
        count += _redis_batch(broker, batch)
    return count


def _redis_batch(broker: RedisBroker, batch: Sequence[dramatiq.Message]) -> int:
    """One pipeline holding what Dramatiq's enqueue does per message, per queue at once.

    Dramatiq stores a message under its Redis id in the queue's ``.msgs`` hash
    and pushes the id onto the queue's list; here one HSET and one RPUSH per
    queue carry the whole batch (the server runs them in order, so no id is
    listed before its message is stored). Middleware hooks run only where a
    middleware defines them.
    """
    before = _hooks(broker, "before_enqueue")
    after = _hooks(broker, "after_enqueue")
    stored: dict[str, dict[str, bytes]] = {}
    for message in batch:
        redis_id = str(uuid.uuid4())
        stamped = message.copy(options={"redis_message_id": redis_id})
        for hook in before:
            hook(broker, stamped, None)
        stored.setdefault(stamped.queue_name, {})[redis_id] = stamped.encode()
    pipe = broker.client.pipeline(transaction=False)
    for queue_name, messages in stored.items():
        broker.declare_queue(queue_name)
        queue = f"{broker.namespace}:{queue_name}"
        pipe.hset(f"{queue}.msgs", mapping=messages)  # type: ignore[arg-type]
        pipe.rpush(queue, *messages)
    # After the jobs, in the same round trip: a woken consumer finds them.
    wake(broker, {queue_name: len(messages) for queue_name, messages in stored.items()}, pipe)
    pipe.execute()
    for message in batch:
        for hook in after:
            hook(broker, message, None)
    return len(batch)


def _hooks(broker: dramatiq.Broker, name: str) -> list[Any]:
    """The ``name`` hooks of the broker's middleware that do something (not the base no-op)."""
    base = getattr(Middleware, name)
    return [
        getattr(middleware, name)
        for middleware in broker.middleware
        if getattr(type(middleware), name, base) is not base
    ]


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
        self._client = broker.client if isinstance(broker, RedisBroker) else None
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
        except UNREACHABLE as exc:
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
