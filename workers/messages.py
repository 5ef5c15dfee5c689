"""The queue contract: what goes on Redis, for our scheduler and for other services.

A job is a Dramatiq message: a queue, an actor's name and JSON arguments
(item ids are the catalog's ``file_storage.id``; connectors are named as in
the configuration; paths are an item's file paths, ``/``-separated).

=========  ==================  ==================================================
queue      actor               args
=========  ==================  ==================================================
``copy``   ``copy_files``      item id, target connector, [file paths]
``copy``   ``copy_items``      target connector, [[item id, [file paths]], ...]
``copy``   ``copy_file``       item id, target connector, file path
``copy``   ``finish_copy``     item id, target connector
``copy``   ``repair_location`` item id, connector (a damaged copy)
``delete`` ``delete_files``    item id, connector, [file paths]
``delete`` ``delete_location`` item id, connector
``delete`` ``remove_location`` item id, connector (a removed item's copy, after its grace)
``verify`` ``verify_files``    item id, connector, [file paths]
``verify`` ``verify_location`` item id, connector
``verify`` ``audit_connector`` connector (its objects against the catalog)
=========  ==================  ==================================================

What each actor does is in ``workers.actors``. A copy job expects its
target location to be reserved in the catalog (``PR``) first, as the scan
and ``resolwe_storage.api`` do; verifications and deletes expect an ``OK``
copy, and every job re-checks the catalog as it runs.

Format on Redis (broker namespace ``dramatiq``), for a service that
enqueues from another language: a JSON object
``{"queue_name": Q, "actor_name": A, "args": [...], "kwargs": {},
"options": {"redis_message_id": R}, "message_id": M, "message_timestamp": T}``
stored with ``HSET dramatiq:Q.msgs R <json>`` then ``RPUSH dramatiq:Q R``
(``R`` and ``M`` fresh UUIDs, ``T`` milliseconds since the epoch), then
optionally ``RPUSH dramatiq:Q.wake 1`` and ``EXPIRE dramatiq:Q.wake 5``: idle
workers wait on that list and start at once (``workers.broker``), else
within their idle timeout. An option ``time_limit`` (milliseconds) gives a
long job more than ``DEFAULT_TIME_LIMIT_MS``.

The builders cut work per file: copy jobs of up to ``DEFAULT_JOB_FILES``
files and ``DEFAULT_JOB_BYTES`` bytes, shared across the items of one
target (``copy_items``, or ``copy_files`` for the files of one item), as
few as those limits allow and of equal size (``copy_jobs``; a larger file
has a job of its own), so a job's catalog work is shared by its small
files; ``verify_files`` jobs within the same limits per copy;
``delete_files`` jobs of up to ``DEFAULT_DELETE_JOB_FILES`` files (one
request to S3); one ``repair_location`` job per damaged copy. Each job's
time limit grows with its bytes, and a copy's or a repair's with its files
too (``DEFAULT_COPY_MS_PER_FILE``).
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import dramatiq

QUEUE_COPY = "copy"
QUEUE_DELETE = "delete"
QUEUE_VERIFY = "verify"
QUEUES = (QUEUE_COPY, QUEUE_DELETE, QUEUE_VERIFY)
ACTOR_COPY = "copy_file"
ACTOR_COPY_MANY = "copy_files"
ACTOR_COPY_ITEMS = "copy_items"
ACTOR_FINISH = "finish_copy"
ACTOR_DELETE = "delete_location"
ACTOR_DELETE_MANY = "delete_files"
ACTOR_VERIFY = "verify_location"
ACTOR_VERIFY_MANY = "verify_files"
ACTOR_REPAIR = "repair_location"
ACTOR_REMOVE = "remove_location"
ACTOR_AUDIT = "audit_connector"
#: The marker (``workers.broker.Pending``) of a repair queued or running.
PENDING_REPAIR = "repair"
#: The marker of a removal (of a removed item's copy) queued or running.
PENDING_REMOVE = "remove"
#: The marker of a connector's audit queued or running (item id 0): one at a time.
PENDING_AUDIT = "audit"
#: An audit's time limit: it lists the whole connector (a million objects: minutes).
DEFAULT_AUDIT_TIME_LIMIT_MS = 12 * 3600 * 1000

#: A job's time limit: this much, plus its bytes at ``DEFAULT_SLOWEST_RATE``.
DEFAULT_TIME_LIMIT_MS = 600_000
#: Milliseconds a delete job is given per file, on top of ``DEFAULT_TIME_LIMIT_MS``.
DEFAULT_DELETE_MS_PER_FILE = 200
#: Milliseconds a copy job is given per file, on top of its bytes' time
#: (``copy_time_limit_ms``): each file costs requests whatever its size,
#: and a one-shot run's jobs hold up to ``DEFAULT_ONCE_JOB_FILES``.
DEFAULT_COPY_MS_PER_FILE = 200
#: Bytes per second below which a transfer is taken to be stuck.
DEFAULT_SLOWEST_RATE = 2 * 1024 * 1024
#: Files of one copy that share a job: at most this many ...
DEFAULT_JOB_FILES = 128
#: ... and at most this many bytes between them.
DEFAULT_JOB_BYTES = 64 * 1024 * 1024
#: Files a job of a one-shot run's processes shares at most (``copy_jobs``'
#: ``max_files``): each job lands its files with two flushes of the
#: filesystem, which a job of 128 small local files spends a third of its
#: time on (2,000 x 16 KiB on 2 CPUs: 0.53 s against 0.61 s for the run).
DEFAULT_ONCE_JOB_FILES = 1000
#: Jobs are not split further to come in a multiple (``copy_jobs``) below
#: this many files each: a few files are not worth another process.
DEFAULT_SPLIT_FILES = 32
#: Files of one delete that share a job (S3 deletes up to 1,000 in one request).
DEFAULT_DELETE_JOB_FILES = 1_000


def message(queue: str, actor: str, *args: Any, **options: Any) -> dramatiq.Message:
    """A message for ``actor`` on ``queue`` with positional ``args``."""
    return dramatiq.Message(
        queue_name=queue,
        actor_name=actor,
        args=args,
        kwargs={},
        options=options,
        message_id=str(uuid.uuid4()),
        message_timestamp=int(time.time() * 1000),
    )


def time_limit_ms(size: int | None) -> int:
    """The time limit of a job moving ``size`` bytes."""
    return DEFAULT_TIME_LIMIT_MS + (size or 0) * 1000 // DEFAULT_SLOWEST_RATE


def copy_time_limit_ms(size: int | None, files: int) -> int:
    """The time limit of a job copying ``files`` files of ``size`` bytes in all."""
    return time_limit_ms(size) + files * DEFAULT_COPY_MS_PER_FILE


def delete_time_limit_ms(files: int) -> int:
    """The time limit of a job deleting ``files`` files (bytes cost a delete nothing)."""
    return DEFAULT_TIME_LIMIT_MS + files * DEFAULT_DELETE_MS_PER_FILE


def copy_messages(
    item_id: int, target: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The jobs that copy ``files`` (path, size) of one item to ``target`` (``copy_jobs``)."""
    return copy_jobs(target, [(item_id, files)])


def copy_jobs(
    target: str,
    items: Sequence[tuple[int, Sequence[tuple[str, int | None]]]],
    *,
    max_files: int = DEFAULT_JOB_FILES,
    jobs_multiple: int = 1,
) -> list[dramatiq.Message]:
    """The jobs that copy to ``target`` the files (path, size) of ``items`` (item id, files).

    Small files share jobs, across items (``copy_items``; ``copy_files``
    when a job holds files of one item only), so a job's catalog work is
    shared by all of them: as few jobs as ``DEFAULT_JOB_FILES`` files and
    ``DEFAULT_JOB_BYTES`` bytes a job allow, and of equal size (2,000 files
    make 16 jobs of 125, not 15 full ones and a straggler that a pool
    waits on at the end). An item's files stay in order and together,
    except where a job boundary falls inside the item: then its first files
    end one job and the rest begin the next. A file larger than
    ``DEFAULT_JOB_BYTES`` has a job of its own; an item without files gets
    a ``finish_copy``. ``max_files`` replaces ``DEFAULT_JOB_FILES``;
    ``jobs_multiple``: the small files' jobs come in a multiple of this
    many where there are files enough (``DEFAULT_SPLIT_FILES`` a job) for
    the processes that share them: none waits on another's last job.
    """
    messages = []
    small: list[tuple[int, str, int]] = []
    for item_id, item_files in items:
        if not item_files:
            messages.append(message(QUEUE_COPY, ACTOR_FINISH, item_id, target))
            continue
        for path, size in item_files:
            if (size or 0) > DEFAULT_JOB_BYTES:
                messages.append(_copy_files(item_id, target, [path], size or 0))
            else:
                small.append((item_id, path, size or 0))
    for run, size in _even_runs(small, max_files, jobs_multiple):
        group: list[list[Any]] = []
        for item_id, path, _ in run:
            if group and group[-1][0] == item_id:
                group[-1][1].append(path)
            else:
                group.append([item_id, [path]])
        if len(group) == 1:
            [[item_id, paths]] = group
            messages.append(_copy_files(item_id, target, paths, size))
        else:
            messages.append(
                message(
                    QUEUE_COPY,
                    ACTOR_COPY_ITEMS,
                    target,
                    group,
                    time_limit=copy_time_limit_ms(size, len(run)),
                )
            )
    return messages


#: Something to cut into runs: its size (or None) comes last.
_Entry = TypeVar("_Entry", bound=tuple[Any, ...])


def _even_runs(
    files: Sequence[_Entry], max_files: int, multiple: int
) -> list[tuple[list[_Entry], int]]:
    """``files`` (..., size) cut in order into the fewest runs the limits allow, even; with bytes.

    First into equal counts of files, as many runs as the file and byte
    limits need between them, rounded up to a multiple of ``multiple``
    while each keeps ``DEFAULT_SPLIT_FILES``; then a run still over the byte limit (sizes uneven)
    is cut again where it fills (``_cut``).
    """
    if not files:
        return []
    total = sum(entry[-1] or 0 for entry in files)
    wanted = max(-(-len(files) // max_files), -(-total // DEFAULT_JOB_BYTES))
    # Rounded up where each job keeps files enough to be worth a process.
    wanted = max(wanted, min(-(-wanted // multiple) * multiple, len(files) // DEFAULT_SPLIT_FILES))
    bounds = [len(files) * number // wanted for number in range(wanted + 1)]
    return [
        run
        for begin, end in itertools.pairwise(bounds)
        for run in _cut(files[begin:end], end - begin, DEFAULT_JOB_BYTES)
    ]


def _copy_files(item_id: int, target: str, paths: list[str], size: int) -> dramatiq.Message:
    return message(
        QUEUE_COPY,
        ACTOR_COPY_MANY,
        item_id,
        target,
        paths,
        time_limit=copy_time_limit_ms(size, len(paths)),
    )


def verify_messages(
    item_id: int, connector: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The jobs that verify ``files`` (path, size) of the item's copy on ``connector``.

    Shared as a copy's are; each job's time limit grows with its bytes (they
    are read back). An item without files gets one job of none, which
    records the copy verified.
    """
    return [
        message(
            QUEUE_VERIFY,
            ACTOR_VERIFY_MANY,
            item_id,
            connector,
            paths,
            time_limit=time_limit_ms(size),
        )
        for paths, size in _batches(files, DEFAULT_JOB_FILES, DEFAULT_JOB_BYTES) or [([], 0)]
    ]


def repair_messages(
    item_id: int, connector: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The job that repairs the item's damaged copy on ``connector``, whose bad files are ``files``.

    One job: its time limit grows with the bad files and their bytes.
    """
    size = sum(size or 0 for _, size in files)
    limit = copy_time_limit_ms(size, len(files))
    return [message(QUEUE_COPY, ACTOR_REPAIR, item_id, connector, time_limit=limit)]


def delete_messages(
    item_id: int, connector: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The jobs that delete the item's copy on ``connector``, whose files are ``files``.

    Up to ``DEFAULT_DELETE_JOB_FILES`` files a job, each given
    ``DEFAULT_DELETE_MS_PER_FILE`` on top of the base time limit (each is a
    request to the store, or part of one). An item without files gets one
    job of none, which removes the location.
    """
    batches = _batches(files, DEFAULT_DELETE_JOB_FILES, None) or [([], 0)]
    return [
        message(
            QUEUE_DELETE,
            ACTOR_DELETE_MANY,
            item_id,
            connector,
            paths,
            time_limit=delete_time_limit_ms(len(paths)),
        )
        for paths, _ in batches
    ]


def remove_messages(
    item_id: int, connector: str, files: Sequence[tuple[str, int | None]]
) -> list[dramatiq.Message]:
    """The job that deletes the copy on ``connector`` of a removed item, whose files are ``files``.

    One job (the copy goes whole, without the delete rules), given
    ``DEFAULT_DELETE_MS_PER_FILE`` a file on top of the base time limit.
    """
    return [
        message(
            QUEUE_DELETE,
            ACTOR_REMOVE,
            item_id,
            connector,
            time_limit=delete_time_limit_ms(len(files)),
        )
    ]


def audit_messages(connector: str) -> list[dramatiq.Message]:
    """The job that audits ``connector`` against the catalog (reports; removes nothing)."""
    return [message(QUEUE_VERIFY, ACTOR_AUDIT, connector, time_limit=DEFAULT_AUDIT_TIME_LIMIT_MS)]


def _batches(
    files: Sequence[tuple[str, int | None]], max_files: int, max_bytes: int | None
) -> list[tuple[list[str], int]]:
    """``files`` (path, size) cut, in order, into runs of at most so many files and bytes.

    A file larger than ``max_bytes`` has a run of its own. Returns each
    run's paths and bytes.
    """
    return [([path for path, _ in run], size) for run, size in _cut(files, max_files, max_bytes)]


def _cut(
    entries: Sequence[_Entry], max_files: int, max_bytes: int | None
) -> list[tuple[list[_Entry], int]]:
    """``entries`` cut, in order, into runs of at most so many entries and bytes; with bytes.

    An entry larger than ``max_bytes`` has a run of its own.
    """
    runs: list[tuple[list[_Entry], int]] = []
    run: list[_Entry] = []
    total = 0
    for entry in entries:
        size = entry[-1] or 0
        full = len(run) >= max_files or (max_bytes is not None and total + size > max_bytes)
        if run and full:
            runs.append((run, total))
            run, total = [], 0
        run.append(entry)
        total += size
    if run:
        runs.append((run, total))
    return runs
