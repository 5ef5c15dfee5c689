"""The connector interface: a small required core, optional capabilities apart.

A connector reaches one storage root: a folder, an S3 bucket, a GCS bucket.
Paths are relative to it, '/'-separated, checked by ``check_path`` before any
I/O. The core is five operations; streaming, hashing, "already there → skip"
and "validate before done" live once, in ``connectors.transfer``, not here.

Optional capabilities are separate small interfaces (``PresignedUrls``,
``PublicUrls``, ``ServerSideCopy``, ``BulkDelete``, ``BatchedLanding``);
``capabilities()`` discovers them once per connector.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, BinaryIO, Protocol, runtime_checkable

from connectors.errors import InvalidPath

#: Hash kinds, as rclone names them: a set per backend, so two sides can agree.
MD5 = "md5"
CRC32C = "crc32c"
ETAG = "etag"


@dataclass(frozen=True)
class ObjectInfo:
    """What a backend says of one stored object: frozen, hashes lowercase hex.

    ``hashes`` holds only what the backend itself keeps (no second read):
    S3 gives its ``etag`` (and ``crc32c`` where it stored one), GCS ``md5``
    (single uploads) and ``crc32c``, a local folder nothing. ``modified``:
    when the object was last written (UTC, naive), where the backend said
    (listings always do).
    """

    path: str
    size: int
    hashes: dict[str, str]
    modified: datetime | None = field(default=None, compare=False)


def check_path(path: str) -> str:
    """Return ``path`` if it is a safe relative '/'-path; raise InvalidPath otherwise.

    Refused: empty, absolute (``/x``, ``C:\\x``), backslashes, NUL, and any
    ``.`` or ``..`` segment or empty segment (``a//b``).
    """
    if not isinstance(path, str) or not path:
        raise InvalidPath("empty path")
    if "\x00" in path or "\\" in path:
        raise InvalidPath(f"{path!r}: NUL or backslash in path")
    # A drive as the catalog sees one (``catalog.paths``): a letter, then ':'.
    if path.startswith("/") or (len(path) > 1 and path[1] == ":" and path[0].isalpha()):
        raise InvalidPath(f"{path!r}: absolute path")
    for segment in path.rstrip("/").split("/"):
        if segment in ("", ".", ".."):
            raise InvalidPath(f"{path!r}: empty, '.' or '..' segment")
    return path


class Connector(abc.ABC):
    """One storage root. Every method is safe to call again (idempotent)."""

    #: The configuration name (``local``, ``S3``, ...), used in messages.
    name: str
    #: Hash kinds ``stat`` reports without reading the object.
    native_hashes: frozenset[str] = frozenset()
    #: Hash kinds ``write`` reports of what it stored: computed by the backend
    #: from the bytes it received (the server, or the local connector itself).
    write_hashes: frozenset[str] = frozenset()

    @abc.abstractmethod
    def stat(self, path: str) -> ObjectInfo | None:
        """Size and native hashes of the object at ``path``; None when it is missing."""

    @abc.abstractmethod
    def open_read(self, path: str) -> BinaryIO:
        """A binary stream of the object, to be closed by the caller.

        Raises ObjectNotFound when it is missing.
        """

    @abc.abstractmethod
    def write(self, path: str, stream: BinaryIO, *, size: int | None = None) -> ObjectInfo:
        """Store everything ``stream`` yields at ``path``, atomically, replacing any object.

        Readers never see a partial object: either the old one (or none) or
        the whole new one. Returns what the backend says it stored.
        """

    @abc.abstractmethod
    def delete(self, path: str, *, within: str = "") -> None:
        """Remove the object at ``path``; a missing object is not an error.

        Never through a symbolic link: a link is removed itself. ``within``:
        the folder the object belongs to (a copy's url); a backend with real
        folders removes those left empty up to it and not above.
        """

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object under ``prefix`` (a folder: ``x/`` lists x's tree), with ``modified``.

        In path order, as Python compares strings (S3's order, UTF-8 byte
        order): ``a-b/x`` before ``a/x``. A consumer may merge two listings,
        or a listing and the catalog, in one pass.
        """

    def capabilities(self) -> frozenset[str]:
        """Names of the optional interfaces this connector implements; found once."""
        found = self.__dict__.get("_capabilities")
        if found is None:
            # A protocol check walks the interface's members: slow for every file.
            found = self.__dict__["_capabilities"] = frozenset(
                name for name, interface in CAPABILITIES.items() if isinstance(self, interface)
            )
        return found

    def can(self, capability: type) -> bool:
        """Whether this connector implements ``capability`` (one of ``CAPABILITIES``)."""
        return _CAPABILITY_NAMES[capability] in self.capabilities()

    def lacks(self, capability: type) -> None:
        """Forget ``capability``: the backend said it has not got it (``Unsupported``)."""
        self.__dict__["_capabilities"] = self.capabilities() - {_CAPABILITY_NAMES[capability]}


class LazyClient:
    """A backend's library client, made by ``_make_client`` on first use, once.

    Nothing is read or contacted when a connector is made; the lock is only
    taken until the client exists, not on every request.
    """

    _client: Any = None
    _client_lock = threading.Lock()

    def _make_client(self) -> Any:
        raise NotImplementedError

    @property
    def client(self) -> Any:
        """The library client; made (credentials read) on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client


@runtime_checkable
class PublicUrls(Protocol):
    """Objects reachable at a URL without credentials (local ``public_url``)."""

    def public_url(self, path: str) -> str: ...


@runtime_checkable
class PresignedUrls(Protocol):
    """Time-limited URLs signed with the connector's credentials."""

    def presigned_url(self, path: str, *, expires: int) -> str: ...


@runtime_checkable
class ServerSideCopy(Protocol):
    """Copy within the backend without moving bytes through us."""

    def can_copy_from(self, source: Connector) -> bool: ...

    def copy_from(self, source: Connector, source_path: str, path: str) -> ObjectInfo: ...


class Landing:
    """A block of writes made durable together (``BatchedLanding``); ``landed`` once they are.

    Outside a batching connector writes are durable as they return, so
    ``landed`` starts true.
    """

    def __init__(self, *, landed: bool = True) -> None:
        self.landed = landed


@runtime_checkable
class BatchedLanding(Protocol):
    """Writes of one block made durable together at its end, not one by one.

    Inside ``landing()`` (per thread) a write returns once its bytes are
    written and hashed; they appear at their paths, durable, when the block
    ends (together: one flush for all, instead of one per file), and
    ``landed`` says so. Meanwhile the writing thread reads (``open_read``,
    ``stat``) what it wrote, so a copy is proven on its new bytes; others
    see what was there before. A write deleted within the block never appears.
    When the block raises, what was written before is landed all the same.
    """

    def landing(self) -> AbstractContextManager[Landing]: ...


def landing(connector: Connector) -> AbstractContextManager[Landing]:
    """``connector.landing()`` where it batches; else a block whose writes land as they go."""
    if connector.can(BatchedLanding):
        return connector.landing()  # type: ignore[attr-defined]
    return nullcontext(Landing())


def concurrent_writes(connector: Connector) -> int:
    """Writes of small objects worth having under way at once on ``connector`` (at least 1).

    A store answers each request after a round trip (10–100 ms on S3 or GCS),
    so many small objects go up in about the time of one when sent side by
    side; such a connector says how many its connection pool carries
    (``concurrent_writes``). The local connector says nothing: its writes
    are bound by the disk, and land in batches per thread (``BatchedLanding``).
    """
    return max(1, int(getattr(connector, "concurrent_writes", 1)))


def copy_run(destination: Connector, source: Connector) -> AbstractContextManager[None]:
    """A block of several copies from ``source`` into ``destination``, one after another.

    Where the destination can make such a run cheaper than its copies one by
    one (the local connector: ``LocalConnector.copy_run``); else nothing.
    """
    run = getattr(destination, "copy_run", None)
    return run(source) if run is not None else nullcontext()  # type: ignore[no-any-return]


def make_durable(connector: Connector, path: str) -> None:
    """Make durable the object ``connector`` holds at ``path``, kept as found (not written).

    A transfer that finds the expected bytes at its destination keeps them:
    they may have been left there by a writer that died before it made
    them durable (a local folder: after the rename, before the fsync of its
    folder), and are about to be recorded good. Where the connector's
    objects can stand at their path before they are durable, it flushes
    them (the local connector: ``LocalConnector.make_durable``; in a
    ``landing`` block, with the block); a store is durable as it answers.
    """
    flush = getattr(connector, "make_durable", None)
    if flush is not None:
        flush(path)


def confirm_absence(connector: Connector, path: str) -> None:
    """Raise unless ``connector``'s "no such object" at ``path`` is an answer about it.

    Called before a missing object is taken as evidence (a verification, a
    delete's confirmation, an audit). A store answers for its bucket (a
    missing bucket is an error of its own); a local folder whose root is not
    there (a volume not mounted) says "no such file" of everything beneath
    it, which is the backend out of reach, not an answer: such a connector
    raises ``BackendUnavailable`` (``LocalConnector.confirm_absence``).
    """
    confirm = getattr(connector, "confirm_absence", None)
    if confirm is not None:
        confirm(path)


def make_root(connector: Connector) -> None:
    """Make ``connector``'s root where its first write makes it, before a write looks there.

    A local folder never written to is made by its first write (the
    embedded default's folders); until then every other access raises
    ``BackendUnavailable`` (``LocalConnector.make_root``): a root that is not
    there may be a volume not mounted, and "no such object" would be taken
    as evidence about bytes. A copy looks at what its destination holds
    (``copy_file``, a listing of files already there) only after this, and
    so finds a new root made and empty. A store's bucket is not made by
    us: nothing.
    """
    make = getattr(connector, "make_root", None)
    if make is not None:
        make()


def read_run(connector: Connector) -> AbstractContextManager[None]:
    """A block of several reads from ``connector``, each object read whole before the next.

    Where the connector can make such a run cheaper than its reads one by
    one (the local connector: ``LocalConnector.read_run``); else nothing.
    """
    run = getattr(connector, "read_run", None)
    return run() if run is not None else nullcontext()  # type: ignore[no-any-return]


@runtime_checkable
class BulkDelete(Protocol):
    """Many objects removed in few requests (S3's DeleteObjects); missing ones are fine."""

    def delete_many(self, paths: Sequence[str], *, within: str = "") -> None:
        """``Connector.delete`` of each of ``paths`` (``within`` as there)."""


CAPABILITIES: dict[str, type] = {
    "public_url": PublicUrls,
    "presigned_url": PresignedUrls,
    "server_side_copy": ServerSideCopy,
    "bulk_delete": BulkDelete,
    "batched_landing": BatchedLanding,
}
_CAPABILITY_NAMES = {interface: name for name, interface in CAPABILITIES.items()}


def delete_all(connector: Connector, paths: Sequence[str], *, within: str = "") -> None:
    """Remove every object at ``paths``: in bulk where the backend can, else one by one.

    ``within`` as for ``Connector.delete``.
    """
    if connector.can(BulkDelete):
        connector.delete_many(paths, within=within)  # type: ignore[attr-defined]
        return
    for path in paths:
        connector.delete(path, within=within)
