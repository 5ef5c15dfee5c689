"""The local connector: the conformance suite, plus what only a folder has."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from connectors import local as local_module
from connectors.base import Connector, ObjectInfo, copy_run, delete_all, read_run
from connectors.errors import (
    BackendUnavailable,
    ChecksumMismatch,
    InvalidPath,
    ObjectNotFound,
    Unsupported,
)
from connectors.local import PARTIAL_SUFFIX, LocalConnector, _beneath, _copy_in_kernel
from connectors.transfer import copy_file
from tests.connector_conformance import ConformanceSuite, CorruptInTransit, hashes_of, read_all

#: Seconds to wait for what a thread will do (generous: a loaded machine is slow).
EVENT_SECONDS = 30
#: Seconds a thread is given to do what it must not (it would take a few milliseconds).
BLOCKED_SECONDS = 0.5


@pytest.fixture
def connector(tmp_path: Path) -> LocalConnector:
    # A fresh, empty root: there (a root not there answers nothing, as a missing bucket).
    (tmp_path / "root").mkdir()
    return LocalConnector("local", path=tmp_path / "root", public_url="/local_data/")


@pytest.fixture
def local_source(tmp_path: Path) -> LocalConnector:
    (tmp_path / "source").mkdir()
    return LocalConnector("source", path=tmp_path / "source")


class TestLocalConformance(ConformanceSuite):
    pass


def test_symlink_out_of_the_root_is_refused_before_io(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "item").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (root / "item" / "escape").symlink_to(outside)
    (root / "item" / "file-link").symlink_to(outside / "secret")
    connector = LocalConnector("local", path=root)
    for path in ["item/escape/secret", "item/file-link", "item/escape/new"]:
        with pytest.raises(InvalidPath, match="outside the root"):
            connector.stat(path)
        with pytest.raises(InvalidPath):
            connector.write(path, io.BytesIO(b"overwrite"))
    for path in ["item/escape/secret", "item/escape/new"]:
        with pytest.raises(InvalidPath, match="symbolic link; not deleting through it"):
            connector.delete(path)
    # A link is deleted itself, never what it points to.
    connector.delete("item/file-link")
    assert not (root / "item" / "file-link").is_symlink()
    assert (outside / "secret").read_bytes() == b"secret"
    assert sorted(os.listdir(outside)) == ["secret"]


def test_a_delete_removes_a_link_never_what_it_points_to(tmp_path: Path) -> None:
    """Item a's file is a link into item b's folder: deleting a's copy leaves b's file."""
    root = tmp_path / "root"
    connector = LocalConnector("local", path=root)
    connector.write("b/data.txt", io.BytesIO(b"b's only copy"))
    (root / "a").mkdir()
    (root / "a" / "link.txt").symlink_to("../b/data.txt")
    (root / "a" / "own.txt").write_bytes(b"a's own")
    delete_all(connector, ["a/link.txt", "a/own.txt"], within="a")
    assert not (root / "a").exists()
    assert (root / "b" / "data.txt").read_bytes() == b"b's only copy"


def test_a_folder_reached_through_a_link_is_not_deleted_from(tmp_path: Path) -> None:
    root = tmp_path / "root"
    connector = LocalConnector("local", path=root)
    connector.write("b/data.txt", io.BytesIO(b"b's only copy"))
    (root / "a").symlink_to(root / "b")
    with pytest.raises(InvalidPath, match="'a' is a symbolic link"):
        connector.delete("a/data.txt", within="a")
    assert (root / "b" / "data.txt").read_bytes() == b"b's only copy"


def test_deleting_many_files_keeps_every_rule_of_deleting_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    connector = LocalConnector("local", path=root)
    for path in ("a/1", "a/2", "a/b/3", "c/4", "e/5"):
        connector.write(path, io.BytesIO(path.encode()))
    (root / "d").symlink_to(root / "c")
    (root / "a" / "link").symlink_to("../e/5")
    # Files of two folders, a missing one, a link, a folder's own entry: all
    # gone, the folders left empty pruned up to the copy, what a link points to kept.
    connector.delete_many(["a/1", "a/2", "a/missing", "a/link", "a/b/3", "a/b/"], within="a")
    assert not (root / "a").exists()
    assert (root / "e" / "5").read_bytes() == b"e/5"
    with pytest.raises(InvalidPath, match="'d' is a symbolic link"):
        connector.delete_many(["e/5", "d/4"], within="")
    assert (root / "c" / "4").read_bytes() == b"c/4"
    assert not (root / "e").exists()  # the folder before the link was done
    connector.delete_many([])


def test_a_write_replaces_a_link_at_its_path_never_what_it_points_to(tmp_path: Path) -> None:
    root = tmp_path / "root"
    connector = LocalConnector("local", path=root)
    connector.write("b/data.txt", io.BytesIO(b"b's only copy"))
    (root / "a").mkdir()
    (root / "a" / "link.txt").symlink_to("../b/data.txt")
    connector.write("a/link.txt", io.BytesIO(b"a's repaired file"))
    assert not (root / "a" / "link.txt").is_symlink()
    assert (root / "a" / "link.txt").read_bytes() == b"a's repaired file"
    assert (root / "b" / "data.txt").read_bytes() == b"b's only copy"


def test_empty_folders_are_pruned_up_to_the_copy_and_no_further(tmp_path: Path) -> None:
    connector = LocalConnector("local", path=tmp_path / "root")
    connector.write("project/item/sub/f", io.BytesIO(b"x"))
    connector.delete("project/item/sub/f", within="project/item")
    assert not (tmp_path / "root" / "project" / "item").exists()
    assert (tmp_path / "root" / "project").is_dir()


def test_a_name_too_long_for_the_filesystem_is_permanent(tmp_path: Path) -> None:
    connector = LocalConnector("local", path=tmp_path)
    with pytest.raises(InvalidPath, match="too long") as caught:
        connector.write("item/" + "n" * 300, io.BytesIO(b"x"))
    assert caught.value.transient is False


def test_a_symlink_within_the_root_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    connector = LocalConnector("local", path=root)
    connector.write("real/file", io.BytesIO(b"data"))
    (root / "alias").symlink_to(root / "real")
    assert connector.stat("alias/file") is not None


def test_a_link_loop_is_no_object_and_the_listing_goes_on(connector: LocalConnector) -> None:
    """Once the listing let the loop's ELOOP out untyped, ending it (and every
    confirmation before a delete, every audit, of the folder)."""
    connector.write("a/1", io.BytesIO(b"x"))
    connector.write("a/3", io.BytesIO(b"y"))
    (connector.root / "a" / "2").symlink_to("2")
    assert [info.path for info in connector.list("a/")] == ["a/1", "a/3"]
    with pytest.raises(InvalidPath, match="a/2"):
        connector.stat("a/2")


def test_partial_files_are_never_listed(connector: LocalConnector) -> None:
    connector.write("a/done", io.BytesIO(b"x"))
    (connector.root / "a" / f".b.1234{PARTIAL_SUFFIX}").write_bytes(b"half")
    assert [info.path for info in connector.list()] == ["a/done"]


def test_delete_prunes_empty_folders_but_not_the_root(connector: LocalConnector) -> None:
    connector.write("item/sub/file", io.BytesIO(b"x"))
    connector.write("other/file", io.BytesIO(b"y"))
    connector.delete("item/sub/file")
    assert not (connector.root / "item").exists()
    assert (connector.root / "other" / "file").exists()
    connector.delete("other/file")
    assert connector.root.is_dir() and list(connector.root.iterdir()) == []


def test_public_url(connector: LocalConnector, tmp_path: Path) -> None:
    assert connector.public_url("item 1/a#b.txt") == "/local_data/item%201/a%23b.txt"
    assert "public_url" in connector.capabilities()
    bare = LocalConnector("bare", path=tmp_path)
    with pytest.raises(Unsupported):
        bare.public_url("x")


class Elsewhere(Connector):
    """A source that is not a local folder (as S3 or GCS would be): bytes are streamed."""

    def __init__(self, inner: Connector) -> None:
        self.inner = inner
        self.name = "elsewhere"

    def stat(self, path: str) -> ObjectInfo | None:
        return self.inner.stat(path)

    def open_read(self, path: str) -> BinaryIO:
        return self.inner.open_read(path)

    def write(self, path: str, stream: BinaryIO, *, size: int | None = None) -> ObjectInfo:
        return self.inner.write(path, stream, size=size)

    def delete(self, path: str, *, within: str = "") -> None:
        self.inner.delete(path)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)


def test_a_streamed_copy_with_catalog_hashes_is_proven_by_what_was_written(
    connector: Connector, local_source: Connector
) -> None:
    """The destination's crc32c of what it wrote, against the catalog: no hashing in passing."""
    local_source.write("x", io.BytesIO(b"payload"))
    source = Elsewhere(local_source)
    result = copy_file(source, "x", connector, "x", expected=hashes_of(b"payload"))
    assert (result.how, result.validated_by, result.hashes) == ("streamed", "crc32c", None)


def test_two_folders_copy_in_the_kernel_proven_by_rereading_what_landed(
    connector: Connector, local_source: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(20 * 1024 * 1024 + 5)  # more than one hashing window
    local_source.write("item/x", io.BytesIO(data))
    calls: list[int] = []
    real = os.copy_file_range

    def counting(source: int, destination: int, count: int) -> int:
        calls.append(count)
        return real(source, destination, count)

    monkeypatch.setattr(os, "copy_file_range", counting)
    result = copy_file(local_source, "item/x", connector, "item/x", expected=hashes_of(data))
    assert (result.how, result.validated_by, result.hashes) == ("server-side", "crc32c", None)
    assert calls and read_all(connector, "item/x") == data
    assert copy_file(local_source, "item/x", connector, "item/x", expected=hashes_of(data)).how == (
        "skipped"
    )


def test_bytes_the_kernel_landed_wrong_are_caught_and_removed(
    connector: Connector, local_source: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The crc32c is of the destination as it is after the copy, not of what was meant."""
    data = os.urandom(100_000)
    local_source.write("x", io.BytesIO(data))
    real = os.copy_file_range

    def corrupting(source: int, destination: int, count: int) -> int:
        copied = real(source, destination, count)
        if copied:
            os.pwrite(destination, b"\xff", 4242)
        return copied

    monkeypatch.setattr(os, "copy_file_range", corrupting)
    with pytest.raises(ChecksumMismatch, match="removed"):
        copy_file(local_source, "x", connector, "x", expected=hashes_of(data))
    assert connector.stat("x") is None
    assert not [name for _, _, names in os.walk(connector.root) for name in names]


@pytest.mark.parametrize("fsync", [True, False])
@pytest.mark.parametrize("how", ["kernel", "stream"])
def test_a_large_durable_write_starts_its_writeback_a_piece_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, fsync: bool
) -> None:
    piece = 64 * 1024
    monkeypatch.setattr(local_module, "DEFAULT_WRITEBACK_CHUNK", piece)
    real = local_module._SYNC_FILE_RANGE
    started: list[tuple[int, int]] = []

    def recording(descriptor: int, offset: int, length: int, flags: int) -> int:
        assert flags == local_module._SYNC_WRITE
        started.append((offset, length))
        return real(descriptor, offset, length, flags) if real is not None else 0

    data = os.urandom(300 * 1024 + 7)
    source = LocalConnector("source", path=tmp_path / "source")
    source.write("x", io.BytesIO(data))
    destination = LocalConnector("archive", path=tmp_path / "archive", fsync=fsync)
    monkeypatch.setattr(local_module, "_SYNC_FILE_RANGE", recording)
    if how == "kernel":
        result = copy_file(source, "x", destination, "x", expected=hashes_of(data))
        assert result.how == "server-side"
    else:
        destination.write("x", io.BytesIO(data), size=len(data))
    assert read_all(destination, "x") == data
    if not fsync:
        assert started == []  # no durability asked: the kernel writes back when it likes
    elif how == "kernel":
        # Each whole piece as soon as it is copied; the flush that follows takes the rest.
        assert started == [(offset, piece) for offset in range(0, 4 * piece, piece)]
    else:
        assert started == [(0, len(data))]  # read and written in one go


@pytest.mark.parametrize("refusal", [errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP])
def test_folders_the_kernel_cannot_copy_between_go_through_user_space(
    connector: Connector, local_source: Connector, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    data = os.urandom(300_000)
    local_source.write("x", io.BytesIO(data))

    def refusing(source: int, destination: int, count: int) -> int:
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os, "copy_file_range", refusing)
    result = copy_file(local_source, "x", connector, "x", expected=hashes_of(data))
    assert result.validated_by == "crc32c" and read_all(connector, "x") == data


def test_a_kernel_copy_failing_midway_leaves_nothing(
    connector: Connector, local_source: Connector, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_source.write("x", io.BytesIO(os.urandom(300_000)))
    real = os.copy_file_range
    calls: list[int] = []

    def failing(source: int, destination: int, count: int) -> int:
        calls.append(count)
        if len(calls) > 1:
            raise OSError(errno.EIO, "Input/output error")
        return real(source, destination, 1000)

    monkeypatch.setattr(os, "copy_file_range", failing)
    with pytest.raises(BackendUnavailable, match="Input/output error"):
        copy_file(local_source, "x", connector, "x", expected=hashes_of(b"x" * 300_000))
    assert not [name for _, _, names in os.walk(connector.root) for name in names]


def test_without_catalog_hashes_two_folders_still_stream_and_hash(
    connector: Connector, local_source: Connector
) -> None:
    """A copy made out of our sight could not be judged without the catalog's hashes."""
    local_source.write("x", io.BytesIO(b"payload"))
    result = copy_file(local_source, "x", connector, "x")
    assert result.how == "streamed" and result.hashes is not None


def test_a_copy_without_catalog_hashes_hashes_in_passing(
    connector: Connector, local_source: Connector
) -> None:
    local_source.write("x", io.BytesIO(b"payload"))
    result = copy_file(local_source, "x", connector, "x")
    assert result.hashes is not None and result.hashes.crc32c == hashes_of(b"payload").crc32c
    assert result.validated_by == "crc32c"


class HashlessLocal(LocalConnector):
    """A backend that reports no hash of what it stored."""

    write_hashes = frozenset()

    def write(self, path: str, stream: BinaryIO, *, size: int | None = None) -> ObjectInfo:
        info = super().write(path, stream, size=size)
        return ObjectInfo(info.path, info.size, {})


def test_a_backend_without_hashes_is_read_back(tmp_path: Path, local_source: Connector) -> None:
    destination = HashlessLocal("plain", path=tmp_path / "plain")
    local_source.write("x", io.BytesIO(b"payload"))
    reads: list[str] = []
    original = destination.open_read

    def counting_open_read(path: str) -> BinaryIO:
        reads.append(path)
        return original(path)

    destination.open_read = counting_open_read  # type: ignore[method-assign]
    source = Elsewhere(local_source)
    result = copy_file(source, "x", destination, "x", expected=hashes_of(b"payload"))
    assert result.validated_by == "crc32c, read back" and reads == ["x"]
    corrupting = CorruptInTransit(destination, at=3)
    with pytest.raises(ChecksumMismatch, match="read back"):
        copy_file(source, "x", corrupting, "y", expected=hashes_of(b"payload"))
    assert destination.stat("y") is None


def test_a_known_listing_saves_the_stat(connector: LocalConnector, local_source: Connector) -> None:
    local_source.write("x", io.BytesIO(b"payload"))
    calls: list[str] = []
    original = connector.stat

    def counting_stat(path: str) -> ObjectInfo | None:
        calls.append(path)
        return original(path)

    connector.stat = counting_stat  # type: ignore[method-assign]
    copy_file(local_source, "x", connector, "x", expected=hashes_of(b"payload"), present=None)
    assert calls == []
    listed = {info.path: info for info in connector.list()}
    again = copy_file(
        local_source, "x", connector, "x", expected=hashes_of(b"payload"), present=listed["x"]
    )
    assert again.how == "skipped" and calls == []


def test_paths_under_the_root_resolve_as_realpath_does(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "f").write_bytes(b"x")
    (root / "alias").symlink_to(root / "a")
    (root / "a" / "up").symlink_to(tmp_path)
    (root / "a" / "loop").symlink_to(root / "a" / "loop")
    paths = [
        "a/b/f",
        "a/b/missing/deeper",
        "a/b/f/below-a-file",
        "alias/b/f",
        "a/up/root/a/b/f",
        "a/up/elsewhere",
        "a/loop/x",
        "nothing/here",
    ]
    real = str(root.resolve())
    for path in paths:
        assert _beneath(real, path.split("/")) == os.path.realpath(os.path.join(real, path)), path


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_writes_in_a_landing_block_appear_together_at_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, syncfs: bool
) -> None:
    if not syncfs:
        monkeypatch.setattr(local_module, "_SYNCFS", None)
    connector = LocalConnector("local", path=tmp_path)
    connector.write("item/old", io.BytesIO(b"old"))
    with connector.landing() as batch:
        assert connector.write("item/a", io.BytesIO(b"aaa")).size == 3
        connector.write("item/sub/b", io.BytesIO(b"b"))
        connector.write("item/old", io.BytesIO(b"new"))
        connector.write("item/gone", io.BytesIO(b"g"))
        connector.delete("item/gone")  # written in the block: never appears
        # Not there yet: other readers see what was there before, or nothing;
        # the writing thread reads what it wrote.
        assert [info.path for info in connector.list()] == ["item/old"]
        elsewhere: list[bytes] = []
        reader = threading.Thread(target=lambda: elsewhere.append(read_all(connector, "item/old")))
        reader.start()
        reader.join()
        assert elsewhere == [b"old"]
        assert read_all(connector, "item/old") == b"new"
        assert connector.stat("item/a").size == 3  # type: ignore[union-attr]
        assert not batch.landed
    assert batch.landed
    assert [info.path for info in connector.list()] == ["item/a", "item/old", "item/sub/b"]
    assert read_all(connector, "item/old") == b"new"
    assert files_under(tmp_path) == ["item/a", "item/old", "item/sub/b"]  # no temporaries


def test_a_landing_block_that_raises_still_lands_what_was_written(tmp_path: Path) -> None:
    connector = LocalConnector("local", path=tmp_path)
    with pytest.raises(KeyError), connector.landing() as batch:
        connector.write("a", io.BytesIO(b"a"))
        raise KeyError("the next file failed")
    assert batch.landed and files_under(tmp_path) == ["a"]


def test_a_landing_that_fails_leaves_nothing_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connector = LocalConnector("local", path=tmp_path)

    def broken_replace(source: str, destination: str) -> None:
        raise OSError(errno.EIO, "I/O error")

    with pytest.raises(BackendUnavailable, match="could not land"), connector.landing() as batch:
        connector.write("a", io.BytesIO(b"a"))
        connector.write("b", io.BytesIO(b"b"))
        monkeypatch.setattr(local_module.os, "replace", broken_replace)
    monkeypatch.undo()
    assert not batch.landed and files_under(tmp_path) == []


@pytest.mark.parametrize(
    "settings", [{"fsync": False}, {"batch_fsync": False}], ids=["no-fsync", "fsync-each"]
)
def test_unbatched_writes_in_a_landing_block_land_at_once(
    tmp_path: Path, settings: dict[str, bool]
) -> None:
    connector = LocalConnector("local", path=tmp_path, **settings)
    with connector.landing() as batch:
        connector.write("a", io.BytesIO(b"a"))
        assert files_under(tmp_path) == ["a"]
    assert batch.landed


def test_landing_blocks_do_not_nest(tmp_path: Path) -> None:
    durable = LocalConnector("durable", path=tmp_path)
    with durable.landing(), pytest.raises(RuntimeError, match="do not nest"), durable.landing():
        pass


def test_a_copy_in_a_landing_block_is_proven_on_its_new_bytes(tmp_path: Path) -> None:
    """A bad source over a good old copy: the proof must read the new bytes, not the old."""
    from connectors.transfer import Expected

    good = b"G" * 4096
    source = LocalConnector("source", path=tmp_path / "source")
    destination = LocalConnector("destination", path=tmp_path / "destination")
    destination.write("item/f", io.BytesIO(good))
    source.write("item/f", io.BytesIO(b"B" * 4096))  # damaged, same size
    md5_only = Expected(len(good), hashes_of(good).md5)  # no crc32c: read back for md5
    # present=None: the job writes without looking, as a first try of small files does.
    with pytest.raises(ChecksumMismatch), destination.landing():
        copy_file(source, "item/f", destination, "item/f", expected=md5_only, present=None)
    assert files_under(tmp_path / "destination") == []  # neither the bad nor a temporary


def left_by_a_dead_writer(folder: Path, name: str, *, age: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{name}.0123456789ab{PARTIAL_SUFFIX}"
    partial.write_bytes(b"half")
    then = time.time() - age
    os.utime(partial, (then, then))
    return partial


@pytest.mark.parametrize("batched", [True, False], ids=["landing", "alone"])
def test_stale_temporary_files_go_when_their_folder_is_next_written(
    tmp_path: Path, batched: bool
) -> None:
    day = local_module.DEFAULT_STALE_PARTIAL
    stale = left_by_a_dead_writer(tmp_path / "item", "a", age=day + 60)
    live = left_by_a_dead_writer(tmp_path / "item", "b", age=60)  # someone still writing
    connector = LocalConnector("local", path=tmp_path)
    with connector.landing() if batched else contextlib.nullcontext():
        connector.write("item/c", io.BytesIO(b"c"))
    assert not stale.exists() and live.exists()
    assert [info.path for info in connector.list()] == ["item/c"]
    # Swept once an interval: a folder of many files is not listed per file written.
    later = left_by_a_dead_writer(tmp_path / "item", "d", age=day + 60)
    connector.write("item/e", io.BytesIO(b"e"))
    assert later.exists()


def test_stale_temporary_files_go_when_their_folder_is_listed(tmp_path: Path) -> None:
    """A killed copy's temporary file, in a folder its resumed copy finished long ago.

    Nothing writes to that folder again; an audit's or a delete
    confirmation's listing comes by, and takes what is a day old.
    """
    connector = LocalConnector("local", path=tmp_path)
    connector.write("item/sub/a", io.BytesIO(b"a"))
    day = local_module.DEFAULT_STALE_PARTIAL
    stale = left_by_a_dead_writer(tmp_path / "item" / "sub", "big", age=day + 60)
    live = left_by_a_dead_writer(tmp_path / "item", "b", age=60)
    fresh = LocalConnector("local", path=tmp_path)  # has not swept those folders yet
    assert [info.path for info in fresh.list("item/")] == ["item/sub/a"]
    assert not stale.exists() and live.exists()


def test_a_folder_left_with_only_stale_temporary_files_is_removed(tmp_path: Path) -> None:
    connector = LocalConnector("local", path=tmp_path)
    connector.write("gone/sub/f", io.BytesIO(b"f"))
    connector.write("kept/f", io.BytesIO(b"f"))
    day = local_module.DEFAULT_STALE_PARTIAL
    left_by_a_dead_writer(tmp_path / "gone" / "sub", "g", age=day + 60)
    live = left_by_a_dead_writer(tmp_path / "kept", "g", age=60)
    fresh = LocalConnector("local", path=tmp_path)  # has not swept those folders yet
    fresh.delete("gone/sub/f")
    fresh.delete("kept/f")
    assert not (tmp_path / "gone").exists()
    assert live.exists()  # a live writer's folder stays


def test_a_link_at_the_destination_is_refused_in_a_landing_block_too(tmp_path: Path) -> None:
    """The folder is walked to once per block; what is at each path is still looked at."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (tmp_path / "root" / "item").mkdir(parents=True)  # there before the block
    connector = LocalConnector("local", path=tmp_path / "root")
    with connector.landing():
        connector.write("item/a", io.BytesIO(b"a"))  # the folder is known now
        (tmp_path / "root" / "item" / "link").symlink_to(outside / "secret")
        with pytest.raises(InvalidPath, match="outside the root"):
            connector.write("item/link", io.BytesIO(b"overwrite"))
    assert (outside / "secret").read_bytes() == b"secret"
    assert files_under(tmp_path / "root") == ["item/a", "item/link"]


def test_a_link_slipped_into_a_folder_the_block_made_is_replaced(tmp_path: Path) -> None:
    """A folder made in the block is not looked into again: the rename replaces the link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    connector = LocalConnector("local", path=tmp_path / "root")
    with connector.landing():
        connector.write("item/a", io.BytesIO(b"a"))  # the block makes the folder
        (tmp_path / "root" / "item" / "link").symlink_to(outside / "secret")
        connector.write("item/link", io.BytesIO(b"the item's own"))
    assert (outside / "secret").read_bytes() == b"secret"
    assert not (tmp_path / "root" / "item" / "link").is_symlink()
    assert (tmp_path / "root" / "item" / "link").read_bytes() == b"the item's own"


def test_a_folder_is_not_an_object_to_read(connector: LocalConnector) -> None:
    connector.write("item/a", io.BytesIO(b"a"))
    with pytest.raises(ObjectNotFound, match="folder"):
        connector.open_read("item")


def test_a_wrong_size_hint_costs_nothing_but_speed(connector: LocalConnector) -> None:
    data = os.urandom(300_000)
    assert connector.write("a", io.BytesIO(data), size=10).size == len(data)
    assert read_all(connector, "a") == data


def test_temporary_names_are_unique_and_a_forked_child_has_its_own() -> None:
    names = local_module._NAMES
    taken = {names.next("f") for _ in range(1000)}
    assert len(taken) == 1000 and all(name.endswith(PARTIAL_SUFFIX) for name in taken)
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(writing, names.prefix.encode())
        os._exit(0)
    os.waitpid(child, 0)
    os.close(writing)
    assert os.read(reading, 100).decode() != names.prefix
    os.close(reading)


def test_the_gate_lets_one_thread_through_at_a_time_until_it_leaves() -> None:
    gate = local_module._Gate()
    inside = threading.Event()  # the first is through the gate
    knocking = threading.Event()  # the second is about to go through
    second_in = threading.Event()  # ... and is through
    release = threading.Event()  # the first may leave
    order: list[str] = []

    def first() -> None:
        with gate.passing(("a", "b")) as leave:
            inside.set()
            release.wait(EVENT_SECONDS)
            order.append("first leaves")
            leave()
            # Still in its block: the second gets through all the same.
            second_in.wait(EVENT_SECONDS)
            order.append("first ends")

    def second() -> None:
        inside.wait(EVENT_SECONDS)
        knocking.set()
        with gate.passing(("a", "b")):
            order.append("second in")
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert inside.wait(EVENT_SECONDS) and knocking.wait(EVENT_SECONDS)
    # A while at the gate, and the second is not through: it waits there.
    assert not second_in.wait(BLOCKED_SECONDS)
    assert order == []
    release.set()
    for thread in threads:
        thread.join(EVENT_SECONDS)
    assert not any(thread.is_alive() for thread in threads)
    assert order == ["first leaves", "second in", "first ends"]


def test_slow_runs_open_the_gate_for_that_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """A network filesystem: one at a time would only hold the others up."""
    gate = local_module._Gate()
    monkeypatch.setattr(local_module, "DEFAULT_GATE_SLOW", 0.0)  # every run is slow
    for _ in range(local_module.DEFAULT_GATE_STRIKES):
        with gate.passing(("nfs", "b")):
            pass
    assert gate._ungated_until[("nfs", "b")] > time.monotonic()
    gate._lock.acquire()  # held by someone else: an ungated pair does not wait
    try:
        with gate.passing(("nfs", "b")):
            pass
    finally:
        gate._lock.release()
    monkeypatch.setattr(local_module, "DEFAULT_GATE_SLOW", 10.0)
    with gate.passing(("fast", "b")):
        pass
    assert ("fast", "b") not in gate._ungated_until


def waits_at(gate: local_module._Gate, key: tuple[str, str]) -> threading.Event:
    """An event set once another thread has passed ``gate`` with ``key``."""
    passed = threading.Event()

    def other() -> None:
        with gate.passing(key):
            passed.set()

    threading.Thread(target=other, daemon=True).start()
    return passed


def test_a_held_gate_lets_its_holder_pass_again_and_again_and_the_others_wait() -> None:
    gate = local_module._Gate()
    with gate.holding(("a", "b")):
        for _ in range(3):
            with gate.passing(("a", "b")):
                pass
        other = waits_at(gate, ("a", "b"))
        assert not other.wait(BLOCKED_SECONDS)  # held between the passes too
        with gate.passing(("a", "b")):
            pass
    assert other.wait(EVENT_SECONDS)
    with gate.passing(("a", "b")):  # nothing is left held
        pass


def test_leaving_a_held_pass_ends_the_hold() -> None:
    """A large file among small ones: the rest of it, and of the run, goes in parallel."""
    gate = local_module._Gate()
    with gate.holding(("a", "b")):
        with gate.passing(("a", "b")) as leave:
            other = waits_at(gate, ("a", "b"))
            assert not other.wait(BLOCKED_SECONDS)
            leave()
            assert other.wait(EVENT_SECONDS)
        with gate.passing(("a", "b")):  # taken again for this pass only
            pass
    assert not gate._lock.locked()


def test_slow_passes_end_a_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    gate = local_module._Gate()
    monkeypatch.setattr(local_module, "DEFAULT_GATE_SLOW", 0.0)
    with gate.holding(("nfs", "b")):
        for _ in range(local_module.DEFAULT_GATE_STRIKES):
            with gate.passing(("nfs", "b")):
                pass
        assert not gate._lock.locked()  # ungated: the rest goes in parallel
    with gate.holding(("nfs", "b")):
        assert not gate._lock.locked()  # an ungated pair is not held


def test_a_hold_does_not_nest_and_ends_when_its_block_raises() -> None:
    gate = local_module._Gate()
    with pytest.raises(ValueError), gate.holding(("a", "b")):
        with pytest.raises(RuntimeError, match="held by this thread"), gate.holding(("a", "b")):
            pass
        raise ValueError
    assert not gate._lock.locked()


def test_a_run_of_short_calls_is_held_and_judged_call_by_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A folder of many files removed or listed: slow as one pass, quick call by call."""
    gate = local_module._Gate()
    monkeypatch.setattr(local_module, "DEFAULT_GATE_SLOW", 0.01)
    for _ in range(local_module.DEFAULT_GATE_STRIKES):
        with gate.run(("a", "a")):
            other = waits_at(gate, ("a", "a"))
            for _ in range(5):
                with gate.timing(("a", "a")):
                    time.sleep(0.003)
            assert not other.wait(BLOCKED_SECONDS)  # held across the run
        assert other.wait(EVENT_SECONDS)
    assert ("a", "a") not in gate._ungated_until
    with gate.holding(("a", "a")):
        with gate.run(("a", "a")):  # within a hold: part of it
            pass
        assert gate._lock.locked()

    def run_in_a_pass() -> None:
        with gate.passing(("a", "a")), gate.run(("a", "a")):  # part of the pass
            pass

    thread = threading.Thread(target=run_in_a_pass, daemon=True)
    thread.start()
    thread.join(EVENT_SECONDS)
    assert not thread.is_alive() and not gate._lock.locked()


def test_deleting_and_listing_many_files_do_not_open_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = local_module._Gate()
    monkeypatch.setattr(local_module, "_GATE", gate)
    here = LocalConnector("here", path=tmp_path)
    # A folder's 500 calls take longer than a slow call (DEFAULT_GATE_SLOW).
    paths = [f"item/{folder}/{number}" for folder in "abcd" for number in range(500)]
    for path in paths:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"x")
    assert len(list(here.list("item/"))) == len(paths)
    here.delete_many(paths, within="item")
    assert not (tmp_path / "item").exists()
    assert ("here", "here") not in gate._ungated_until
    assert not gate._lock.locked()


def test_a_folder_is_listed_in_runs_in_path_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_module, "DEFAULT_LISTED_RUN", 2)
    here = LocalConnector("here", path=tmp_path)
    paths = ["i/a.txt", "i/a-b/x", "i/a/y", "i/b", "i/c/d/z", "i/e", "i/f", "j/g"]
    for path in paths:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(path.encode())
    assert [info.path for info in here.list("i/")] == sorted(p for p in paths if p < "j")
    assert [info.size for info in here.list("i/c/")] == [len("i/c/d/z")]


def test_a_run_of_copies_holds_the_gate_only_between_local_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = local_module._Gate()
    monkeypatch.setattr(local_module, "_GATE", gate)
    here = LocalConnector("here", path=tmp_path / "here")
    there = LocalConnector("there", path=tmp_path / "there")
    with copy_run(there, here):
        assert gate._lock.locked()
    assert not gate._lock.locked()
    elsewhere = Elsewhere(here)
    with copy_run(there, elsewhere):
        assert not gate._lock.locked()
    with copy_run(elsewhere, here):  # a destination without runs
        assert not gate._lock.locked()


def test_a_run_of_reads_holds_the_gate_until_a_large_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = local_module._Gate()
    monkeypatch.setattr(local_module, "_GATE", gate)
    monkeypatch.setattr(local_module, "DEFAULT_GATED_SIZE", 10)
    here = LocalConnector("here", path=tmp_path)
    (tmp_path / "small").write_bytes(b"0123456789")
    (tmp_path / "large").write_bytes(b"0123456789a")
    with read_run(here):
        with here.open_read("small") as stream:
            assert stream.read() == b"0123456789"
        other = waits_at(gate, ("here", "here"))
        assert not other.wait(BLOCKED_SECONDS)  # held between the reads
        with here.open_read("large") as stream:
            assert stream.read() == b"0123456789a"
        assert other.wait(EVENT_SECONDS)  # a large object: the rest in parallel
    assert not gate._lock.locked()
    with here.open_read("small"):  # outside a run: not gated
        assert not gate._lock.locked()
    with read_run(Elsewhere(here)):  # a connector without runs
        assert not gate._lock.locked()


def test_slow_opens_end_a_run_of_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = local_module._Gate()
    monkeypatch.setattr(local_module, "_GATE", gate)
    monkeypatch.setattr(local_module, "DEFAULT_GATE_SLOW", 0.0)  # every open is slow
    here = LocalConnector("nfs", path=tmp_path)
    (tmp_path / "small").write_bytes(b"x")
    with read_run(here):
        for _ in range(local_module.DEFAULT_GATE_STRIKES):
            assert gate._lock.locked()
            here.open_read("small").close()
        assert not gate._lock.locked()  # ungated: the rest goes in parallel


def test_a_kernel_copy_stops_at_the_size_the_source_had(tmp_path: Path) -> None:
    """No call only to hear of the end; not a byte past the size (validation fails then)."""
    source = tmp_path / "source"
    source.write_bytes(b"0123456789")
    for size, expected in ((10, b"0123456789"), (4, b"0123"), (50, b"0123456789")):
        target = tmp_path / f"copy-{size}"
        with open(source, "rb") as reader, open(target, "wb") as writer:
            copied = _copy_in_kernel(reader.fileno(), writer.fileno(), size)
        if copied is None:
            pytest.skip("no copy_file_range between these files here")
        assert (copied, target.read_bytes()) == (len(expected), expected)


def test_a_named_pipe_where_an_object_should_be_is_missing_at_once(tmp_path: Path) -> None:
    """Not waited on for a writer (a job would hang past any time limit): refused as missing."""
    root = LocalConnector("local", path=tmp_path / "root")
    archive = LocalConnector("archive", path=tmp_path / "archive")
    (tmp_path / "root" / "item").mkdir(parents=True)
    pipe = tmp_path / "root" / "item" / "a.txt"
    os.mkfifo(pipe)
    outcomes: list[object] = []

    def read() -> None:
        for attempt in (
            lambda: root.open_read("item/a.txt"),
            lambda: archive.copy_from(root, "item/a.txt", "item/a.txt"),
        ):
            try:
                attempt()
                outcomes.append("opened")
            except ObjectNotFound as exc:
                outcomes.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(EVENT_SECONDS)
    if reader.is_alive():  # blocked in open(): a writer lets it go, then fail
        with open(pipe, "wb"):
            pass
        pytest.fail("reading a named pipe waited for a writer")
    assert [str(exc) for exc in outcomes] == [
        "local: 'item/a.txt' is not a regular file",
        "local: 'item/a.txt' is not a regular file",
    ]
    assert root.stat("item/a.txt") is None
    assert not (tmp_path / "archive" / "item" / "a.txt").exists()


def test_a_delete_cut_short_among_the_folders_is_finished_by_the_next(tmp_path: Path) -> None:
    """A worker killed between two of its ``rmdir``s: the file and its folder are gone, the
    copy's folder is left empty. The job's retry deletes the same path again: it removes
    the copy's folder, as the first delete would have, and nothing above it."""
    connector = LocalConnector("local", path=tmp_path / "root")
    connector.write("project/item/sub/deeper/f", io.BytesIO(b"x"))
    connector.write("project/other", io.BytesIO(b"y"))
    (tmp_path / "root/project/item/sub/deeper/f").unlink()
    (tmp_path / "root/project/item/sub/deeper").rmdir()  # where the first delete stopped
    connector.delete("project/item/sub/deeper/f", within="project/item")
    assert not (tmp_path / "root" / "project" / "item").exists()
    assert (tmp_path / "root" / "project" / "other").read_bytes() == b"y"
    # The same for a copy whose own folder is the last left: pruned up to and including it.
    connector.write("solo/a/f", io.BytesIO(b"z"))
    (tmp_path / "root/solo/a/f").unlink()
    (tmp_path / "root/solo/a").rmdir()
    connector.delete_many(["solo/a/f"], within="solo")
    assert not (tmp_path / "root" / "solo").exists()
    assert (tmp_path / "root").is_dir()


def test_an_object_named_like_a_temporary_file_is_listed_and_never_swept(
    tmp_path: Path,
) -> None:
    """Only our own temporary names (``.NAME.HEX.rs-partial``) are a dead writer's.

    A producer's file that merely ends so, written days ago, is an object:
    a listing (an audit's, a delete's confirmation) shows it and leaves it.
    """
    folder = tmp_path / "item"
    folder.mkdir()
    names = [f"run{PARTIAL_SUFFIX}", f".run{PARTIAL_SUFFIX}", f"a.b.12{PARTIAL_SUFFIX}"]
    then = time.time() - local_module.DEFAULT_STALE_PARTIAL - 60
    for name in names:
        (folder / name).write_bytes(b"results")
        os.utime(folder / name, (then, then))
    connector = LocalConnector("local", path=tmp_path)
    assert [info.path for info in connector.list("item/")] == sorted(f"item/{n}" for n in names)
    connector.write("item/other", io.BytesIO(b"o"))
    assert sorted(path.name for path in folder.iterdir()) == sorted([*names, "other"])


def test_a_missing_object_is_an_answer_only_while_the_root_is_there(tmp_path: Path) -> None:
    """A root that is not there (a volume not mounted) makes every object "no such
    file": ``confirm_absence`` says that is no answer, and ``stat`` raises; a first
    copy makes the root (``make_root``)."""
    from connectors.base import confirm_absence, make_root

    connector = LocalConnector("local", path=tmp_path / "root")
    with pytest.raises(BackendUnavailable, match="does not exist"):
        confirm_absence(connector, "item/a")
    with pytest.raises(BackendUnavailable, match="does not exist"):
        connector.stat("item/a")
    make_root(connector)
    connector.write("item/b", io.BytesIO(b"b"))
    confirm_absence(connector, "item/a")  # the root is there: "missing" is an answer
    assert connector.stat("item/a") is None


# -- a root that is not there (a volume not mounted) ---------------------------


def unmount(connector: LocalConnector) -> Path:
    """Take the connector's root away, as an unmounted volume does; where it went."""
    away = connector.root.with_name(connector.root.name + "-unmounted")
    connector.root.rename(away)
    return away


@pytest.mark.parametrize("when", ["never made", "gone since it was seen"])
def test_a_missing_root_is_unavailable_never_no_object(tmp_path: Path, when: str) -> None:
    """An unmounted volume leaves its mount point's folder missing: no answer about bytes.

    "No such object" there would mark every copy on the connector missing
    (a verification, an audit, the confirmation before a delete), though
    the bytes are safe on the volume (SPEC §3: a transient failure is never
    evidence).
    """
    connector = LocalConnector("local", path=tmp_path / "root")
    if when != "never made":
        connector.write("item/a.txt", io.BytesIO(b"a"))
        unmount(connector)
    problem = rf"local: local root {connector.root} does not exist \(not mounted\?\)"
    with pytest.raises(BackendUnavailable, match=problem) as caught:
        connector.stat("item/a.txt")
    assert caught.value.transient
    with pytest.raises(BackendUnavailable, match=problem):
        connector.stat("a.txt")
    with pytest.raises(BackendUnavailable, match=problem):
        connector.open_read("item/a.txt")
    with pytest.raises(BackendUnavailable, match=problem):
        list(connector.list("item/"))
    with pytest.raises(BackendUnavailable, match=problem):
        list(connector.list())
    with pytest.raises(BackendUnavailable, match=problem):
        connector.delete("item/a.txt", within="item")
    with pytest.raises(BackendUnavailable, match=problem):
        delete_all(connector, ["item/a.txt", "item/b.txt"], within="item")
    with pytest.raises(BackendUnavailable, match=problem):
        connector.make_durable("item/a.txt")
    assert not connector.root.exists(), "an access that is no write made the root"


def test_a_root_that_is_a_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "root").write_bytes(b"not a folder")
    connector = LocalConnector("local", path=tmp_path / "root")
    with pytest.raises(BackendUnavailable, match=r"local root .* is not a folder"):
        connector.stat("item/a.txt")
    with pytest.raises(BackendUnavailable, match="is not a folder"):
        list(connector.list("item/"))
    with pytest.raises(BackendUnavailable, match="is not a folder"):
        connector.write("item/a.txt", io.BytesIO(b"a"))


def test_the_first_copy_into_a_root_never_made_makes_it(
    tmp_path: Path, local_source: LocalConnector
) -> None:
    """The embedded default's folders (``make demo``, ``run --once``): made by their first write."""
    local_source.write("item/a.txt", io.BytesIO(b"bytes of a"))
    destination = LocalConnector("archive", path=tmp_path / "new" / "archive")
    result = copy_file(
        local_source, "item/a.txt", destination, "item/a.txt", expected=hashes_of(b"bytes of a")
    )
    assert result.how in ("server-side", "streamed")
    assert (tmp_path / "new" / "archive" / "item" / "a.txt").read_bytes() == b"bytes of a"
    # And a plain write too, into another root never made.
    other = LocalConnector("other", path=tmp_path / "other")
    other.write("b.txt", io.BytesIO(b"b"))
    assert read_all(other, "b.txt") == b"b"


def test_a_root_gone_since_it_was_seen_is_not_made_again_by_a_write(
    connector: LocalConnector, local_source: LocalConnector
) -> None:
    """The volume went away under a running worker: its copies do not land on the mount point.

    The bytes would be hidden the moment the volume is mounted again, and a
    copy recorded good there missing.
    """
    connector.write("item/a.txt", io.BytesIO(b"a"))
    local_source.write("item/b.txt", io.BytesIO(b"bytes of b"))
    unmount(connector)
    with pytest.raises(BackendUnavailable, match="does not exist"):
        connector.write("item/c.txt", io.BytesIO(b"c"))
    with pytest.raises(BackendUnavailable, match="does not exist"):
        copy_file(
            local_source, "item/b.txt", connector, "item/b.txt", expected=hashes_of(b"bytes of b")
        )
    assert not connector.root.exists()
