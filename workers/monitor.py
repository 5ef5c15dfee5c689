"""What the queues hold, read from Redis for operators: counts, dead letters, live workers.

Reads only, except ``requeue_dead``, which puts dead-lettered jobs back on
their queue. The keys are Dramatiq's own (namespace ``dramatiq``): a queue
is a list, its delayed retries ``Q.DQ``, its dead letters the sorted set
``Q.XQ`` with their bodies in ``Q.XQ.msgs``; a worker holds the jobs it
took in ``__acks__.<worker>.<queue>`` and beats in ``__heartbeats__``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import DecodeError

from workers.broker import dead_note_key


class QueueStats(NamedTuple):
    """How much work one queue holds, on Redis."""

    queue: str
    #: Waiting for a worker.
    queued: int
    #: Waiting out a retry's backoff (Dramatiq's delay queue).
    delayed: int
    #: Taken by a worker and not yet acknowledged: running, or prefetched.
    running: int
    #: Given up (dead-lettered); Redis keeps them for ``DEFAULT_DEAD_MESSAGE_TTL_MS``.
    dead: int


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered job."""

    queue: str
    died: datetime
    actor: str
    args: list[Any]
    retries: int
    message_id: str
    #: The keys of the items the job worked on, and why it was given up
    #: (``workers.broker.note_dead``); empty when not known.
    keys: list[str] = field(default_factory=list)
    reason: str | None = None
    #: Its id in the dead-letter set (what ``requeue_dead`` and ``discard_dead`` take).
    redis_id: str = ""


def queue_stats(broker: RedisBroker, queues: Sequence[str]) -> list[QueueStats]:
    """Counts of queued, delayed, running and dead jobs per queue (a few Redis reads)."""
    client, namespace = broker.client, broker.namespace
    taken: dict[str, int] = dict.fromkeys(queues, 0)
    held: dict[str, int] = dict.fromkeys(queues, 0)
    ack_sets = list(client.scan_iter(match=f"{namespace}:__acks__.*", count=1000))
    sizes = _pipelined(client, [("scard", key) for key in ack_sets])
    for key, size in zip(ack_sets, sizes, strict=True):
        # __acks__.<worker id>.<queue>: taken by that worker. From <queue>.DQ:
        # a retry the worker holds until its backoff ends, so still delayed.
        queue = key.decode().split(".", 2)[-1]
        if queue.endswith(".DQ") and queue.removesuffix(".DQ") in held:
            held[queue.removesuffix(".DQ")] += size
        elif queue in taken:
            taken[queue] += size
    counts = _pipelined(
        client,
        [
            command
            for queue in queues
            for command in (
                ("llen", f"{namespace}:{queue}"),
                ("llen", f"{namespace}:{queue}.DQ"),
                ("zcard", f"{namespace}:{queue}.XQ"),
            )
        ],
    )
    return [
        QueueStats(
            queue=queue,
            queued=counts[3 * n],
            delayed=counts[3 * n + 1] + held[queue],
            running=taken[queue],
            dead=counts[3 * n + 2],
        )
        for n, queue in enumerate(queues)
    ]


def dead_letters(broker: RedisBroker, queue: str, *, limit: int) -> list[DeadLetter]:
    """The ``limit`` most recently dead-lettered jobs of ``queue``, newest first."""
    client, namespace = broker.client, broker.namespace
    found = client.zrevrange(f"{namespace}:{queue}.XQ", 0, limit - 1, withscores=True)
    if not found:
        return []
    bodies = client.hmget(f"{namespace}:{queue}.XQ.msgs", [redis_id for redis_id, _ in found])
    letters = []
    for (redis_id, score), body in zip(found, bodies, strict=True):
        if body is None:
            continue  # expired meanwhile
        died = datetime.fromtimestamp(score / 1000, tz=UTC)
        try:
            decoded = dramatiq.Message.decode(body)
        except DecodeError:
            # Not a job at all (``_WakingConsumer._quarantine``).
            letters.append(
                DeadLetter(
                    queue,
                    died,
                    "(not a job)",
                    [body[:80].decode("utf-8", "replace")],
                    0,
                    redis_id.decode(),
                    redis_id=redis_id.decode(),
                )
            )
            continue
        letters.append(
            DeadLetter(
                queue=queue,
                died=died,
                actor=decoded.actor_name,
                args=list(decoded.args),
                retries=int(decoded.options.get("retries", 0)),
                message_id=decoded.message_id,
                redis_id=redis_id.decode(),
            )
        )
    return _with_notes(client, letters)


def _with_notes(client: Any, letters: list[DeadLetter]) -> list[DeadLetter]:
    """``letters`` with their items' keys and the reason they died, where noted (one MGET)."""
    if not letters:
        return letters
    notes = client.mget([dead_note_key(letter.message_id) for letter in letters])
    found = []
    for letter, note in zip(letters, notes, strict=True):
        if note is not None:
            known = json.loads(note)
            letter = replace(letter, keys=list(known["keys"]), reason=known["reason"])
        found.append(letter)
    return found


def requeue_dead(broker: RedisBroker, queue: str, redis_id: str | None = None) -> int:
    """Put ``queue``'s dead-lettered jobs (or the one ``redis_id``) back on it; how many.

    Their retries are reset. For after the cause is fixed (a store back up,
    a credential renewed). Each job moves in one transaction: it is on the
    queue or dead, never both, never neither. Jobs are idempotent, so one
    requeued twice by two operators at once costs time, not data.
    """
    client, namespace = broker.client, broker.namespace
    dead_key, bodies_key = f"{namespace}:{queue}.XQ", f"{namespace}:{queue}.XQ.msgs"
    moved = 0
    for found in _dead_ids(client, dead_key, redis_id):
        body = client.hget(bodies_key, found)
        if body is None:
            client.zrem(dead_key, found)  # its body expired
            continue
        try:
            revived = dramatiq.Message.decode(body)
        except DecodeError:
            continue  # not a job: it stays dead, for an operator to look at

        revived = revived.copy(options={**revived.options, "retries": 0})
        pipe = client.pipeline(transaction=True)
        pipe.hset(f"{namespace}:{queue}.msgs", found, revived.encode())
        pipe.rpush(f"{namespace}:{queue}", found)
        pipe.zrem(dead_key, found)
        pipe.hdel(bodies_key, found)
        pipe.execute()
        moved += 1
    return moved


def discard_dead(broker: RedisBroker, queue: str, redis_id: str | None = None) -> int:
    """Forget ``queue``'s dead-lettered jobs (or the one ``redis_id``); how many went.

    The job's history in the catalog stays: only the dead letter goes.
    """
    client, namespace = broker.client, broker.namespace
    dead_key, bodies_key = f"{namespace}:{queue}.XQ", f"{namespace}:{queue}.XQ.msgs"
    gone = 0
    for found in _dead_ids(client, dead_key, redis_id):
        body = client.hget(bodies_key, found)
        pipe = client.pipeline(transaction=True)
        pipe.zrem(dead_key, found)
        pipe.hdel(bodies_key, found)
        if body is not None:
            with contextlib.suppress(DecodeError):  # not a job: no note
                pipe.delete(dead_note_key(dramatiq.Message.decode(body).message_id))
        removed, *_ = pipe.execute()
        gone += int(removed)
    return gone


def _dead_ids(client: Any, dead_key: str, redis_id: str | None) -> list[bytes]:
    """The Redis ids of the dead letters to act on: all, or the one (if it is dead)."""
    if redis_id is None:
        return list(client.zrange(dead_key, 0, -1))
    return [redis_id.encode()] if client.zscore(dead_key, redis_id) is not None else []


def oldest_queued(broker: RedisBroker, queue: str) -> datetime | None:
    """When the job first in line on ``queue`` was queued; None when none waits."""
    client, namespace = broker.client, broker.namespace
    first = client.lindex(f"{namespace}:{queue}", 0)
    if first is None:
        return None
    body = client.hget(f"{namespace}:{queue}.msgs", first)
    if body is None:
        return None
    try:
        stamp = dramatiq.Message.decode(body).message_timestamp
    except DecodeError:
        return None
    return datetime.fromtimestamp(stamp / 1000, tz=UTC)


def heartbeats(broker: RedisBroker) -> list[tuple[str, float]]:
    """Live worker processes and the seconds since each one's last heartbeat."""
    now_ms = time.time() * 1000
    beats = broker.client.zrangebyscore(
        f"{broker.namespace}:__heartbeats__",
        now_ms - broker.heartbeat_timeout,
        "+inf",
        withscores=True,
    )
    return [(worker.decode(), max(0.0, (now_ms - score) / 1000)) for worker, score in beats]


def live_workers(broker: RedisBroker) -> int:
    """Worker processes whose heartbeat is recent (those that would not be declared dead)."""
    now_ms = int(time.time() * 1000)
    return int(
        broker.client.zcount(
            f"{broker.namespace}:__heartbeats__", now_ms - broker.heartbeat_timeout, "+inf"
        )
    )


def _pipelined(client: Any, commands: Sequence[tuple[str, str]]) -> list[int]:
    pipe = client.pipeline(transaction=False)
    for name, key in commands:
        getattr(pipe, name)(key)
    return [int(value) for value in pipe.execute()]
