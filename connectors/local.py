"""A folder on a local (or mounted) filesystem as a connector.

Every path is resolved, symlinks included, and must stay under the root;
writes land atomically (temporary file in the same folder, fsync, rename,
fsync of the folder), so a reader or a crash never leaves half a file under
the final name. Temporary files a dead writer left are removed when their
folder is next written to or emptied, once unchanged for a day.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import crc32c as crc32c_module

from connectors.base import CRC32C, Connector, Landing, ObjectInfo, check_path
from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ConnectorError,
    InvalidPath,
    ObjectNotFound,
    Unsupported,
)
from connectors.hashing import crc32c_file

logger = logging.getLogger(__name__)

#: Bytes copied per call when writing from a stream.
DEFAULT_WRITE_BUFFER = 8 * 1024 * 1024
#: Bytes asked of one ``copy_file_range`` call: large, as the kernel loops inside.
DEFAULT_COPY_RANGE = 1 << 30
#: Why ``copy_file_range`` may refuse two files: then they are copied in user space.
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})
#: Temporary files of unfinished writes end so; ``list`` never shows them.
PARTIAL_SUFFIX = ".rs-partial"
#: A temporary file unchanged for this long (seconds) was left by a writer
#: that died (a worker killed mid-copy): it is removed.
DEFAULT_STALE_PARTIAL = 24 * 3600
#: A folder is looked through for such files at most this often (seconds)
#: by one connector: when something lands in it, or is deleted from it.
DEFAULT_SWEEP_INTERVAL = 3600
#: Folders whose sweep time a connector keeps before forgetting old ones.
DEFAULT_SWEPT_FOLDERS = 10_000


class LocalConnector(Connector):
    """Objects are files under ``path``; ``public_url`` (if set) serves them.

    ``write`` reports the crc32c of the very bytes it wrote, as a server
    would of what it received. With ``fsync`` (the default) a write is on
    disk before it returns, so a copy recorded as done survives a crash.
    """

    write_hashes = frozenset({CRC32C})

    def __init__(
        self,
        name: str,
        *,
        path: str | os.PathLike[str],
        public_url: str | None = None,
        selinux_label: str | None = None,
        fsync: bool = True,
        batch_fsync: bool = True,
    ) -> None:
        self.name = name
        self.fsync = fsync
        #: ``landing`` blocks flush their files together (one ``syncfs``);
        #: off, each file is fsynced on its own.
        self.batch_fsync = batch_fsync
        self.root = Path(path)
        self._root_resolved: str | None = None
        #: Each thread's ``landing`` block, if it is in one.
        self._batches = threading.local()
        #: When each folder was last swept of stale temporary files (monotonic).
        self._swept: dict[str, float] = {}
        self._sweep_lock = threading.Lock()
        self.base_url = public_url
        #: Accepted for compatibility with the original configuration; labels
        #: are the mount's business here.
        self.selinux_label = selinux_label

    # -- paths ------------------------------------------------------------

    def _real_root(self) -> str:
        # Resolved once it exists: every path is then resolved and checked against it.
        if self._root_resolved is not None:
            return self._root_resolved
        resolved = os.path.realpath(self.root)
        if os.path.isdir(resolved):
            self._root_resolved = resolved
        return resolved

    def _resolve(self, path: str) -> str:
        """The filesystem path of ``path``, refused if it escapes the root (symlinks too)."""
        check_path(path)
        root = self._real_root()
        full = _beneath(root, path.rstrip("/").split("/"))
        if full != root and not full.startswith(root + os.sep):
            raise InvalidPath(f"{self.name}: {path!r} leads outside the root {self.root}")
        if full == root:
            raise InvalidPath(f"{self.name}: {path!r} is the root itself")
        return full

    def _error(self, exc: OSError, path: str) -> ConnectorError:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return ObjectNotFound(f"{self.name}: {path!r} does not exist")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return AccessDenied(f"{self.name}: {path!r}: {exc.strerror}")
        # Full disks, I/O errors, stale mounts: may pass.
        return BackendUnavailable(f"{self.name}: {path!r}: {exc.strerror or exc}")

    # -- the core ---------------------------------------------------------

    def _written(self, full: str) -> str:
        """Where the object at ``full`` is for this thread: its write not landed yet, if any.

        Inside a ``landing`` block a thread reads what it wrote, though no
        one else sees it before the block ends: a copy is proven by reading
        back the new bytes, never what lay at the path before.
        """
        batch = getattr(self._batches, "pending", None)
        if batch and full in batch:
            return str(batch[full][0])
        return full

    def stat(self, path: str) -> ObjectInfo | None:
        full = self._written(self._resolve(path))
        try:
            result = os.stat(full)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return None
            raise self._error(exc, path) from exc
        if not os.path.isfile(full):
            return None
        return ObjectInfo(path, result.st_size, {})

    def open_read(self, path: str) -> BinaryIO:
        full = self._written(self._resolve(path))
        try:
            return open(full, "rb", buffering=0)
        except IsADirectoryError:
            raise ObjectNotFound(f"{self.name}: {path!r} is a folder, not an object") from None
        except OSError as exc:
            raise self._error(exc, path) from exc

    def write(self, path: str, stream: BinaryIO, *, size: int | None = None) -> ObjectInfo:
        return self._land(path, lambda out: _pump(stream, out))

    def _land(self, path: str, fill: Callable[[BinaryIO], tuple[int, str]]) -> ObjectInfo:
        """Have ``fill`` write a temporary file, then put it at ``path`` atomically.

        ``fill`` returns the size and crc32c of what it wrote; nothing is left
        behind when it fails.
        """
        full = self._resolve(path)
        folder = os.path.dirname(full)
        temporary = os.path.join(
            folder, f".{os.path.basename(full)}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}"
        )
        try:
            if not os.path.isdir(folder):
                os.makedirs(folder, exist_ok=True)
                # The folders just made may not be symlinks someone slipped in.
                self._resolve(path)
            batch: dict[str, tuple[str, str]] | None = getattr(self._batches, "pending", None)
            with open(temporary, "x+b", buffering=0) as out:  # readable: copy_from re-reads
                written, crc = fill(out)
                if self.fsync and batch is None:
                    os.fsync(out.fileno())
            if batch is not None:
                # Lands with the rest of the block (``landing``), after one flush.
                replaced = batch.pop(full, None)
                batch[full] = (temporary, folder)
                if replaced is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(replaced[0])
                return ObjectInfo(path, written, {CRC32C: crc})
            os.replace(temporary, full)
            if self.fsync:
                _fsync_folder(folder)
            self._sweep(folder)
        except _SourceFailed as failed:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise failed.error from None
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise self._error(exc, path) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        return ObjectInfo(path, written, {CRC32C: crc})

    def delete(self, path: str) -> None:
        full = self._resolve(path)
        batch = getattr(self._batches, "pending", None)
        if batch is not None and full in batch:
            with contextlib.suppress(OSError):
                os.unlink(batch.pop(full)[0])  # written in this block: never lands
        try:
            os.unlink(full)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            with contextlib.suppress(OSError):
                os.rmdir(full)
            return
        except OSError as exc:
            raise self._error(exc, path) from exc
        # Leave no empty folders behind, up to (not including) the root.
        root = self._real_root()
        folder = os.path.dirname(full)
        while folder != root and folder.startswith(root + os.sep):
            try:
                os.rmdir(folder)
            except OSError:
                # Not empty: maybe only of what dead writers left.
                if not self._sweep(folder):
                    break
                try:
                    os.rmdir(folder)
                except OSError:
                    break
            folder = os.path.dirname(folder)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        root = self._real_root()
        if prefix:
            check_path(prefix)
        top = root
        if "/" in prefix:
            top = self._resolve(prefix[: prefix.rindex("/") + 1])
        if not os.path.isdir(top):
            return
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                if name.endswith(PARTIAL_SUFFIX):
                    continue
                full = os.path.join(dirpath, name)
                relative = os.path.relpath(full, root).replace(os.sep, "/")
                if not relative.startswith(prefix):
                    continue
                try:
                    size = os.stat(full).st_size
                except FileNotFoundError:
                    continue
                yield ObjectInfo(relative, size, {})

    def _sweep(self, folder: str) -> bool:
        """Remove the stale temporary files of dead writers from ``folder``; whether any went.

        At most once per ``DEFAULT_SWEEP_INTERVAL`` per folder, so a folder
        of many files is not listed for every file written to it. A file
        counts as stale when unchanged for ``DEFAULT_STALE_PARTIAL``: a live
        writer (even one hashing a huge file back) is never that slow.
        """
        now = time.monotonic()
        with self._sweep_lock:
            last = self._swept.get(folder)
            if last is not None and now - last < DEFAULT_SWEEP_INTERVAL:
                return False
            self._swept[folder] = now
            if len(self._swept) > DEFAULT_SWEPT_FOLDERS:
                self._swept = {
                    name: when
                    for name, when in self._swept.items()
                    if now - when < DEFAULT_SWEEP_INTERVAL
                }
        cutoff = time.time() - DEFAULT_STALE_PARTIAL
        removed = False
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if not entry.name.endswith(PARTIAL_SUFFIX):
                        continue
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)
                            removed = True
        except OSError:
            return removed
        if removed:
            logger.info("%s: removed stale temporary files in %s", self.name, folder)
        return removed

    # -- capabilities -----------------------------------------------------

    @contextlib.contextmanager
    def landing(self) -> Iterator[Landing]:
        """Writes of this thread's block land together at its end (``BatchedLanding``).

        Each write is durable before it appears, as alone, but the block
        flushes once for all its files (``syncfs``, one per filesystem,
        where Linux has it; else an fsync each), renames them into place,
        and flushes once more for the renames: two flushes instead of two
        per file. Until the block ends its writes are temporary files that
        only this thread reads (``open_read``, ``stat``) and ``list`` does
        not show. Without ``fsync`` or ``batch_fsync`` writes
        land as they go (``syncfs`` flushes every program's writes to the
        filesystem: on a volume others write much to, each file's own fsync
        may cost less). Not re-entrant.
        """
        if not (self.fsync and self.batch_fsync):
            yield Landing()
            return
        if getattr(self._batches, "pending", None) is not None:
            raise RuntimeError(f"{self.name}: landing() blocks do not nest")
        pending: dict[str, tuple[str, str]] = {}
        self._batches.pending = pending
        result = Landing(landed=False)
        try:
            yield result
        finally:
            self._batches.pending = None
            self._land_all(pending)
            result.landed = True

    def _land_all(self, pending: dict[str, tuple[str, str]]) -> None:
        """Flush the temporary files, rename them into place, flush the renames."""
        if not pending:
            return
        folders = {folder for _, folder in pending.values()}
        try:
            _make_durable(folders, [temporary for temporary, _ in pending.values()])
            for full, (temporary, _) in list(pending.items()):
                os.replace(temporary, full)
                del pending[full]
            _make_durable(folders, folders)
            for folder in folders:
                self._sweep(folder)
        except OSError as exc:
            for temporary, _ in pending.values():
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            raise BackendUnavailable(f"{self.name}: could not land writes: {exc}") from exc

    def can_copy_from(self, source: Connector) -> bool:
        """Another folder on this machine: the kernel copies, the bytes skip user space."""
        return isinstance(source, LocalConnector)

    def copy_from(self, source: Connector, source_path: str, path: str) -> ObjectInfo:
        """Copy with ``copy_file_range`` (a reflink where the filesystem has them).

        The reported crc32c is of the destination file as written, re-read
        from the page cache (about 20 GB/s here), so the transfer engine
        validates what landed, not what was meant to. Where the kernel cannot
        copy between the two folders (another filesystem), the bytes go
        through user space as in ``write``.
        """
        assert isinstance(source, LocalConnector)
        reader = source.open_read(source_path)

        def fill(out: BinaryIO) -> tuple[int, str]:
            written = _copy_in_kernel(reader.fileno(), out.fileno())
            if written is None:
                return _pump(reader, out)
            return written, crc32c_file(out.fileno(), written)

        with reader:
            return self._land(path, fill)

    def public_url(self, path: str) -> str:
        """``public_url`` joined with ``path``; Unsupported when none is configured."""
        check_path(path)
        if self.base_url is None:
            raise Unsupported(f"{self.name}: no public_url is configured")
        return f"{self.base_url.rstrip('/')}/{quote(path)}"


class _SourceFailed(Exception):
    """Carries an error of the stream being written, which is not ours to translate."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def _pump(stream: BinaryIO, out: BinaryIO) -> tuple[int, str]:
    """Copy ``stream`` into ``out`` through one buffer; size and crc32c of what was written."""
    written = 0
    crc = 0
    buffer = bytearray(DEFAULT_WRITE_BUFFER)
    view = memoryview(buffer)
    while count := _read_source(stream, buffer):
        piece = view[:count]
        crc = crc32c_module.crc32c(piece, crc)
        while piece:  # a raw file may take fewer bytes than offered
            piece = piece[out.write(piece) :]
        written += count
    return written, f"{crc:08x}"


def _copy_in_kernel(source: int, destination: int) -> int | None:
    """Copy from descriptor to descriptor in the kernel; bytes copied, None if it cannot."""
    copy_range = getattr(os, "copy_file_range", None)  # Linux only
    if copy_range is None:
        return None
    copied = 0
    while True:
        try:
            count = copy_range(source, destination, DEFAULT_COPY_RANGE)
        except OSError as exc:
            if copied == 0 and exc.errno in _NO_COPY_RANGE:
                return None
            raise
        if not count:
            return copied
        copied += count


def _read_source(stream: BinaryIO, buffer: bytearray) -> int:
    try:
        return stream.readinto(buffer) or 0  # type: ignore[attr-defined]
    except Exception as exc:
        raise _SourceFailed(exc) from exc


def _beneath(root: str, parts: list[str]) -> str:
    """``os.path.realpath`` of ``root`` joined with ``parts``, for a ``root`` resolved already.

    Only what lies under the root is looked at: a link among ``parts`` (rare)
    sends the whole path to ``realpath``; a missing one ends the walk, as
    nothing under it exists. Several times faster than ``realpath``, which
    looks at every folder of the root again, for every file.
    """
    current = root
    for index, part in enumerate(parts):
        candidate = current + os.sep + part
        try:
            mode = os.lstat(candidate).st_mode
        except OSError:
            return os.sep.join([candidate, *parts[index + 1 :]])
        if stat.S_ISLNK(mode):
            return os.path.realpath(os.path.join(root, *parts))
        current = candidate
    return current


def _syncfs_function() -> Callable[[int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


#: ``syncfs(2)``: flush one filesystem; None where libc lacks it (then fsync each).
_SYNCFS = _syncfs_function()


def _make_durable(folders: Iterable[str], paths: Iterable[str]) -> None:
    """What an fsync of each of ``paths`` does, for paths in ``folders``.

    One ``syncfs`` per filesystem that holds the folders, where there is
    ``syncfs``; else an fsync of each path.
    """
    if _SYNCFS is None:
        for path in paths:
            _fsync_folder(path)  # opens read-only and fsyncs: a file as well as a folder
        return
    devices: dict[int, str] = {}
    for folder in folders:
        devices.setdefault(os.stat(folder).st_dev, folder)
    for folder in devices.values():
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            if _SYNCFS(descriptor) != 0:
                code = ctypes.get_errno()
                raise OSError(code, os.strerror(code), folder)
        finally:
            os.close(descriptor)


def _fsync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
