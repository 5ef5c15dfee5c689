"""The broker's set-up: the embedded default goes without Redis's client."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import sys
from dramatiq.errors import BrokerConnectionError
from workers.broker import Pending, enqueue_many, make_broker, on_redis, unreachable
from workers.messages import message

broker = make_broker(None)
assert not on_redis(broker)
assert unreachable() == (BrokerConnectionError,), unreachable()
assert Pending(broker).claim(["a"]) == [True]
assert enqueue_many(broker, [message("copy", "copy_file", 1, "archive", "a.txt")]) == 1
assert "redis" not in sys.modules, "the in-process broker loaded Redis's client"

import redis
redis_broker = make_broker("redis://127.0.0.1:1/0")  # made, not contacted
assert on_redis(redis_broker)
assert set(unreachable()) == {
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,  # full: takes no write now
    redis.exceptions.ReadOnlyError,  # a replica, in a failover
    BrokerConnectionError,
}
print("ok")
"""


def test_the_in_process_broker_loads_no_redis_and_knows_its_errors() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_shares_of_the_queued_jobs_hold_each_once_in_order() -> None:
    from workers.broker import enqueue_many, keep_share, make_broker, queued_here
    from workers.messages import message

    copies = [message("copy", "copy_file", n, "archive", "a.txt") for n in range(7)]
    verifies = [message("verify", "verify_location", n, "archive") for n in range(2)]
    shares = []
    for index in range(3):
        broker = make_broker(None)  # as each forked process finds it: every job queued
        enqueue_many(broker, [*copies, *verifies])
        assert queued_here(broker) == 9
        keep_share(broker, index, 3)
        shares.append({name: list(queue.queue) for name, queue in broker.queues.items()})
        assert queued_here(broker) == len([m for ms in shares[-1].values() for m in ms])
    for name, sent in (("copy", copies), ("verify", verifies)):
        kept = [json.loads(m)["message_id"] for share in shares for m in share[name]]
        assert sorted(kept) == sorted(m.message_id for m in sent)  # each once, none left
        for share in shares:  # in the order queued
            items = [json.loads(m)["args"][0] for m in share[name]]
            assert items == sorted(items)
    assert [len(share["copy"]) for share in shares] == [3, 2, 2]
    assert [len(share["verify"]) for share in shares] == [1, 1, 0]
