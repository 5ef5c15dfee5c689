"""A worker process's threads: how long they wait idle, by broker and by caller."""

from __future__ import annotations

import os
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


def _cgroup(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return str(root)


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),  # v2: 1.5 CPUs, rounded up
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),  # no limit
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # v1
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"},
            None,
        ),
        ({}, None),  # no cgroup files at all
    ],
)
def test_usable_cpus_keep_within_the_containers_quota(
    tmp_path: Path, files: dict[str, str], quota: int | None
) -> None:
    here = len(os.sched_getaffinity(0))
    expected = here if quota is None else min(here, quota)
    assert process.usable_cpus(cgroup=_cgroup(tmp_path, files)) == expected
