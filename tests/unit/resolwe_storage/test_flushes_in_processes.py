"""What a ``run --once`` flushes to disk before the catalog records a local copy good.

The worker's system calls are traced (strace) in a process of its own: a
copy counts only once its bytes are durable, so the file and the folder
entry that names it are flushed (``fsync`` of each, or a ``syncfs`` of their
filesystem) before the transaction that records the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import crc32c

from tests.processes import Call, Cli, copying_pair, traced


def _import(cli: Cli, folder: Path, files: dict[str, bytes]) -> None:
    document = folder / "items.json"
    entries = [
        {
            "path": path,
            "size": len(data),
            "md5": hashlib.md5(data).hexdigest(),
            "crc32c": f"{crc32c.crc32c(data):08x}",
        }
        for path, data in files.items()
    ]
    item = {
        "key": "item-1",
        "data_slug": "test",
        "process_type": "data:test:",
        "status": "OK",
        "created": "2020-01-01T00:00:00Z",
        "locations": [{"connector": "local", "url": "item-1", "status": "OK"}],
        "files": entries,
    }
    document.write_text(json.dumps({"items": [item]}))
    cli.ok("import", document)


def _flushed(calls: list[Call], path: Path) -> bool:
    """Whether ``calls`` flush the file or folder ``path``: its own fsync, or a syncfs."""
    return any(
        (call.name in ("fsync", "fdatasync") and call.on(path))
        or (call.name == "syncfs" and call.under(path.parent.parent))
        for call in calls
    )


def test_a_file_found_whole_at_the_destination_is_flushed_before_it_is_recorded(
    tmp_path: Path,
) -> None:
    """A worker killed after a file's rename, before the fsync of its folder, leaves the
    file whole at its final name, its folder entry maybe only in memory. The job's retry
    finds it there with the right hash and keeps it: it must flush the file and its
    folder before recording the copy, or a power cut after the record loses a file the
    catalog counts."""
    data = b"the bytes of a large file" * 1000
    config = copying_pair(tmp_path)
    (tmp_path / "local" / "item-1").mkdir(parents=True)
    (tmp_path / "local" / "item-1" / "big.bin").write_bytes(data)
    cli = Cli(config)
    _import(cli, tmp_path, {"big.bin": data})
    left = tmp_path / "archive" / "item-1" / "big.bin"
    left.parent.mkdir(parents=True)
    left.write_bytes(data)  # where the killed worker left it, not flushed

    calls = traced(cli.command("run", "--once", "--processes", "1"), cwd=tmp_path, env=cli.env)

    read_back = next(
        index
        for index, call in enumerate(calls)
        if call.name == "openat" and call.on(left) and "O_RDONLY" in call.arguments
    )
    recorded = next(
        index
        for index, call in enumerate(calls)
        if index > read_back
        and call.name in ("pwrite64", "write")
        and "catalog.sqlite3" in call.arguments
    )
    between = calls[read_back:recorded]
    assert _flushed(between, left), "the file was recorded good without being flushed"
    assert _flushed(between, left.parent), "its folder entry was not flushed before the record"
    assert left.read_bytes() == data
    status = json.loads(cli.ok("status", "--json").out)
    assert status["locations"]["archive"] == {"OK": 1} and status["damaged_locations"] == 0


def test_an_export_is_on_disk_before_it_takes_the_place_of_the_last(tmp_path: Path) -> None:
    """An export is a backup: written beside its name, then renamed over the last
    one. Renamed before its bytes are flushed, a power cut can leave an empty or
    partial file under the name, and the last good export gone with it; the
    rename itself is lost unless the folder is flushed after it."""
    config = copying_pair(tmp_path)
    cli = Cli(config)
    _import(cli, tmp_path, {"a.bin": b"a"})
    target = tmp_path / "backup.json"
    target.write_text('{"items": []}\n')  # yesterday's

    calls = traced(cli.command("export", target), cwd=tmp_path, env=cli.env)

    partial = tmp_path / "backup.json.partial"
    renamed = next(
        index
        for index, call in enumerate(calls)
        if call.name.startswith("rename") and call.on(partial)
    )
    assert _flushed(calls[:renamed], partial), "renamed over the last export before a flush"
    assert _flushed(calls[renamed:], tmp_path), "the rename was not flushed (its folder)"
    assert json.loads(target.read_text())["items"][0]["key"] == "item-1"
