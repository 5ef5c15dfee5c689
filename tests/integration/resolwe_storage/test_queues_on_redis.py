"""``queues``: what the real Redis holds per queue, dead-lettered jobs included."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dramatiq
import pytest

from resolwe_storage.cli import main
from workers.broker import enqueue_many, make_broker
from workers.messages import message

pytest_plugins = ["tests.servers.redis"]


def config_file(tmp_path: Path, broker: str) -> str:
    path = tmp_path / "config.json"
    document = {
        "database": f"sqlite:///{tmp_path / 'catalog.sqlite3'}",
        "broker": broker,
        "connectors": {"local": {"connector": "local", "config": {"path": str(tmp_path)}}},
    }
    path.write_text(json.dumps(document))
    return str(path)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_queued_running_and_dead_jobs_are_counted_and_the_dead_listed(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, redis_url)
    broker = make_broker(redis_url)
    release = threading.Event()
    started = threading.Event()

    @dramatiq.actor(broker=broker, actor_name="boom", queue_name="delete", max_retries=0)
    def boom(item_id: int, connector: str) -> None:
        raise ValueError("permanent")

    @dramatiq.actor(broker=broker, actor_name="hold", queue_name="verify", max_retries=0)
    def hold(item_id: int, connector: str) -> None:
        started.set()
        release.wait(30)

    enqueue_many(broker, [message("copy", "copy_files", n, "S3", ["a"]) for n in range(3)])
    enqueue_many(broker, [message("delete", "boom", 7, "S3"), message("verify", "hold", 8, "GCS")])
    worker = dramatiq.Worker(broker, queues={"delete", "verify"}, worker_threads=2)
    worker.start()
    try:
        client = broker.client  # type: ignore[attr-defined]
        wait_until(lambda: client.zcard("dramatiq:delete.XQ") == 1, "the dead letter")
        assert started.wait(30)

        assert main(["--config", config, "queues", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        counts = {row["queue"]: row for row in shown["queues"]}
        assert counts["copy"] == {
            "queue": "copy",
            "queued": 3,
            "delayed": 0,
            "running": 0,
            "dead": 0,
        }
        assert counts["delete"]["dead"] == 1 and counts["delete"]["queued"] == 0
        assert counts["verify"]["running"] == 1
        assert shown["workers"] >= 1
        [dead] = shown["dead"]
        assert (dead["queue"], dead["actor"], dead["args"]) == ("delete", "boom", [7, "S3"])

        assert main(["--config", config, "queues"]) == 0
        text = capsys.readouterr().out
        assert "dead " in text and 'delete: boom(7, "S3")' in text
        assert main(["--config", config, "queues", "--dead", "0", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["dead"] == []
    finally:
        release.set()
        worker.stop()
        broker.close()


def test_queues_needs_a_broker_and_says_so_when_it_does_not_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", config_file(tmp_path, None), "queues"]) != 0  # type: ignore[arg-type]
    assert "queues needs a broker" in capsys.readouterr().err
    unreachable = config_file(tmp_path, "redis://127.0.0.1:9/0")
    assert main(["--config", unreachable, "queues"]) != 0
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: queues: the broker did not answer") and "\n" not in error


def test_dead_jobs_go_back_on_their_queue_and_run_again(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, redis_url)
    broker = make_broker(redis_url)
    broken = threading.Event()
    broken.set()
    ran: list[int] = []

    @dramatiq.actor(broker=broker, actor_name="flaky", queue_name="delete", max_retries=0)
    def flaky(item_id: int, connector: str) -> None:
        if broken.is_set():
            raise ValueError("the store is down")
        ran.append(item_id)

    enqueue_many(broker, [message("delete", "flaky", n, "S3") for n in range(3)])
    worker = dramatiq.Worker(broker, queues={"delete"}, worker_threads=2)
    worker.start()
    client = broker.client  # type: ignore[attr-defined]
    try:
        wait_until(lambda: client.zcard("dramatiq:delete.XQ") == 3, "three dead letters")
        worker.pause()
        broken.clear()  # the cause is fixed

        assert main(["--config", config, "queues", "--retry-dead", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["requeued"] == 3
        delete = next(row for row in shown["queues"] if row["queue"] == "delete")
        assert (delete["queued"], delete["dead"]) == (3, 0)
        assert client.hlen("dramatiq:delete.XQ.msgs") == 0
        # Each comes back with its whole retry budget.
        revived = [json.loads(body) for body in client.hvals("dramatiq:delete.msgs")]
        assert [body["options"]["retries"] for body in revived] == [0, 0, 0]

        worker.resume()
        broker.join("delete", timeout=30_000)
        worker.join()
    finally:
        worker.stop()
        broker.close()
    assert sorted(ran) == [0, 1, 2]
    assert client.zcard("dramatiq:delete.XQ") == 0
