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

import sys
from dataclasses import dataclass

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
