"""``enqueue_many`` on the real Redis: what Dramatiq's own enqueue stores, consumed by a worker."""

from __future__ import annotations

import threading
import time
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.middleware import Middleware

from workers import broker as broker_module
from workers import redis_broker
from workers.broker import enqueue_many, make_broker
from workers.messages import message

pytest_plugins = ["tests.servers.redis"]


class Counting(Middleware):
    """Counts the enqueue hooks that ran, by message id."""

    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[str] = []

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message, delay: Any
    ) -> None:
        assert message.options["redis_message_id"]
        self.before.append(message.message_id)

    def after_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message, delay: Any) -> None:
        self.after.append(message.message_id)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(broker_module, "DEFAULT_ENQUEUE_BATCH", 100)
    return 100


def test_batches_store_what_dramatiq_stores_in_order(redis_url: str, small_batches: int) -> None:
    broker = make_broker(redis_url)
    counting = Counting()
    broker.add_middleware(counting)
    sent = [message("alpha" if n % 3 else "beta", "noop", n) for n in range(250)]

    assert enqueue_many(broker, iter(sent)) == 250

    client = redis.Redis.from_url(redis_url)
    for queue in ("alpha", "beta"):
        ids = [value.decode() for value in client.lrange(f"dramatiq:{queue}", 0, -1)]
        stored = client.hgetall(f"dramatiq:{queue}.msgs")
        assert sorted(ids) == sorted(key.decode() for key in stored)
        decoded = [dramatiq.Message.decode(stored[redis_id.encode()]) for redis_id in ids]
        expected = [m for m in sent if m.queue_name == queue]
        # Same messages, in the order sent, each under its own Redis id.
        assert [m.args for m in decoded] == [m.args for m in expected]
        assert [m.message_id for m in decoded] == [m.message_id for m in expected]
        assert all(m.options["redis_message_id"] == i for m, i in zip(decoded, ids, strict=True))
    assert counting.before == counting.after == [m.message_id for m in sent]
    client.close()
    broker.close()


def test_a_worker_runs_every_batched_message_once(redis_url: str, small_batches: int) -> None:
    broker = make_broker(redis_url)
    seen: list[int] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, actor_name="record", queue_name="alpha")
    def record(number: int) -> None:
        with lock:
            seen.append(number)

    enqueue_many(broker, (message("alpha", "record", n) for n in range(321)))
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        broker.join("alpha", timeout=30_000)
        worker.join()
    finally:
        worker.stop()
        broker.close()
    assert sorted(seen) == list(range(321))


def test_the_in_process_broker_takes_them_one_by_one() -> None:
    broker = make_broker(None)
    assert enqueue_many(broker, (message("alpha", "noop", n) for n in range(5))) == 5
    assert broker.queues["alpha"].qsize() == 5


@pytest.mark.parametrize("on_redis", [True, False], ids=["redis", "in-process"])
def test_a_marker_lasts_until_the_last_of_its_jobs_is_done(redis_url: str, on_redis: bool) -> None:
    from workers.broker import Pending

    pending = Pending(make_broker(redis_url if on_redis else None))
    key = Pending.key("verify", 7, "S3")
    other = Pending.key("verify", 8, "S3")
    pending.release(key)
    pending.release(other)
    assert pending.claim([key, other], [3, 1]) == [True, True]
    pending.done(other)
    pending.done(key)
    pending.done(key)
    # Two of its three jobs are done: still marked; the other is free.
    assert pending.claim([key, other]) == [False, True]
    pending.done(key)
    assert pending.claim([key]) == [True]
    pending.release(key)
    pending.release(other)


def blocked_on_wake_ups(client: redis.Redis) -> bool:
    """Whether some client of the server waits in BLPOP (an idle consumer of ours)."""
    return any(entry.get("cmd") == "blpop" for entry in client.client_list())


@pytest.mark.parametrize("how", ["enqueue_many", "send"])
def test_an_idle_worker_wakes_when_a_job_is_queued(redis_url: str, how: str) -> None:
    """Idle for 6 s at a time, it still starts a new job at once: the enqueue wakes it.

    (Its stop waits out the idle spell under way: 30 s, as a pool's, made
    this test a minute of the run.)"""
    broker = make_broker(redis_url)
    ran = threading.Event()

    @dramatiq.actor(broker=broker, actor_name="wake", queue_name="alpha")
    def wake() -> None:
        ran.set()

    client = redis.Redis.from_url(redis_url)
    worker = dramatiq.Worker(broker, worker_threads=1, worker_timeout=6_000)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not blocked_on_wake_ups(client):  # it found nothing and waits
            assert time.monotonic() < deadline, "the consumer never went idle"
            time.sleep(0.02)
        if how == "send":
            wake.send()
        else:
            enqueue_many(broker, [message("alpha", "wake")])
        # Well under the 6 s it would sleep without a wake-up.
        assert ran.wait(timeout=3)
    finally:
        worker.stop()
        client.close()
        broker.close()


def test_wake_up_tokens_are_capped_and_expire(redis_url: str) -> None:
    broker = make_broker(redis_url)
    client = redis.Redis.from_url(redis_url)
    key = redis_broker.wake_key(broker.namespace, "beta")
    client.delete(key)
    enqueue_many(broker, (message("beta", "noop", n) for n in range(500)))
    assert client.llen(key) == redis_broker.DEFAULT_WAKE_TOKENS
    assert 0 < client.ttl(key) <= redis_broker.DEFAULT_WAKE_TTL
    client.delete(key, "dramatiq:beta", "dramatiq:beta.msgs")
    client.close()
    broker.close()
