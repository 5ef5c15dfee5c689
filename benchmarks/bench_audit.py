"""Benchmark the consistency audit: 1,000,000 objects on a local connector, 100,000 on S3.

    .venv/bin/python benchmarks/bench_audit.py [--items 200000] [--files 5] [--keep]
    .venv/bin/python benchmarks/bench_audit.py --s3 [--items 20000]

Builds (once, kept under ``benchmarks/out/audit`` with ``--keep``) a local
folder of ``items x files`` small files, two folder levels deep, and a
SQLite catalog that records every one of them (the product's migrations,
then bulk inserts), with a handful of files removed, changed and added
behind the catalog's back. Then times, as whole processes, median of
``--runs``:

- ours: ``resolwe-storage audit local --json`` (wall time and peak RSS
  through ``measure.wrapped``), checking it found exactly what was done;
- the peer: ``rclone check --size-only`` of the folder against itself (a
  listing of both sides and a comparison, no catalog), where rclone is
  installed, and ``find -printf | sort`` (the bare listing) always.

With ``--s3`` the objects are in a bucket of a ``moto_server`` started for
the run (``bench_transfer.Moto``), uploaded once, harmed with the server's
own client, and the peers are ``rclone check --size-only`` of the bucket
against itself and ``aws s3 ls --recursive`` (the bare listing).

The issue's targets: at most 60 s and 300 MB for 1,000,000 local objects.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from measure import read_report, wrapped  # noqa: E402

from catalog.database import migrate, open_database  # noqa: E402

OUT = HERE / "out" / "audit"
DEFAULT_ITEMS = 200_000
#: Items in the S3 bucket (``--s3``): 100,000 objects of five files each.
DEFAULT_S3_ITEMS = 20_000
DEFAULT_FILES = 5
TARGET_SECONDS = 60.0
TARGET_RSS_MB = 300.0
#: What is done behind the catalog's back: so many files removed, changed, added.
HARMED = 7


def url_of(n: int) -> str:
    return f"{n // 1000:04d}/item-{n:07d}"


def build(folder: Path, items: int, files: int) -> Path:
    """The local folder, the catalog and the configuration; returns the configuration."""
    data = folder / "data"
    catalog = folder / "catalog.sqlite3"
    config = folder / "config.json"
    if config.exists():
        return config
    shutil.rmtree(folder, ignore_errors=True)
    data.mkdir(parents=True)
    body = b"0123456789"
    for n in range(items):
        item = data / url_of(n)
        item.mkdir(parents=True)
        for f in range(files):
            with open(item / f"f{f}.txt", "wb") as out:
                out.write(body)
    database = open_database(f"sqlite:///{catalog}")
    database.connect()
    migrate(database)
    database.close()
    _fill_catalog(catalog, items, files, connector="local")
    config.write_text(
        json.dumps(
            {
                "database": f"sqlite:///{catalog}",
                "connectors": {"local": {"connector": "local", "config": {"path": str(data)}}},
            }
        )
    )
    return config


def harm(folder: Path, items: int) -> None:
    """Remove, change and add ``HARMED`` files each (the same ones every run)."""
    data = folder / "data"
    for k in range(HARMED):
        n = (k * 7919) % items
        (data / url_of(n) / "f0.txt").unlink(missing_ok=True)
        (data / url_of(n) / "f1.txt").write_bytes(b"longer than ten")
        (data / url_of(n) / "stray.tmp").write_bytes(b"x")


def restore(folder: Path, items: int) -> None:
    """Undo ``harm`` and the audit's records, so every run sees the same."""
    data = folder / "data"
    for k in range(HARMED):
        n = (k * 7919) % items
        (data / url_of(n) / "f0.txt").write_bytes(b"0123456789")
        (data / url_of(n) / "f1.txt").write_bytes(b"0123456789")
        (data / url_of(n) / "stray.tmp").unlink(missing_ok=True)
    _reset_catalog(folder / "catalog.sqlite3")


def timed(command: list[str], **kwargs: object) -> tuple[float, float, int, str]:
    """(seconds, peak RSS MB, exit code, stdout) of ``command`` as a whole process."""
    with tempfile.NamedTemporaryFile("r") as measured:
        done = subprocess.run(
            wrapped(command, measured.name), capture_output=True, text=True, check=False, **kwargs
        )  # type: ignore[call-overload]
        report = read_report(measured.read())
    if report is None:
        raise SystemExit(f"error: {command[0]} could not be measured: {done.stderr.strip()}")
    return report.seconds, report.peak_rss_mb, report.exit_code, done.stdout


class S3Tree:
    """The same tree in a bucket of a fresh ``moto_server``: its configuration and its harm."""

    BUCKET = "audit-bench"

    def __init__(self, folder: Path, items: int, files: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from bench_transfer import ACCESS_KEY, SECRET_KEY, Moto, moto_access

        folder.mkdir(parents=True, exist_ok=True)
        self.server = Moto(folder)
        self.client, credentials, self.env = moto_access(self.server.endpoint, folder)
        self.remote = (
            f":s3,provider=Other,endpoint='{self.server.endpoint}',"
            f"access_key_id={ACCESS_KEY},secret_access_key={SECRET_KEY}:{self.BUCKET}"
        )
        self.client.create_bucket(Bucket=self.BUCKET)
        keys = [f"{url_of(n)}/f{f}.txt" for n in range(items) for f in range(files)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda key: self.put(key, b"0123456789"), keys))
        self.catalog = folder / "catalog.sqlite3"
        self.catalog.unlink(missing_ok=True)
        database = open_database(f"sqlite:///{self.catalog}")
        database.connect()
        migrate(database)
        database.close()
        _fill_catalog(self.catalog, items, files, connector="S3")
        self.config = folder / "config.json"
        self.config.write_text(
            json.dumps(
                {
                    "database": f"sqlite:///{self.catalog}",
                    "connectors": {
                        "S3": {
                            "connector": "s3",
                            "config": {
                                "bucket": self.BUCKET,
                                "endpoint_url": self.server.endpoint,
                                "credentials": str(credentials),
                                "region_name": "us-east-1",
                            },
                        }
                    },
                }
            )
        )
        self.items = items

    def put(self, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.BUCKET, Key=key, Body=body)

    def harm(self) -> None:
        for k in range(HARMED):
            n = (k * 7919) % self.items
            self.client.delete_object(Bucket=self.BUCKET, Key=f"{url_of(n)}/f0.txt")
            self.put(f"{url_of(n)}/f1.txt", b"longer than ten")
            self.put(f"{url_of(n)}/stray.tmp", b"x")

    def restore(self) -> None:
        for k in range(HARMED):
            n = (k * 7919) % self.items
            self.put(f"{url_of(n)}/f0.txt", b"0123456789")
            self.put(f"{url_of(n)}/f1.txt", b"0123456789")
            self.client.delete_object(Bucket=self.BUCKET, Key=f"{url_of(n)}/stray.tmp")
        _reset_catalog(self.catalog)


def _fill_catalog(catalog: Path, items: int, files: int, *, connector: str) -> None:
    """Every item, its location on ``connector`` and its files, in bulk."""
    connection = sqlite3.connect(catalog)
    created = "2026-01-01 00:00:00"
    with connection:
        connection.executemany(
            "INSERT INTO file_storage (id, key, data_slug, process_type, status, created)"
            " VALUES (?, ?, '', '', 'OK', ?)",
            ((n + 1, f"item-{n:07d}", created) for n in range(items)),
        )
        connection.executemany(
            "INSERT INTO storage_location (file_storage_id, connector_name, url, status,"
            " last_update) VALUES (?, ?, ?, 'OK', ?)",
            ((n + 1, connector, url_of(n), created) for n in range(items)),
        )
        connection.executemany(
            "INSERT INTO referenced_path (file_storage_id, path, size, md5, chunk_size)"
            " VALUES (?, ?, 10, '781e5e245d69b566979b86e28d23f2c7', 8388608)",
            ((n + 1, f"f{f}.txt") for n in range(items) for f in range(files)),
        )
    connection.close()


def _reset_catalog(catalog: Path) -> None:
    """Undo what an audit recorded."""
    connection = sqlite3.connect(catalog)
    with connection:
        connection.execute("DELETE FROM location_file")
        connection.execute("DELETE FROM action")
        connection.execute("UPDATE storage_location SET status = 'OK' WHERE status = 'DM'")
    connection.close()


def s3_main(args: argparse.Namespace) -> int:
    folder = OUT / f"s3-{args.items}x{args.files}"
    print(f"uploading {args.items} x {args.files} = {args.items * args.files} objects to moto ...")
    tree = S3Tree(folder, args.items, args.files)
    script = Path(sys.executable).parent / "resolwe-storage"
    try:
        runs: list[tuple[float, float]] = []
        for _ in range(args.runs):
            tree.harm()
            seconds, rss, code, out = timed(
                [str(script), "--config", str(tree.config), "audit", "S3", "--json"]
            )
            shown = json.loads(out)["connectors"][0]
            if code != 1 or (shown["lost"], shown["mismatched"], shown["dark"]) != (
                HARMED,
                HARMED,
                HARMED,
            ):
                raise SystemExit(f"error: the audit found {shown} (exit {code})")
            runs.append((seconds, rss))
            tree.restore()
        seconds = statistics.median(s for s, _ in runs)
        rss = max(r for _, r in runs)
        print(
            f"ours:  audit of {shown['objects']} objects on moto_server: {seconds:.2f} s ", end=""
        )
        print(f"(median of {args.runs}), {rss:.0f} MB")
        peers: dict[str, list[str]] = {}
        aws = shutil.which("aws")
        if aws:
            peers["aws s3 ls --recursive (the bare listing)"] = [
                aws, "s3", "ls", "--recursive", f"s3://{tree.BUCKET}",
                "--endpoint-url", tree.server.endpoint,
            ]  # fmt: skip
        if shutil.which("rclone"):
            peers["rclone check --size-only (the bucket against itself)"] = [
                "rclone", "check", "--size-only", "-q", tree.remote, tree.remote,
            ]  # fmt: skip
        for name, command in peers.items():
            peer = statistics.median(timed(command, env=tree.env)[0] for _ in range(args.runs))
            print(f"peer:  {name}: {peer:.2f} s; ratio ours/peer {seconds / peer:.2f}")
    finally:
        tree.server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS)
    parser.add_argument("--files", type=int, default=DEFAULT_FILES)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="Keep the tree for the next time.")
    parser.add_argument("--s3", action="store_true", help="On moto_server (default 20,000 items).")
    args = parser.parse_args(argv)
    if args.s3:
        if args.items == DEFAULT_ITEMS:
            args.items = DEFAULT_S3_ITEMS
        return s3_main(args)
    folder = OUT / f"{args.items}x{args.files}"
    print(f"building {args.items} x {args.files} = {args.items * args.files} objects ...")
    config = build(folder, args.items, args.files)
    script = Path(sys.executable).parent / "resolwe-storage"
    ours: list[tuple[float, float]] = []
    for _ in range(args.runs):
        harm(folder, args.items)
        seconds, rss, code, out = timed(
            [str(script), "--config", str(config), "audit", "local", "--json"]
        )
        shown = json.loads(out)["connectors"][0]
        expected = (HARMED, HARMED, HARMED)
        if code != 1 or (shown["lost"], shown["mismatched"], shown["dark"]) != expected:
            raise SystemExit(f"error: the audit found {shown}, not {expected} (exit {code})")
        ours.append((seconds, rss))
        restore(folder, args.items)
    seconds = statistics.median(s for s, _ in ours)
    rss = max(r for _, r in ours)
    objects = shown["objects"]
    print(
        f"ours:  audit of {objects} objects: {seconds:.2f} s (median of {args.runs}), {rss:.0f} MB"
    )
    data = str(folder / "data")
    peers: dict[str, float] = {}
    listing = statistics.median(
        timed(["sh", "-c", f"find {data} -type f -printf '%s %P\\n' | sort > /dev/null"])[0]
        for _ in range(args.runs)
    )
    peers["find -printf | sort (the bare listing)"] = listing
    if shutil.which("rclone"):
        peers["rclone check --size-only (the tree against itself)"] = statistics.median(
            timed(["rclone", "check", "--size-only", "-q", data, data])[0] for _ in range(args.runs)
        )
    for name, peer in peers.items():
        print(f"peer:  {name}: {peer:.2f} s; ratio ours/peer {seconds / peer:.2f}")
    within = seconds <= TARGET_SECONDS and rss <= TARGET_RSS_MB
    print(
        f"target: <= {TARGET_SECONDS:.0f} s and <= {TARGET_RSS_MB:.0f} MB for 1,000,000 objects: "
        f"{'met' if within else 'NOT met'}"
    )
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
