"""Start-up: ``resolwe-storage --help`` and ``status`` on an empty catalog, as whole processes.

    .venv/bin/python benchmarks/bench_startup.py [--runs 20]

Each command runs ``--runs`` times; the median and the fastest wall times
are printed, beside the peers' (``aws --version``, another Python command
line, from ``benchmarks/out/peers``, and ``rclone version``) measured in the
same run. Our packages are byte-compiled first (``compileall``), as an
installed package is: with ``PYTHONDONTWRITEBYTECODE`` set, every run would
otherwise compile them again. Target (issue 21): 150 ms each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_transfer import find_tool  # noqa: E402
from measure import compile_packages  # noqa: E402

TARGET_MS = 150


def timed(command: list[str], runs: int) -> tuple[float, float]:
    """Median and fastest wall time of ``command``, in milliseconds."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    compile_packages(ROOT)
    folder = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    config = folder / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{folder / 'catalog.sqlite3'}",
                "connectors": {
                    "local": {"connector": "local", "config": {"path": str(folder / "data")}},
                    "S3": {
                        "connector": "s3",
                        "config": {"bucket": "b", "copy": {"delay": 1}},
                    },
                },
            }
        )
    )
    ours = [sys.executable, "-m", "resolwe_storage", "--config", str(config)]
    subprocess.run([*ours, "migrate"], check=True, capture_output=True)
    commands = {
        "resolwe-storage --help": [*ours, "--help"],
        "resolwe-storage status (empty catalog)": [*ours, "status"],
    }
    aws, rclone = find_tool("aws"), find_tool("rclone")
    if aws:
        commands["aws --version (peer)"] = [aws, "--version"]
    if rclone:
        commands["rclone version (peer)"] = [rclone, "version"]
    print(f"{'command':<42} {'median':>8} {'fastest':>8}")
    for name, command in commands.items():
        median, fastest = timed(command, args.runs)
        verdict = ""
        if "peer" not in name:
            verdict = "  met" if median <= TARGET_MS else f"  NOT met (target {TARGET_MS} ms)"
        print(f"{name:<42} {median:6.0f} ms {fastest:6.0f} ms{verdict}")


if __name__ == "__main__":
    main()
