"""A worker process's threads: how long they wait idle, by broker and by caller."""

from __future__ import annotations

from pathlib import Path

import peewee as pw
import pytest

from tests.runtimes import folder_runtime
from workers import process
from workers.broker import make_broker


@pytest.mark.parametrize(("idle_ms", "expected"), [(None, process.DEFAULT_LOCAL_IDLE_MS), (7, 7)])
def test_idle_threads_wait_as_long_as_asked(
    tmp_path: Path, sqlite_db: pw.Database, idle_ms: int | None, expected: int
) -> None:
    runtime = folder_runtime(sqlite_db, make_broker(None), tmp_path)
    worker = process.start(runtime, threads=2, idle_ms=idle_ms)
    try:
        assert worker.worker_timeout == expected
        assert {thread.timeout for thread in worker.workers} == {expected / 1000}
    finally:
        process.stop(worker)
