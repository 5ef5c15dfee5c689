"""A folder on a local (or mounted) filesystem as a connector.

Every path is resolved, symlinks included, and must stay under the root;
writes land atomically (temporary file in the same folder, fsync, rename,
fsync of the folder), so a reader or a crash never leaves half a file under
the final name. Temporary files a dead writer left are removed when their
folder is next written to, emptied or listed, once unchanged for a day.

A root that is not a folder (a volume not mounted) answers nothing about
bytes: every access raises ``BackendUnavailable`` naming it, never "no such
object"; only a write makes a root never made (``LocalConnector.make_root``).

Small files cost system calls more than bytes, so they are kept few: objects
are opened by descriptor without following a final link (only a link is
resolved in full), a ``landing`` block walks to each folder once, and
temporary names come from a counter. Kernel copies of small files pass one
thread at a time per process (``_Gate``): otherwise Python's GIL changes
hands at nearly every call.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import itertools
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from connectors.base import CRC32C, Connector, Landing, ObjectInfo, check_path
from connectors.errors import (
    AccessDenied,
    BackendUnavailable,
    ConnectorError,
    InvalidPath,
    ObjectNotFound,
    Unsupported,
)
from connectors.hashing import crc32c, crc32c_file

logger = logging.getLogger(__name__)

#: Bytes copied per call when writing from a stream.
DEFAULT_WRITE_BUFFER = 8 * 1024 * 1024
#: The least buffer a stream of a known small size is copied through.
DEFAULT_SMALL_BUFFER = 64 * 1024
#: Bytes asked of one ``copy_file_range`` call: large, as the kernel loops inside.
DEFAULT_COPY_RANGE = 1 << 30
#: A durable write of a file larger than this asks the kernel to start
#: writing each such piece to disk as soon as it is written
#: (``_Writeback``), so the disk works while the rest is copied and
#: re-read for its crc32c, and the flush at the end has less left to do.
DEFAULT_WRITEBACK_CHUNK = 64 * 1024 * 1024
#: Why ``copy_file_range`` may refuse two files: then they are copied in user space.
_NO_COPY_RANGE = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})
#: Errors of the filesystem that retrying the same path never mends.
_PERMANENT_ERRNOS = frozenset(
    {errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL, errno.EFBIG, errno.EMLINK, errno.EXDEV}
)
#: Temporary files of unfinished writes end so; ``list`` never shows them.
PARTIAL_SUFFIX = ".rs-partial"
#: A temporary file's whole name (``_TemporaryNames``): a producer's own file
#: that merely ends in the suffix is an object like any other.
_TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]+" + re.escape(PARTIAL_SUFFIX), re.DOTALL)
#: Bytes of an object's name that its temporary file's name keeps: the rest
#: of that name (about 45 bytes) fits beside them in the 255 bytes a
#: filesystem takes for one name, which the object's own name may fill.
DEFAULT_TEMPORARY_NAME_BYTES = 160
#: A temporary file unchanged for this long (seconds) was left by a writer
#: that died (a worker killed mid-copy): it is removed.
DEFAULT_STALE_PARTIAL = 24 * 3600
#: A folder is looked through for such files at most this often (seconds)
#: by one connector: when something lands in it, or is deleted from it.
DEFAULT_SWEEP_INTERVAL = 3600
#: Folders whose sweep time a connector keeps before forgetting old ones.
DEFAULT_SWEPT_FOLDERS = 10_000
#: A ``landing`` block's files wait, unchanged, until it ends: a job that
#: lasts a day (a large item, a slow disk) would have them look stale to
#: another process's sweep. Their times are renewed at a write this long
#: (seconds) after they were last.
DEFAULT_PENDING_TOUCH = 3600


class _Block:
    """One thread's ``landing`` block: its writes not landed yet, and the folders it has.

    ``files``: final path -> (temporary file, folder). ``folders``: a
    folder's path under the root -> its resolved path, checked and made
    once in this block, so its other files are not walked to again.
    ``made``: those of them this block made, which held nothing then.
    ``kept``: objects found whole at their paths and kept (``make_durable``),
    flushed with the block's files: final path -> folder. ``touched``: when
    the times of ``files`` were last renewed (monotonic: ``keep_fresh``).
    """

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, str]] = {}
        self.folders: dict[str, str] = {}
        self.made: set[str] = set()
        self.kept: dict[str, str] = {}
        self.touched = time.monotonic()

    def keep_fresh(self) -> None:
        """Renew the times of the files waiting to land, if not done for ``DEFAULT_PENDING_TOUCH``.

        A sweep takes a temporary file unchanged for ``DEFAULT_STALE_PARTIAL``
        for a dead writer's; these are a live one's. Renewed at each write of
        the block and at each object it keeps (``make_durable``), so only one
        such step that lasts longer than that (days) could still have them
        swept: the landing then fails, and says so.
        """
        now = time.monotonic()
        if now - self.touched < DEFAULT_PENDING_TOUCH:
            return
        self.touched = now
        for temporary, _ in self.files.values():
            with contextlib.suppress(OSError):  # gone: the landing says so
                os.utime(temporary)


class _TemporaryNames:
    """Names of temporary files: the process's prefix and a counter, no random draw per file.

    The prefix (process id and a random part) is made again in a forked
    child, so two processes never share one; a name taken all the same
    (another machine on a shared folder) is refused by ``O_EXCL`` and the
    next one is tried.
    """

    def __init__(self) -> None:
        self.renew()

    def renew(self) -> None:
        self.prefix = f"{os.getpid():x}{os.urandom(4).hex()}"
        self.counter = itertools.count()

    def next(self, name: str) -> str:
        encoded = os.fsencode(name)
        if len(encoded) > DEFAULT_TEMPORARY_NAME_BYTES:
            # A name near the filesystem's limit leaves no room for ours around it.
            name = os.fsdecode(encoded[:DEFAULT_TEMPORARY_NAME_BYTES])
        return f".{name}.{self.prefix}{next(self.counter):x}{PARTIAL_SUFFIX}"


_NAMES = _TemporaryNames()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_NAMES.renew)
#: Opening a folder to walk through or to remove an entry of.
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Opening a temporary file: ours alone, never through a link.
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: How an object is opened to be read: without waiting, should it be a named pipe.
_OPEN_OBJECT = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
#: Attempts at a free temporary name before giving up.
DEFAULT_NAME_ATTEMPTS = 5
#: Kernel copies of files up to this size pass one at a time per process (``_Gate``) ...
DEFAULT_GATED_SIZE = 1024 * 1024
#: ... unless this many in a row took this long (seconds) ...
DEFAULT_GATE_STRIKES = 3
DEFAULT_GATE_SLOW = 0.002
#: ... then, for this long (seconds), they go in parallel.
DEFAULT_GATE_PAUSE = 30.0
#: Files of a folder a listing stats in one run through the gate.
DEFAULT_LISTED_RUN = 1000


class _Gate:
    """One thread of the process at a time through short runs of system calls.

    Python lets go of its lock (the GIL) around every system call, and takes
    it back after: with several threads each making many short calls (a
    small file is opened, copied, re-read, closed, renamed), the lock
    changes hands at nearly every call, and a handover costs more than the
    call. Measured here on 2,000 files of 16 KiB: 8 threads spent twice the
    CPU of one per file, in ten times the context switches. Through the
    gate the others wait once per file, not once per call.

    A run that is slow (``DEFAULT_GATE_SLOW`` seconds or more: a network
    filesystem, a cold disk) is waiting on a device, and parallel threads
    would help it: after ``DEFAULT_GATE_STRIKES`` slow runs in a row, that
    pair of connectors goes ungated for ``DEFAULT_GATE_PAUSE`` seconds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: ``held``: this thread holds the gate across passes (``holding``).
        self._thread = threading.local()
        self._strikes: dict[tuple[str, str], int] = {}
        self._ungated_until: dict[tuple[str, str], float] = {}

    @contextlib.contextmanager
    def passing(self, key: tuple[str, str]) -> Iterator[Callable[[], None]]:
        """The block, through the gate (unless ``key`` is ungated); yields ``leave``.

        ``leave()`` lets the others through early, once the block turns out
        not to be short (a large file): the rest of it runs in parallel. In a
        ``holding`` block the gate is held already: the pass only times the
        block, and ``leave()`` (or a slow run that ungates ``key``) ends the hold.
        """
        if self._ungated_until.get(key, 0.0) > time.monotonic():
            self.release_hold()
            yield lambda: None
            return
        holding = getattr(self._thread, "held", False)
        if not holding:
            self._lock.acquire()
            self._thread.passing = True
        began = time.monotonic()
        held = True

        def leave() -> None:
            nonlocal held
            if held:
                held = False
                if holding:
                    self.release_hold()
                else:
                    self._thread.passing = False
                    self._lock.release()

        try:
            yield leave
        finally:
            timed = held
            if not holding:
                leave()
        if timed and self._judge(key, time.monotonic() - began):
            self.release_hold()

    @contextlib.contextmanager
    def holding(self, key: tuple[str, str]) -> Iterator[None]:
        """The gate held by this thread across the passes of the block, not taken for each.

        For a run of short passes of ``key`` (a job of small files): the
        others wait once for the run instead of at every file, and no
        handover costs anything in between. The hold ends early where a pass
        says so; an ungated ``key`` is not held.
        """
        if getattr(self._thread, "held", False):
            raise RuntimeError("the gate is held by this thread already")
        if self._ungated_until.get(key, 0.0) > time.monotonic():
            yield
            return
        self._lock.acquire()
        self._thread.held = True
        try:
            yield
        finally:
            self.release_hold()

    @contextlib.contextmanager
    def run(self, key: tuple[str, str]) -> Iterator[None]:
        """A run of short calls (a folder's files removed, listed, renamed) through the gate.

        Each call is timed on its own (``timing``), not the run as one pass:
        a run of a thousand quick calls is not slow. Part of this thread's
        hold or pass if it is in one; else held for the block.
        """
        if getattr(self._thread, "held", False) or getattr(self._thread, "passing", False):
            yield
            return
        with self.holding(key):
            yield

    @contextlib.contextmanager
    def timing(self, key: tuple[str, str]) -> Iterator[Callable[[], None]]:
        """In this thread's hold: the block timed as a pass of ``key``; yields ``leave``.

        Outside a hold, nothing (the block is not gated). ``leave()`` ends the
        hold, once the block turns out not to be short.
        """
        if not getattr(self._thread, "held", False):
            yield lambda: None
            return
        began = time.monotonic()
        yield self.release_hold
        if getattr(self._thread, "held", False) and self._judge(key, time.monotonic() - began):
            self.release_hold()

    def release_hold(self) -> None:
        """End this thread's hold of the gate, if it has one."""
        if getattr(self._thread, "held", False):
            self._thread.held = False
            self._lock.release()

    def _judge(self, key: tuple[str, str], seconds: float) -> bool:
        """Count a slow run against ``key``; whether ``key`` is now ungated."""
        if seconds < DEFAULT_GATE_SLOW:
            self._strikes.pop(key, None)
            return False
        strikes = self._strikes[key] = self._strikes.get(key, 0) + 1
        if strikes < DEFAULT_GATE_STRIKES:
            return False
        self._strikes.pop(key, None)
        self._ungated_until[key] = time.monotonic() + DEFAULT_GATE_PAUSE
        logger.info("%s -> %s: files are slow here; not one at a time for a while", *key)
        return True


_GATE = _Gate()


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

    def _root_unavailable(self) -> BackendUnavailable | None:
        """Why the root is not here to answer (None: it is a folder).

        A missing root is most often a volume not mounted (its mount point's
        folder gone, or an automounter's): "no such object" there would mark
        every copy on this connector missing, though its bytes are safe on
        the volume (SPEC §3). Asked only where an answer would otherwise be
        "nothing there", so an access that finds its object costs nothing more.
        """
        try:
            mode = os.stat(self._real_root()).st_mode
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                what = "does not exist (not mounted?)"
            else:
                what = f"cannot be reached: {exc.strerror or exc}"
        else:
            if stat.S_ISDIR(mode):
                return None
            what = "is not a folder"
        return BackendUnavailable(f"{self.name}: local root {self.root} {what}")

    def _check_root(self) -> None:
        """Raise ``BackendUnavailable`` unless the root is a folder (``_root_unavailable``)."""
        problem = self._root_unavailable()
        if problem is not None:
            raise problem

    def make_root(self) -> None:
        """Make the root if this connector never saw it: a write's first step
        (``connectors.base.make_root``).

        Why the write, and only the write, makes it: the embedded default's
        folders, and a new volume's, are made by their first copy (``make
        demo``, ``run --once``), so a copy into a root never made must work;
        but a root that is not there may as well be a volume not mounted, so
        nothing else may read its absence as "no object" (``_root_unavailable``).
        A copy calls this before it looks at what the destination holds
        (``copy_file``, the listing of files already there), which then finds
        the root made and empty: true. A root this connector has seen (made or
        found) and that is gone since is not made again, here or by a write
        (``_destination``): the volume went away under a running worker, and
        a copy written into the bare mount point would be hidden the moment
        it is mounted again. (A process started while the volume is away
        cannot tell: its first write makes the root, and the copies it writes
        there are proven and real until the volume hides them, when a
        verification finds them missing and they are repaired.)
        """
        if self._root_resolved is not None:
            return  # seen: if gone since, the access that follows says so
        root = self._real_root()
        if self._root_resolved is not None:
            return
        there = os.path.dirname(root)
        while there != os.path.dirname(there) and not os.path.isdir(there):
            there = os.path.dirname(there)
        try:
            os.makedirs(root, exist_ok=True)
            if self.fsync:
                # The new folders' entries, each in the folder above it.
                made_in = os.path.dirname(root)
                while True:
                    _fsync_folder(made_in)
                    if made_in == there or made_in == os.path.dirname(made_in):
                        break
                    made_in = os.path.dirname(made_in)
        except OSError as exc:
            message = f"{self.name}: cannot make the local root {self.root}: {exc.strerror or exc}"
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise AccessDenied(message) from exc
            if exc.errno in (errno.EEXIST, errno.ENOTDIR):  # a file where a folder goes
                raise (self._root_unavailable() or BackendUnavailable(message)) from exc
            raise BackendUnavailable(message) from exc
        self._real_root()

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

    def _inside_root(self, full: str) -> bool:
        """Whether ``full`` (a link, say) resolves to a path under the root."""
        root = self._real_root()
        return os.path.realpath(full).startswith(root + os.sep)

    def _folder(self, path: str) -> tuple[str, str, str]:
        """``path``'s folder under the root (as given), its resolved path, and the name in it.

        Only the folders are walked (and refused if they lead outside the
        root): the name itself is opened with ``O_NOFOLLOW`` or looked at
        by the caller, who sends a link to ``_resolve``.
        """
        check_path(path)
        relative, _, name = path.rpartition("/")
        root = self._real_root()
        if not relative:
            return relative, root, name
        folder = _beneath(root, relative.split("/"))
        if folder != root and not folder.startswith(root + os.sep):
            raise InvalidPath(f"{self.name}: {path!r} leads outside the root {self.root}")
        return relative, folder, name

    def _error(self, exc: OSError, path: str) -> ConnectorError:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            # Evidence only where the root is there to give it.
            return self._root_unavailable() or ObjectNotFound(
                f"{self.name}: {path!r} does not exist"
            )
        if exc.errno == errno.EISDIR:
            return ObjectNotFound(f"{self.name}: {path!r} is a folder, not an object")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return AccessDenied(f"{self.name}: {path!r}: {exc.strerror}")
        if exc.errno in _PERMANENT_ERRNOS:
            # A name the filesystem cannot hold, a loop of links: so every time.
            return InvalidPath(f"{self.name}: {path!r}: {exc.strerror or exc}")
        # Full disks, I/O errors, stale mounts: may pass.
        return BackendUnavailable(f"{self.name}: {path!r}: {exc.strerror or exc}")

    def confirm_absence(self, path: str) -> None:
        """Raise ``BackendUnavailable`` when the root folder is not there (``connectors.base``).

        Only then: a missing root (a volume not mounted, a share gone) makes
        every object beneath it "no such file", which says nothing of the
        copies there. The accesses that answer "nothing there" look too
        (``_root_unavailable``); this is asked again where such an answer is
        about to be recorded as evidence, in case the root went in between.
        """
        self._check_root()

    # -- the core ---------------------------------------------------------

    def _written(self, full: str) -> str:
        """Where the object at ``full`` is for this thread: its write not landed yet, if any.

        Inside a ``landing`` block a thread reads what it wrote, though no
        one else sees it before the block ends: a copy is proven by reading
        back the new bytes, never what lay at the path before.
        """
        block: _Block | None = getattr(self._batches, "block", None)
        if block is not None and full in block.files:
            return block.files[full][0]
        return full

    def stat(self, path: str) -> ObjectInfo | None:
        full = self._written(self._resolve(path))
        try:
            result = os.stat(full)
        except FileNotFoundError:
            self._check_root()
            return None
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                self._check_root()
                return None
            raise self._error(exc, path) from exc
        if not stat.S_ISREG(result.st_mode):
            return None
        return ObjectInfo(path, result.st_size, {})

    def open_read(self, path: str) -> BinaryIO:
        with _GATE.timing((self.name, self.name)) as leave:
            descriptor, found = self._open_object(path)
            if found.st_size > DEFAULT_GATED_SIZE:
                leave()  # a large read waits on the disk: in parallel
        try:
            return open(descriptor, "rb", buffering=0)
        except IsADirectoryError:
            os.close(descriptor)
            raise ObjectNotFound(f"{self.name}: {path!r} is a folder, not an object") from None

    def _open_object(self, path: str) -> tuple[int, os.stat_result]:
        """A read-only descriptor of the object at ``path`` (this thread's own write, if any),
        and what ``fstat`` says of it.

        The folders are walked under the root; the object itself is opened
        without following a link, and only a link (rare) is resolved and
        checked in full. A folder opens too: reading it fails (``EISDIR``).
        Anything else that is not a regular file (a named pipe, a device) is
        not an object, as ``stat`` says: opened without waiting (a pipe
        would hold the job until a writer came, past any time limit), then
        refused as missing.
        """
        _, folder, name = self._folder(path)
        full = self._written(folder + os.sep + name)
        try:
            descriptor = os.open(full, _OPEN_OBJECT | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise self._error(exc, path) from exc
            full = self._written(self._resolve(path))  # a link: followed if it stays under the root
            try:
                descriptor = os.open(full, _OPEN_OBJECT)
            except OSError as exc:
                raise self._error(exc, path) from exc
        found = os.fstat(descriptor)
        if not (stat.S_ISREG(found.st_mode) or stat.S_ISDIR(found.st_mode)):
            os.close(descriptor)
            raise ObjectNotFound(f"{self.name}: {path!r} is not a regular file")
        return descriptor, found

    def write(self, path: str, stream: BinaryIO, *, size: int | None = None) -> ObjectInfo:
        return self._land(path, lambda out: _pump(stream, out, size, writeback=self.fsync))

    def _land(self, path: str, fill: Callable[[int], tuple[int, str]]) -> ObjectInfo:
        """Have ``fill`` write a temporary file (a descriptor), then put it at ``path`` atomically.

        ``fill`` returns the size and crc32c of what it wrote; nothing is left
        behind when it fails. In a ``landing`` block the file lands at the
        block's end, and the folder is walked to (and made) once per block.
        """
        block: _Block | None = getattr(self._batches, "block", None)
        full, folder = self._destination(path, block)
        temporary = ""
        try:
            try:
                descriptor, temporary = _create_temporary(folder, os.path.basename(full))
            except FileNotFoundError:
                # The folder went since it was found: another process's delete
                # removed it, left empty. Found (made) again, once.
                if block is not None:
                    relative = path.rpartition("/")[0]
                    block.folders.pop(relative, None)
                    block.made.discard(relative)
                full, folder = self._destination(path, block)
                descriptor, temporary = _create_temporary(folder, os.path.basename(full))
            try:
                written, crc = fill(descriptor)
                if self.fsync and block is None:
                    os.fsync(descriptor)
            finally:
                os.close(descriptor)
            if block is not None:
                # Lands with the rest of the block (``landing``), after one flush.
                replaced = block.files.pop(full, None)
                block.files[full] = (temporary, folder)
                if replaced is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(replaced[0])
                block.keep_fresh()
                return ObjectInfo(path, written, {CRC32C: crc})
            os.replace(temporary, full)
            if self.fsync:
                _fsync_folder(folder)
            self._sweep(folder)
        except _SourceFailed as failed:
            _remove(temporary)
            raise failed.error from None
        except OSError as exc:
            _remove(temporary)
            raise self._write_error(exc, path) from exc
        except BaseException:
            _remove(temporary)
            raise
        return ObjectInfo(path, written, {CRC32C: crc})

    def _write_error(self, exc: OSError, path: str) -> ConnectorError:
        """``_error`` for a write: "no such file" there is a folder removed under it, not an answer.

        Another process's delete removes the folders it leaves empty: one that
        a write found, and was about to write in, is gone (or its temporary
        file, swept as a dead writer's). The write is retried (a transient
        error): ``ObjectNotFound`` would be taken as an answer about bytes,
        and the job not tried again.
        """
        if exc.errno != errno.ENOENT:
            return self._error(exc, path)
        return self._root_unavailable() or BackendUnavailable(
            f"{self.name}: {path!r}: its folder or temporary file was removed meanwhile: "
            f"{exc.strerror or exc}"
        )

    def _destination(self, path: str, block: _Block | None) -> tuple[str, str]:
        """Where a write of ``path`` lands, and its folder (made if missing), both resolved.

        What is at ``path`` is replaced, not written through: a link there
        must stay under the root (``_resolve``), as for any other access.
        """
        relative, _, name = path.rpartition("/")
        folder = block.folders.get(relative) if block is not None else None
        if folder is None:
            relative, folder, name = self._folder(path)
            made = False
            if not os.path.isdir(folder):
                # A root never made is made; one gone since it was seen is
                # a volume away: not made again (``make_root``).
                self.make_root()
                self._check_root()
                there = os.path.dirname(folder)
                while there != os.path.dirname(there) and not os.path.isdir(there):
                    there = os.path.dirname(there)
                try:
                    os.makedirs(folder, exist_ok=True)
                    # The new folders' entries, each in the folder above it, are
                    # as much part of the write as the file's (a block's
                    # ``syncfs`` flushes them with the rest).
                    if self.fsync and (block is None or _SYNCFS is None):
                        for made_in in self._folders_up(os.path.dirname(folder)):
                            _fsync_folder(made_in)
                            if made_in == there:
                                break
                except OSError as exc:
                    raise self._write_error(exc, path) from exc
                made = True
                # The folders just made may not be symlinks someone slipped in.
                relative, folder, name = self._folder(path)
            if block is not None:
                block.folders[relative] = folder
                if made:
                    block.made.add(relative)
        else:
            check_path(path)
        full = folder + os.sep + name
        if block is not None and relative in block.made:
            # A folder this block made a moment ago: no link to look for (a
            # lookup of a missing name costs 7 us alone here and about 30 us
            # beside another process's copies, a tenth of a small file's).
            # Whatever appears meanwhile is replaced by the rename, never
            # written through.
            return full, folder
        try:
            is_link = stat.S_ISLNK(os.lstat(full).st_mode)
        except OSError:
            is_link = False
        if is_link:
            # Refused if it leads out of the root, as any access; else the
            # link itself is replaced: never what it points to, which may be
            # another item's file.
            self._resolve(path)
        return full, folder

    def delete(self, path: str, *, within: str = "") -> None:
        """Remove the object at ``path``; a link is removed itself, never what it points to.

        The folders on the way are opened one by one without following a
        link: a folder that is a link is refused (``InvalidPath``), never
        walked through (it may lead into another item's folder). Folders left
        empty are removed, up to and including ``within`` (a copy's own
        folder), never above it; without ``within``, up to the root.
        """
        self.delete_many([path], within=within)

    def delete_many(self, paths: Sequence[str], *, within: str = "") -> None:
        """``delete`` of each of ``paths``: the files of a folder with the folder opened once.

        One ``unlink`` a file, not the folders on the way opened and closed
        for each (a delete of 50,000 files in 50 folders: seven system calls
        a file), and each folder's run through the process's gate: threads
        deleting small files side by side hand the GIL over at every call.
        """
        groups: dict[tuple[str, ...], list[str]] = {}
        for path in paths:
            check_path(path)
            *folder, name = path.rstrip("/").split("/")
            groups.setdefault(tuple(folder), []).append(name)
        for folder, names in groups.items():
            with _GATE.run((self.name, self.name)):
                self._delete_in(list(folder), names, within)

    def _delete_in(self, parts: list[str], names: list[str], within: str) -> None:
        """Remove ``names`` from the folder ``parts``, then the folders left empty."""
        block: _Block | None = getattr(self._batches, "block", None)
        if block is not None:
            for name in names:
                _, folder, _ = self._folder("/".join([*parts, name]))
                pending = folder + os.sep + name
                if pending in block.files:
                    _remove(block.files.pop(pending)[0])  # written in this block: never lands
                block.kept.pop(pending, None)
        root = self._real_root()
        folders: list[int] = []
        try:
            try:
                folders.append(os.open(root, _FOLDER))
            except OSError as exc:
                # No root, no answer: the copy's bytes may be on a volume
                # not mounted, and "deleted" would drop it from the catalog.
                raise self._error(exc, "/".join([*parts, names[0]])) from exc
            for index, part in enumerate(parts):
                try:
                    folders.append(os.open(part, _FOLDER | os.O_NOFOLLOW, dir_fd=folders[-1]))
                except OSError as exc:
                    # A link opened so fails with ELOOP, or with O_DIRECTORY ENOTDIR.
                    link = exc.errno == errno.ELOOP or (
                        exc.errno == errno.ENOTDIR and _is_link(part, folders[-1])
                    )
                    if exc.errno == errno.ENOENT:
                        # Nothing there to delete: a delete cut short (a worker
                        # killed) may have left the folders above it empty.
                        self._prune(parts[: index + 1], folders, within)
                        return
                    if exc.errno == errno.ENOTDIR and not link:
                        return  # nothing there to delete
                    path = "/".join([*parts, names[0]])
                    if link:
                        on_the_way = "/".join(parts[: index + 1])
                        raise InvalidPath(
                            f"{self.name}: {path!r}: {on_the_way!r} is a symbolic link; "
                            "not deleting through it"
                        ) from None
                    raise self._error(exc, path) from exc
            for name in names:
                with _GATE.timing((self.name, self.name)):
                    self._unlink(name, folders[-1], parts)
            self._prune([*parts, names[-1]], folders, within)
        finally:
            for descriptor in folders:
                os.close(descriptor)

    def _unlink(self, name: str, folder: int, parts: list[str]) -> None:
        """Remove ``name`` from the open ``folder``: a file or link, or an empty folder."""
        try:
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=folder)
        except OSError as exc:
            if exc.errno == errno.EPERM and _is_folder(name, folder):
                with contextlib.suppress(OSError):
                    os.rmdir(name, dir_fd=folder)
                return
            raise self._error(exc, "/".join([*parts, name])) from exc

    def _prune(self, parts: list[str], folders: list[int], within: str) -> None:
        """Remove the folders of ``parts`` left empty, deepest first, not above ``within``.

        ``folders[d]`` is the open folder at depth ``d`` (0: the root).
        """
        boundary = [part for part in within.strip("/").split("/") if part]
        if parts[: len(boundary)] != boundary:
            return  # not under the folder given: prune nothing
        lowest = max(len(boundary), 1)
        for depth in range(len(parts) - 1, lowest - 1, -1):
            name, parent = parts[depth - 1], folders[depth - 1]
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError:
                # Not empty: maybe only of what dead writers left.
                if not self._sweep(os.path.join(self._real_root(), *parts[:depth])):
                    break
                try:
                    os.rmdir(name, dir_fd=parent)
                except OSError:
                    break

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        root = self._real_root()
        if prefix:
            check_path(prefix)
        top, base = root, ""
        if "/" in prefix:
            base = prefix[: prefix.rindex("/") + 1]
            top = self._resolve(base)
        if not os.path.isdir(top):
            self._check_root()  # nothing under the prefix, or no root to tell
            return
        yield from self._walk(top, base, prefix)

    def _walk(self, folder: str, relative: str, prefix: str) -> Iterator[ObjectInfo]:
        """``folder``'s tree under ``prefix`` in path order; links to folders are not followed.

        A folder's entries are sorted as their paths compare: a folder as
        ``name/``, so ``a-b/x`` comes before ``a/x`` (``-`` sorts before
        ``/``), as in S3's listings. One folder's entries are held at a time
        per level, read through the process's gate (a stat a file).
        """
        gate = (self.name, self.name)
        with _GATE.run(gate):
            try:
                with os.scandir(folder) as found:
                    entries = [
                        (
                            entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name,
                            entry,
                        )
                        for entry in found
                    ]
            except (FileNotFoundError, NotADirectoryError):
                self._check_root()  # the root gone meanwhile is no empty folder
                return  # removed meanwhile
            except OSError as exc:
                # Typed, as any access's: a disk's or a mount's error may pass.
                raise self._error(exc, relative or prefix) from exc
        if any(_is_temporary(name) for name, _ in entries):
            # A dead writer's, perhaps, in a folder nothing writes to again
            # (its copy was resumed and finished): a listing (an audit, the
            # confirmation before a delete) is the next to come by.
            self._sweep(folder)
        entries.sort(key=lambda pair: pair[0])
        # A stat a file, many short calls: each run of them through the gate,
        # then its part of the listing given out (a folder of a million files
        # is not held twice over).
        for start in range(0, len(entries), DEFAULT_LISTED_RUN):
            #: (a folder's own path and its path in the listing, None) or (the file's, its info)
            listed: list[tuple[str, str, ObjectInfo | None]] = []
            with _GATE.run(gate):
                for key, entry in entries[start : start + DEFAULT_LISTED_RUN]:
                    path = relative + key
                    if key.endswith("/"):
                        if path.startswith(prefix) or prefix.startswith(path):
                            listed.append((entry.path, path, None))
                        continue
                    if _is_temporary(key) or not path.startswith(prefix):
                        continue
                    with _GATE.timing(gate):
                        try:
                            info = entry.stat()  # a link to a file: the file's
                        except FileNotFoundError:
                            continue
                        except OSError as exc:
                            if exc.errno == errno.ELOOP:
                                # A loop of links: no object (``stat`` refuses
                                # it), and no reason to end the listing.
                                continue
                            raise self._error(exc, path) from exc
                        if not stat.S_ISREG(info.st_mode) or (
                            entry.is_symlink() and not self._inside_root(entry.path)
                        ):
                            # No object, as ``stat`` says: a link to a folder (or
                            # a pipe), or a link leading out of the root.
                            continue
                    modified = datetime.fromtimestamp(info.st_mtime, UTC).replace(tzinfo=None)
                    listed.append((path, path, ObjectInfo(path, info.st_size, {}, modified)))
            for where, path, listed_info in listed:
                if listed_info is None:
                    yield from self._walk(where, path, prefix)
                else:
                    yield listed_info

    def _sweep(self, folder: str) -> bool:
        """Remove the stale temporary files of dead writers from ``folder``; whether any went.

        At most once per ``DEFAULT_SWEEP_INTERVAL`` per folder, so a folder
        of many files is not listed for every file written to it. A file
        counts as stale when unchanged for ``DEFAULT_STALE_PARTIAL``: a live
        writer (even one hashing a huge file back) is never that slow, and a
        ``landing`` block renews the times of its files waiting to land
        (``_Block.keep_fresh``).
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
                    if not _is_temporary(entry.name):
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
        if getattr(self._batches, "block", None) is not None:
            raise RuntimeError(f"{self.name}: landing() blocks do not nest")
        block = self._batches.block = _Block()
        result = Landing(landed=False)
        try:
            yield result
        finally:
            self._batches.block = None
            self._land_all(block.files, block.kept)
            result.landed = True

    def _land_all(self, pending: dict[str, tuple[str, str]], kept: dict[str, str]) -> None:
        """Flush the temporary files (and the ``kept`` objects and their folders), rename
        the temporary files into place, flush the renames."""
        if not pending and not kept:
            return
        folders = {folder for _, folder in pending.values()}
        kept_folders = {
            above for folder in set(kept.values()) for above in self._folders_up(folder)
        }
        try:
            _make_durable(
                folders | kept_folders,
                [temporary for temporary, _ in pending.values()] + [*kept, *kept_folders],
            )
            if not pending:
                return
            with _GATE.run((self.name, self.name)):  # many short calls
                for full, (temporary, _) in list(pending.items()):
                    with _GATE.timing((self.name, self.name)):
                        os.replace(temporary, full)
                    del pending[full]
            _make_durable(folders, folders)
            for folder in folders:
                self._sweep(folder)
        except OSError as exc:
            for temporary, _ in pending.values():
                _remove(temporary)
            raise BackendUnavailable(f"{self.name}: could not land writes: {exc}") from exc

    def make_durable(self, path: str) -> None:
        """Flush the object at ``path`` and the folders that name it, up to the root
        (``connectors.base.make_durable``).

        A writer that died may have left it renamed into place but not flushed,
        in folders it made and did not flush either. In a ``landing`` block
        this is done by the block's flush (``landed`` says when). Without
        ``fsync``, nothing.
        """
        if not self.fsync:
            return
        _, folder, name = self._folder(path)
        full = folder + os.sep + name
        block: _Block | None = getattr(self._batches, "block", None)
        if block is not None:
            block.kept[full] = folder
            block.keep_fresh()  # a job that finds its files there goes on as long
            return
        try:
            descriptor, _ = self._open_object(path)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            for above in self._folders_up(folder):
                _fsync_folder(above)
        except OSError as exc:
            raise self._error(exc, path) from exc

    def _folders_up(self, folder: str) -> list[str]:
        """``folder`` (resolved, under the root) and the folders above it, the root last."""
        root = self._real_root()
        found = [folder]
        while folder != root and folder.startswith(root + os.sep):
            folder = os.path.dirname(folder)
            found.append(folder)
        return found

    def can_copy_from(self, source: Connector) -> bool:
        """Another folder on this machine: the kernel copies, the bytes skip user space."""
        return isinstance(source, LocalConnector)

    @contextlib.contextmanager
    def copy_run(self, source: Connector) -> Iterator[None]:
        """A run of ``copy_from`` calls from ``source`` (``connectors.base.copy_run``).

        The process's gate is held across them: the other threads wait once
        for the run, not at every file.
        """
        if not isinstance(source, LocalConnector):
            yield
            return
        with _GATE.holding((source.name, self.name)):
            yield

    @contextlib.contextmanager
    def read_run(self) -> Iterator[None]:
        """A run of ``open_read`` calls, each object read whole before the next
        (``connectors.base.read_run``).

        The process's gate is held across them, as for a run of copies: the
        other threads wait once for the run, not at every call. An object
        larger than ``DEFAULT_GATED_SIZE``, or opens that turn out slow (a
        network filesystem), end the hold: the rest goes in parallel.
        """
        with _GATE.holding((self.name, self.name)):
            yield

    def copy_from(self, source: Connector, source_path: str, path: str) -> ObjectInfo:
        """Copy with ``copy_file_range`` (a reflink where the filesystem has them).

        The reported crc32c is of the destination file as written, re-read
        from the page cache (about 20 GB/s here), so the transfer engine
        validates what landed, not what was meant to. Where the kernel cannot
        copy between the two folders (another filesystem), the bytes go
        through user space as in ``write``.
        """
        assert isinstance(source, LocalConnector)
        with _GATE.passing((source.name, self.name)) as leave:
            reader, found = source._open_object(source_path)
            try:
                size = found.st_size
                if size > DEFAULT_GATED_SIZE:
                    leave()  # a large copy waits on memory and disk: in parallel

                def fill(out: int) -> tuple[int, str]:
                    written = _copy_in_kernel(reader, out, size, writeback=self.fsync)
                    if written is None:
                        with open(reader, "rb", buffering=0, closefd=False) as stream:
                            return _pump(stream, out)
                    return written, crc32c_file(out, written)

                return self._land(path, fill)
            finally:
                os.close(reader)

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


def _pump(
    stream: BinaryIO, out: int, size: int | None = None, *, writeback: bool = False
) -> tuple[int, str]:
    """Copy ``stream`` into the descriptor ``out``; size and crc32c of what was written.

    ``size``, when known, sizes the buffer (a byte more, to see the end in
    one read): a small file is not copied through 8 MiB of zeroed memory.
    ``writeback``: start writing to disk as it goes (``_Writeback``).
    """
    started = _Writeback(out) if writeback else None
    written = 0
    crc = 0
    length = DEFAULT_WRITE_BUFFER
    if size is not None:  # a wrong hint costs only speed
        length = min(max(size + 1, DEFAULT_SMALL_BUFFER), DEFAULT_WRITE_BUFFER)
    buffer = bytearray(length)
    view = memoryview(buffer)
    while count := _read_source(stream, buffer):
        piece = view[:count]
        crc = crc32c(piece, crc)
        while piece:  # a file may take fewer bytes than offered
            piece = piece[os.write(out, piece) :]
        written += count
        if started is not None:
            started.reached(written)
    return written, f"{crc:08x}"


def _is_link(name: str, parent: int) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
    except OSError:
        return False


def _is_folder(name: str, parent: int) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(name, dir_fd=parent).st_mode)
    except OSError:
        return False


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new temporary file for ``name`` in ``folder``: its descriptor (read-write) and path."""
    for attempt in range(DEFAULT_NAME_ATTEMPTS):
        temporary = folder + os.sep + _NAMES.next(name)
        try:
            return os.open(temporary, _CREATE, 0o666), temporary
        except FileExistsError:
            if attempt == DEFAULT_NAME_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _is_temporary(name: str) -> bool:
    """Whether ``name`` is one of our temporary files' (a file's, not a folder's ``name/``)."""
    return name.endswith(PARTIAL_SUFFIX) and _TEMPORARY_NAME.fullmatch(name) is not None


def _remove(path: str) -> None:
    """Remove ``path`` if it is there (a temporary file that will not land)."""
    if path:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _copy_in_kernel(
    source: int, destination: int, size: int, *, writeback: bool = False
) -> int | None:
    """Copy ``size`` bytes (the source's size) in the kernel; bytes copied, None if it cannot.

    Fewer when the source ends sooner. Not a byte more: a source that grew
    since is not what the catalog describes, and fails validation either
    way, and no call is spent only to hear that the end has come.
    ``writeback``: a large file is copied a ``DEFAULT_WRITEBACK_CHUNK`` at a
    time, each piece's writing to disk started as soon as it is copied.
    """
    copy_range = getattr(os, "copy_file_range", None)  # Linux only
    if copy_range is None:
        return None
    started = _Writeback(destination) if writeback and size > DEFAULT_WRITEBACK_CHUNK else None
    step = DEFAULT_WRITEBACK_CHUNK if started is not None else DEFAULT_COPY_RANGE
    copied = 0
    while copied < size:
        try:
            count = copy_range(source, destination, min(size - copied, step))
        except OSError as exc:
            if copied == 0 and exc.errno in _NO_COPY_RANGE:
                return None
            raise
        if not count:
            break
        copied += count
        if started is not None:
            started.reached(copied)
    return copied


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


class _Writeback:
    """Starts the disk writing a file's bytes as they are written, a piece at a time.

    ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` on each ``DEFAULT_WRITEBACK_CHUNK``
    written: the kernel begins writing those pages out and returns. Only a
    head start: the file is durable after the flush that follows (fsync or
    ``syncfs``) as before, which then has less to wait for. Measured on a
    1 GiB copy here, alternating 6 pairs: 3.3 s against 4.1 s (median), copy,
    crc32c re-read and flush together. Where libc has no ``sync_file_range``,
    or the call fails, nothing is started and nothing else changes.
    """

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.started = 0

    def reached(self, written: int) -> None:
        """The file holds ``written`` bytes: start writing each whole piece not started."""
        if _SYNC_FILE_RANGE is None or written - self.started < DEFAULT_WRITEBACK_CHUNK:
            return
        _SYNC_FILE_RANGE(self.descriptor, self.started, written - self.started, _SYNC_WRITE)
        self.started = written


def _sync_file_range_function() -> Callable[[int, int, int, int], int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


#: ``sync_file_range(2)``; None where libc lacks it. ``_SYNC_WRITE`` is its
#: ``SYNC_FILE_RANGE_WRITE``: start writing, do not wait.
_SYNC_FILE_RANGE = _sync_file_range_function()
_SYNC_WRITE = 2


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
