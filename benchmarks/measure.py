"""Measuring one command's own wall time and peak memory, for the benchmarks.

Linux keeps a process's RSS high-water mark across ``exec``, and a child
forked from a benchmark starts with the benchmark's RSS (which grows with
its page cache and data): ``os.wait4`` on a child started there would report
the benchmark's memory, not the command's. So the command runs under a small
wrapper (``-I -S``, nothing imported but ``os``, ``sys``, ``time``) that forks
it and reports, through a file: the monotonic times of the fork and of the
command's exit, its ``ru_maxrss`` (KiB) and its exit code. The wrapper costs
a few MiB of high-water and no time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: A machine counts as quiet when, over one window of this many seconds ...
DEFAULT_QUIET_WINDOW = 0.2
#: ... its CPUs were busy at most this share of the time ...
DEFAULT_QUIET_BUSY = 0.10
#: ... and its disks at most this share (requests in flight, discards included) ...
DEFAULT_QUIET_DISK = 0.10
#: ... and one waits at most this long (seconds) for that.
DEFAULT_QUIET_WAIT = 30.0


#: The PostgreSQL server the benchmarks make their databases on.
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_database(name: str) -> str:
    """A fresh, empty database ``name`` on ``POSTGRES`` (an earlier run's dropped); its URL."""
    import psycopg2

    connection = psycopg2.connect(POSTGRES)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {name}")
    connection.close()
    return POSTGRES.rsplit("/", 1)[0] + f"/{name}"


def compile_packages(root: Path) -> None:
    """Byte-compile our packages under ``root``, as an installed package is.

    With ``PYTHONDONTWRITEBYTECODE`` set (as in some shells and CI), every
    timed run would otherwise compile them again: about 70 ms of each
    ``run --once`` here, which no installed command pays.
    """
    import compileall

    for package in ("catalog", "connectors", "scheduler", "workers", "resolwe_storage"):
        compileall.compile_dir(root / package, quiet=1)


def warm(folder: str | os.PathLike[str]) -> None:
    """Read every file under ``folder``, so that every timed run starts with it cached.

    Tools leave the page cache differently: rclone drops what it read
    (``POSIX_FADV_DONTNEED``), so whatever ran after it read from disk, and
    measured here that doubled our time on 2,000 small files (0.21 s cached,
    0.45 s after rclone) while rclone, after us, always found them cached.
    """
    for top, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(top, name), "rb", buffering=0) as stream:
                while stream.read(1 << 20):
                    pass


def settle() -> float:
    """Flush dirty pages (``sync``), then wait until the machine is quiet; seconds waited.

    After a copy of thousands of small files the kernel goes on working
    for a second or more (journal, metadata writeback: kernel threads
    taking most of a core here), and whatever runs next pays for it:
    measured here, the same copy took 0.21 s after a pause and 0.40 s
    right after another tool's, in one run. Every timed run, ours and the
    peers', starts from this.

    Quiet means the disks too. This machine's root filesystem is mounted
    with ``discard``: the blocks of deleted files (every run's destination
    is deleted before the next) are discarded as the journal commits, and a
    discard took 100-280 ms of the device here, even of 8 KiB. A journal
    commit waits for the discards of the one before it, so a run that starts
    while they are pending pays for them at every ``fsync``: eight for our
    durable copy of four files, one ``sync`` for ``cp -r && sync``.
    """
    began = time.monotonic()
    subprocess.run(["sync"], check=True)
    while time.monotonic() - began < DEFAULT_QUIET_WAIT:
        before, disk = _cpu_times(), _disk_ticks()
        time.sleep(DEFAULT_QUIET_WINDOW)
        after, busy_disk = _cpu_times(), _disk_ticks() - disk
        total = after[0] - before[0]
        quiet_cpu = total > 0 and (after[1] - before[1]) / total <= DEFAULT_QUIET_BUSY
        if quiet_cpu and busy_disk <= DEFAULT_QUIET_DISK * DEFAULT_QUIET_WINDOW * 1000:
            break
    else:
        print(f"  (the machine was not quiet after {DEFAULT_QUIET_WAIT:.0f} s)", flush=True)
    return time.monotonic() - began


def _disk_ticks() -> int:
    """Milliseconds the machine's disks have had requests in flight so far (``/proc/diskstats``)."""
    disks = {
        name for name in os.listdir("/sys/block") if not name.startswith(("loop", "ram", "zram"))
    }
    busy = 0
    with open("/proc/diskstats") as stats:
        for line in stats:
            fields = line.split()
            if len(fields) > 12 and fields[2] in disks:
                busy += int(fields[12])
    return busy


def process_cpu_seconds(pid: int) -> float:
    """The user and system CPU seconds process ``pid`` has spent so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_busy() -> float:
    """Seconds of CPU time all CPUs have spent busy so far (user, system, irq; ``/proc/stat``).

    The difference over a run is what the whole machine spent on it: the
    command, the servers it talks to, the kernel's work for them.
    """
    return _cpu_times()[1] / os.sysconf("SC_CLK_TCK")


def _cpu_times() -> tuple[int, int]:
    """All CPUs' (total, busy) time so far, in ticks (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), sum(fields) - idle


WRAPPER = """
import os, sys, time
began = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
ended = time.monotonic()
code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as report:
    report.write(f"{began!r} {ended!r} {usage.ru_maxrss} {code}")
sys.exit(code if code >= 0 else 1)
"""


@dataclass(frozen=True)
class Report:
    """What the wrapper saw of the command."""

    began: float
    ended: float
    peak_rss_mb: float
    exit_code: int

    @property
    def seconds(self) -> float:
        return self.ended - self.began


def wrapped(command: list[str], report_path: str) -> list[str]:
    """``command`` run under the wrapper, which reports into ``report_path``."""
    return [sys.executable, "-I", "-S", "-c", WRAPPER, report_path, *command]


def read_report(text: str) -> Report | None:
    """The wrapper's report, or None when it wrote none (it could not run)."""
    fields = text.split()
    if len(fields) != 4:
        return None
    return Report(float(fields[0]), float(fields[1]), int(fields[2]) / 1024, int(fields[3]))
