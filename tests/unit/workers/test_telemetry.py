"""Each job's log line and the worker's metrics, from jobs run in process (StubBroker)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dramatiq.brokers.stub import StubBroker
from prometheus_client import CollectorRegistry

from scheduler.scan import scan
from tests.unit.workers.test_actors import NOW, add_item, running
from workers import actors, messages
from workers.telemetry import WorkerMetrics, human_bytes


def drain_all(broker: StubBroker) -> None:
    """Until every job ran, failures included."""
    for queue in messages.QUEUES:
        broker.join(queue, fail_fast=False)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels``."""
    return sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_every_job_is_one_line_and_counted_whatever_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(actors, "DEFAULT_MIN_BACKOFF_MS", 10)
    registry = CollectorRegistry()
    caplog.set_level(logging.INFO, logger="workers.jobs")
    with running(tmp_path, threads=2, metrics=WorkerMetrics(registry)) as (policies, broker, _):
        database = actors.current().database
        add_item(tmp_path, "good", {"a.txt": b"1234", "b.txt": b"123456"})
        scan(policies, database, broker, now=NOW)
        drain_all(broker)
        add_item(tmp_path, "bad", {"c.txt": b"x"})
        (tmp_path / "local" / "bad" / "c.txt").unlink()  # lost at the source: fails for good
        scan(policies, database, broker, now=NOW)
        drain_all(broker)
    lines = [record for record in caplog.records if record.name == "workers.jobs"]
    assert len(lines) == 2, [record.getMessage() for record in lines]
    good, bad = (record.job for record in lines)  # type: ignore[attr-defined]
    assert good["keys"] == ["good"] and good["action"] == "copy"
    assert (good["connector"], good["files"], good["bytes"]) == ("backup", 2, 10)
    assert good["result"] == "2 copied" and good["seconds"] >= 0
    assert lines[0].getMessage().startswith("copy of 'good' to backup: 2 file(s), 10 B in ")
    assert bad["keys"] == ["bad"] and bad["result"] == "failed" and "error" in bad
    assert value(registry, "resolwe_storage_jobs_total", result="ok") == 1
    assert value(registry, "resolwe_storage_jobs_total", result="failed") == 1
    assert value(registry, "resolwe_storage_jobs_total", result="retried") == 0
    assert (
        value(registry, "resolwe_storage_job_files_total", action="copy", connector="backup") == 2
    )
    assert (
        value(registry, "resolwe_storage_job_bytes_total", action="copy", connector="backup") == 10
    )
    assert value(registry, "resolwe_storage_jobs_running", queue="copy") == 0
    durations = [
        value(registry, "resolwe_storage_job_duration_seconds_count", queue="copy", actor=actor)
        for actor in ("copy_items", "copy_files")
    ]
    assert sum(durations) == 2


def test_a_job_retried_is_said_so_and_counted_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from connectors.errors import BackendUnavailable
    from connectors.local import LocalConnector

    monkeypatch.setattr(actors, "DEFAULT_MIN_BACKOFF_MS", 10)
    calls = {"n": 0}
    real_copy = LocalConnector.copy_from

    def unavailable_once(self: LocalConnector, *args: object, **kwargs: object) -> object:
        # The backend's fault, once: the job is retried and then copies.
        if calls["n"] == 0:
            calls["n"] += 1
            raise BackendUnavailable("backup: timed out")
        return real_copy(self, *args, **kwargs)

    monkeypatch.setattr(LocalConnector, "copy_from", unavailable_once)
    registry = CollectorRegistry()
    caplog.set_level(logging.INFO, logger="workers.jobs")
    with running(tmp_path, threads=1, metrics=WorkerMetrics(registry)) as (policies, broker, _):
        add_item(tmp_path, "once", {"a.txt": b"abc"})
        scan(policies, actors.current().database, broker, now=NOW)
        drain_all(broker)
    results = [record.job["result"] for record in caplog.records if record.name == "workers.jobs"]  # type: ignore[attr-defined]
    assert results == ["retried", "1 copied"]
    assert value(registry, "resolwe_storage_jobs_total", result="retried") == 1
    assert value(registry, "resolwe_storage_jobs_total", result="ok") == 1
    assert (tmp_path / "backup" / "once" / "a.txt").read_bytes() == b"abc"


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (3 * 1024**2 + 1, "3.0 MiB"),
        (5 * 1024**5, "5120.0 TiB"),
    ],
)
def test_sizes_read_as_people_write_them(size: int, shown: str) -> None:
    assert human_bytes(size) == shown
