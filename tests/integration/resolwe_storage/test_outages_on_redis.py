"""Workers and the scheduler through a Redis outage, and messages that are not jobs.

Each runs as a process of its own against a real ``redis-server``: a
private one, stopped and started again, for the outages.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from tests.processes import Cli, copying_pair, stop, wait_for

if TYPE_CHECKING:
    from tests.servers.redis import PrivateRedis

pytest_plugins = ["tests.servers.redis"]

#: Seconds a new worker is watched for anything it should not say.
QUIET_SECONDS = 2


def outage(private_redis: PrivateRedis, log: Path, seconds: float) -> None:
    """Redis down until the process in ``log`` has said so, and for ``seconds`` at least.

    Long enough for many failed tries, none of which it may tell again.
    """
    private_redis.stop()
    back_at = time.monotonic() + seconds
    wait_for(lambda: "does not answer" in log.read_text(), "the outage to be told")
    time.sleep(max(0.0, back_at - time.monotonic()))
    private_redis.start()


def add_item(cli: Cli, tmp_path: Path, key: str) -> None:
    folder = tmp_path / "local" / key
    folder.mkdir(parents=True)
    (folder / "f.txt").write_text(key)
    cli.ok("ingest", "local", folder, "--key", key)


def copied(tmp_path: Path, key: str) -> bool:
    return (tmp_path / "archive" / key / "f.txt").exists()


def test_a_worker_says_once_that_redis_is_gone_and_once_that_it_is_back(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    cli = Cli(copying_pair(tmp_path, broker=private_redis.url))
    log = tmp_path / "worker.log"
    worker = cli.start("worker", "--threads", "2", log=log)
    try:
        add_item(cli, tmp_path, "before")
        cli.ok("scan")
        wait_for(lambda: copied(tmp_path, "before"), "the first copy")
        outage(private_redis, log, seconds=8)
        add_item(cli, tmp_path, "after")
        wait_for(lambda: cli("scan").code == 0, "a scan once Redis is back")
        wait_for(lambda: copied(tmp_path, "after"), "a copy after the outage")
    finally:
        stop(worker)
    lines = log.read_text().splitlines()
    assert "Traceback" not in log.read_text() and not any("CRITICAL" in line for line in lines)
    assert sum("does not answer" in line for line in lines) == 1, lines
    assert sum("answers again" in line for line in lines) == 1, lines
    assert len(lines) <= 4, lines


def test_the_scheduler_says_once_that_redis_is_gone_and_scans_when_it_is_back(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    cli = Cli(copying_pair(tmp_path, broker=private_redis.url))
    log = tmp_path / "scheduler.log"
    scheduler = cli.start("scheduler", "--interval", "1", log=log)
    try:
        wait_for(lambda: "scan:" in log.read_text(), "a first scan")
        outage(private_redis, log, seconds=6)
        scans = log.read_text().count("scan:")
        wait_for(lambda: log.read_text().count("scan:") > scans + 1, "scans after the outage")
    finally:
        stop(scheduler)
    text = log.read_text()
    assert "Traceback" not in text
    assert text.count("does not answer") == 1 and text.count("answers again") == 1, text
    assert not [line for line in text.splitlines() if "ERROR" in line and "answer" not in line]


def test_a_message_that_is_not_a_job_is_dead_lettered_and_holds_up_nothing(
    tmp_path: Path, redis_url: str
) -> None:
    cli = Cli(copying_pair(tmp_path, broker=redis_url))
    add_item(cli, tmp_path, "item-1")
    client = redis.Redis.from_url(redis_url)
    # Put there by hand, or by a service with a bug: before the real job.
    for body in (b"not json at all", json.dumps({"queue_name": "copy", "args": []}).encode()):
        redis_id = str(uuid.uuid4())
        client.hset("dramatiq:copy.msgs", redis_id, body)
        client.rpush("dramatiq:copy", redis_id)
    cli.ok("scan")
    log = tmp_path / "worker.log"
    worker = cli.start("worker", "--threads", "2", log=log)
    try:
        wait_for(lambda: copied(tmp_path, "item-1"), "the real job")
    finally:
        stop(worker)
    [copy] = [
        row
        for row in json.loads(cli.ok("queues", "--json").out)["queues"]
        if row["queue"] == "copy"
    ]
    assert (copy["queued"], copy["running"], copy["dead"]) == (0, 0, 2)
    dead = json.loads(cli.ok("queues", "--json").out)["dead"]
    assert {letter["actor"] for letter in dead} == {"(not a job)"}
    text = log.read_text()
    assert text.count("a message that is not a job") == 2 and "Traceback" not in text
    # They stay dead when the others are retried, and a new worker starts clean.
    assert json.loads(cli.ok("queues", "--retry-dead", "--json").out)["requeued"] == 0
    again_log = tmp_path / "again.log"
    again = cli.start("worker", log=again_log)
    try:
        wait_for(lambda: "worker:" in again_log.read_text(), "the new worker to start")
        time.sleep(QUIET_SECONDS)  # it would say something by now, were there anything to say
    finally:
        stop(again)
    assert again_log.read_text() == "worker: 8 thread(s) on copy, delete, verify\n"


def test_a_redis_that_never_answers_is_an_outage_not_a_hang(tmp_path: Path) -> None:
    """A network that drops packets silently: connections made, no answer ever.

    Each Redis command waits for its answer at most the socket timeout (a
    URL's own ``socket_timeout`` here, to keep the test short; the default
    is a minute), and then the scan is one error line, nothing reserved.
    """
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = silent.accept()
            except OSError:
                return
            held.append(connection)  # read nothing, answer nothing

    threading.Thread(target=accept, daemon=True).start()
    port = silent.getsockname()[1]
    try:
        broker = f"redis://127.0.0.1:{port}/0?socket_timeout=1"
        cli = Cli(copying_pair(tmp_path, broker=broker))
        add_item(cli, tmp_path, "k")
        began = time.monotonic()
        line = cli("scan", timeout=60).error_line
        assert "did not answer" in line, line
        assert time.monotonic() - began < 30
        assert json.loads(cli.ok("status", "--json").out)["locations"].get("archive") in (None, {})
    finally:
        silent.close()
        for connection in held:
            connection.close()


def test_a_broker_waits_for_an_answer_at_most_a_minute() -> None:
    from workers.broker import DEFAULT_REDIS_SOCKET_TIMEOUT, make_broker

    made = make_broker("redis://127.0.0.1:1/0").client.connection_pool.connection_kwargs
    assert (made["socket_timeout"], made["socket_connect_timeout"]) == (
        DEFAULT_REDIS_SOCKET_TIMEOUT,
        10,
    )
    assert DEFAULT_REDIS_SOCKET_TIMEOUT == 60
