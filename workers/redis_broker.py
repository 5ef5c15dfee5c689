"""The Redis broker: Dramatiq's, with consumers woken by our enqueues.

Kept apart from ``workers.broker`` so that Redis's client (about a sixth of
a second to import with redis 8) is loaded only where a Redis broker is
made (``make_broker``); the embedded default goes without it.
``WakingRedisBroker``'s idle consumers wait for a wake-up token rather than
sleep blind, and dead-letter a message that is not a job; ``enqueue_batch``
is one pipeline per batch of ``enqueue_many``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed, DecodeError
from dramatiq.message import Message
from dramatiq.middleware import Middleware, Retries

from workers.outage import BROKER_OUTAGE

logger = logging.getLogger(__name__)

#: Wake-up tokens pushed for one batch of new jobs, at most (one per job
#: below that): each wakes one idle consumer.
DEFAULT_WAKE_TOKENS = 64
#: Seconds an unclaimed wake-up token lives (no consumer was idle for it).
DEFAULT_WAKE_TTL = 5
#: Seconds between tries to queue a job's retry while Redis does not take it
#: (Dramatiq waits as long between tries of an acknowledgement).
DEFAULT_RETRY_ENQUEUE_WAIT = 5
#: Redis's errors of a server out of reach or taking no writes now.
_OUTAGES = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,
    redis.exceptions.ReadOnlyError,
)


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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.middleware = [_PatientRetries(m) if type(m) is Retries else m for m in self.middleware]

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _WakingConsumer

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        enqueued = super().enqueue(message, delay=delay)
        if not delay:
            wake(self, {enqueued.queue_name: 1})
        return enqueued


class _PatientRetries(Retries):
    """Dramatiq's retries, but a retry that Redis does not take is tried until it does.

    Dramatiq's own logs the failed enqueue and goes on: the job is then
    acknowledged without its retry, and the work is lost (a copy until the
    scan resumes it an hour later, a delete, verification or repair until
    its pending marker expires a day later). Here the worker thread waits
    for Redis, as Dramatiq waits to hand in an acknowledgement.
    """

    def __init__(self, retries: Retries) -> None:
        super().__init__(
            max_retries=retries.max_retries,
            min_backoff=retries.min_backoff,
            max_backoff=retries.max_backoff,
            retry_when=retries.retry_when,
        )

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        super().after_process_message(
            _EnqueueUntilTaken(broker), message, result=result, exception=exception
        )


class _EnqueueUntilTaken:
    """``broker``, whose ``enqueue`` waits out an outage of Redis rather than raise."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self._broker = broker

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def enqueue(self, message: dramatiq.Message, *, delay: int | None = None) -> dramatiq.Message:
        while True:
            try:
                return self._broker.enqueue(message, delay=delay)
            except _OUTAGES as exc:
                BROKER_OUTAGE.failed(exc)
                time.sleep(DEFAULT_RETRY_ENQUEUE_WAIT)


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


def enqueue_batch(broker: RedisBroker, batch: Sequence[dramatiq.Message]) -> int:
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
