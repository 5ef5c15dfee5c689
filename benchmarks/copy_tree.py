"""Copy a folder with our transfer engine, one ``copy_file`` per file (what a worker does).

    python benchmarks/copy_tree.py SRC_ROOT DEST_SPEC [--no-fsync] [--expected FILE]

``DEST_SPEC`` is a folder, or ``s3://BUCKET`` with ``$BENCH_S3_ENDPOINT`` and
``$BENCH_S3_CREDENTIALS`` naming the server and a credentials file.
``--expected FILE`` is a JSON file of each file's hashes, as the catalog
would hold them (``--write-expected FILE`` makes it), so every copy is
proven against them. Prints one JSON line: files, bytes, seconds, and how
each copy was validated.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.base import Connector
from connectors.hashing import hash_stream
from connectors.local import LocalConnector
from connectors.transfer import Expected, copy_file


def destination(spec: str, fsync: bool) -> Connector:
    if spec.startswith("s3://"):
        from connectors.s3 import S3Connector

        return S3Connector(
            "S3",
            bucket=spec.removeprefix("s3://"),
            endpoint_url=os.environ["BENCH_S3_ENDPOINT"],
            credentials=os.environ["BENCH_S3_CREDENTIALS"],
            region_name="us-east-1",
        )
    return LocalConnector("dest", path=spec, fsync=fsync)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source")
    parser.add_argument("destination")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--expected", metavar="FILE")
    parser.add_argument("--write-expected", metavar="FILE")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    source = LocalConnector("source", path=args.source)
    target = destination(args.destination, fsync=not args.no_fsync)
    paths = [info.path for info in source.list()]
    if args.write_expected:
        hashes = {}
        for path in paths:
            with source.open_read(path) as stream:
                hashes[path] = hash_stream(stream)._asdict()
        Path(args.write_expected).write_text(json.dumps(hashes))
        return
    expected: dict[str, Expected | None] = dict.fromkeys(paths)
    if args.expected:
        for path, known in json.loads(Path(args.expected).read_text()).items():
            expected[path] = Expected(**known)
    began = time.perf_counter()
    # One listing of the destination instead of a request per file, as rclone does.
    present = {info.path: info for info in target.list()}

    def one(path: str) -> tuple[int, str]:
        result = copy_file(
            source, path, target, path, expected=expected[path], present=present.get(path)
        )
        return result.size, result.validated_by

    with ThreadPoolExecutor(args.threads) as pool:
        results = list(pool.map(one, paths))
    seconds = time.perf_counter() - began
    print(
        json.dumps(
            {
                "files": len(results),
                "bytes": sum(size for size, _ in results),
                "seconds": seconds,
                "validated_by": sorted({how for _, how in results}),
            }
        )
    )


if __name__ == "__main__":
    main()
