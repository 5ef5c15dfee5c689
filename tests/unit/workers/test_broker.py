"""The broker's set-up: the embedded default goes without Redis's client."""

from __future__ import annotations

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
assert set(unreachable()) == {redis.ConnectionError, redis.TimeoutError, BrokerConnectionError}
print("ok")
"""


def test_the_in_process_broker_loads_no_redis_and_knows_its_errors() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
