"""The queue contract's builders: how work is cut into jobs, and each job's time limit."""

from __future__ import annotations

import itertools
import json

import dramatiq
import pytest

from workers import messages


def test_time_limits_grow_with_the_file() -> None:
    small = messages.time_limit_ms(1)
    large = messages.time_limit_ms(10 * 1024**3)
    assert small == messages.DEFAULT_TIME_LIMIT_MS and large > small + 3_600_000


def test_a_copy_jobs_time_limit_grows_with_its_files_too() -> None:
    """A one-shot job of 1,000 tiny files gets time for each, not only for its bytes."""
    items = [(item, [(f"f{n:02d}", 100) for n in range(10)]) for item in range(200)]
    [first, second] = messages.copy_jobs("local", items, max_files=1000, jobs_multiple=2)
    per_file = messages.DEFAULT_COPY_MS_PER_FILE
    assert first.options["time_limit"] == messages.time_limit_ms(100_000) + 1000 * per_file
    assert second.options["time_limit"] == first.options["time_limit"]
    [repair] = messages.repair_messages(7, "S3", [("a", 10), ("b", 20)])
    assert repair.options["time_limit"] == messages.time_limit_ms(30) + 2 * per_file


def job_files(queued: list[dramatiq.Message]) -> list[list[tuple[int, str]]]:
    """Each copy job's files, as (item id, path), in order."""
    found = []
    for m in queued:
        if m.actor_name == messages.ACTOR_COPY_MANY:
            item_id, _, paths = m.args
            found.append([(item_id, path) for path in paths])
        else:
            assert m.actor_name == messages.ACTOR_COPY_ITEMS
            found.append([(item_id, path) for item_id, paths in m.args[1] for path in paths])
    return found


def test_small_files_share_jobs_up_to_a_count_and_a_size() -> None:
    mib = 1024 * 1024
    limit = messages.DEFAULT_JOB_FILES
    files = [(f"s{n:03d}", 10) for n in range(limit + 1)]
    files += [("big", messages.DEFAULT_JOB_BYTES + 1), ("after-1", 40 * mib), ("after-2", 40 * mib)]
    queued = messages.copy_messages(7, "S3", files)

    assert {m.actor_name for m in queued} == {messages.ACTOR_COPY_MANY}
    assert all(m.args[:2] == (7, "S3") for m in queued)
    groups = [m.args[2] for m in queued]
    # A file above DEFAULT_JOB_BYTES alone; the rest in as few jobs as the
    # limits allow (two), even; the second cut again where its bytes fill.
    assert groups[0] == ["big"]
    small = [path for path, size in files if size < messages.DEFAULT_JOB_BYTES]
    assert [path for group in groups[1:] for path in group] == small
    assert [len(group) for group in groups[1:]] == [65, 65, 1]
    assert groups[-1] == ["after-2"]
    # The time limit grows with the job's bytes.
    assert queued[0].options["time_limit"] > queued[1].options["time_limit"]
    assert [m.actor_name for m in messages.copy_messages(7, "S3", [])] == [messages.ACTOR_FINISH]


def test_small_items_share_jobs_as_few_and_as_even_as_the_limits_allow() -> None:
    limit = messages.DEFAULT_JOB_FILES
    items = [(item, [(f"f{n:02d}", 16_384) for n in range(10)]) for item in range(200)]
    queued = messages.copy_jobs("S3", items)
    groups = job_files(queued)

    # 2,000 files: the fewest jobs the limit allows, their sizes a file apart
    # at most (no straggler the pool would wait on at the end).
    assert len(groups) == -(-2000 // limit)
    sizes = [len(group) for group in groups]
    assert max(sizes) <= limit
    assert max(sizes) - min(sizes) <= 1
    # Every file once, in order; an item is cut only where a job ends.
    flat = [entry for group in groups for entry in group]
    assert flat == [(item, path) for item, files in items for path, _ in files]
    for first, second in itertools.pairwise(groups):
        shared = {item for item, _ in first} & {item for item, _ in second}
        assert shared <= {first[-1][0]}
    assert all(
        m.options["time_limit"] == messages.copy_time_limit_ms(16_384 * len(g), len(g))
        for m, g in zip(queued, groups, strict=True)
    )


@pytest.mark.parametrize(
    ("files", "max_files", "multiple", "sizes"),
    [
        # A one-shot run of 2 processes: a job each, not 16.
        (2000, 1000, 2, [1000, 1000]),
        # Three jobs' worth for two processes: four even ones, none left over.
        (3000, 1000, 2, [750] * 4),
        # Fewer files than the limit: still a job per process.
        (100, 1000, 2, [50, 50]),
        # Split only while each job keeps DEFAULT_SPLIT_FILES (32).
        (3, 1000, 4, [3]),
        (70, 1000, 4, [35, 35]),
        # The default: as few as the limit allows.
        (2000, 1000, 1, [1000, 1000]),
    ],
)
def test_jobs_cut_at_a_given_count_in_a_multiple(
    files: int, max_files: int, multiple: int, sizes: list[int]
) -> None:
    items = [(item, [(f"f{n:02d}", 16_384) for n in range(10)]) for item in range(files // 10)]
    items = items or [(0, [(f"f{n:02d}", 16_384) for n in range(files)])]
    queued = messages.copy_jobs("local", items, max_files=max_files, jobs_multiple=multiple)
    groups = job_files(queued)
    assert [len(group) for group in groups] == sizes
    flat = [entry for group in groups for entry in group]
    assert flat == [(item, path) for item, entries in items for path, _ in entries]


def test_a_multiple_of_jobs_still_keeps_to_the_byte_limit() -> None:
    mib = 1024 * 1024
    # 10 files of 20 MiB: 4 jobs by bytes (64 MiB each at most), a multiple of 2.
    items = [(1, [(f"f{n}", 20 * mib) for n in range(10)])]
    groups = job_files(messages.copy_jobs("local", items, max_files=1000, jobs_multiple=2))
    assert all(len(group) * 20 <= 64 for group in groups)
    assert len(groups) >= 4
    assert sum(len(group) for group in groups) == 10


def test_items_without_files_finish_and_large_files_go_alone() -> None:
    small = [("a.txt", 10), ("b.txt", 10)]
    items = [
        (1, small),
        (2, []),
        (3, small),
        (5, [("huge", messages.DEFAULT_JOB_BYTES + 1)]),
        (6, small),
    ]
    summary = [(m.actor_name, m.args) for m in messages.copy_jobs("S3", items)]
    pair = ["a.txt", "b.txt"]
    assert summary == [
        (messages.ACTOR_FINISH, (2, "S3")),
        (messages.ACTOR_COPY_MANY, (5, "S3", ["huge"])),
        (messages.ACTOR_COPY_ITEMS, ("S3", [[1, pair], [3, pair], [6, pair]])),
    ]
    [one] = messages.copy_jobs("S3", [(4, small)])
    assert (one.actor_name, one.args) == (messages.ACTOR_COPY_MANY, (4, "S3", pair))
    assert one.options["time_limit"] == messages.copy_time_limit_ms(20, 2)


#: The keys of a job on Redis (``workers.messages`` documents them).
STORED_KEYS = {
    "queue_name",
    "actor_name",
    "args",
    "kwargs",
    "options",
    "message_id",
    "message_timestamp",
}


def body(job: dramatiq.Message) -> tuple[str, str, list[object]]:
    """(queue, actor, args) of a job as it is stored on Redis; the other keys checked."""
    stored = json.loads(job.encode())
    assert set(stored) == STORED_KEYS
    assert stored["kwargs"] == {}
    return stored["queue_name"], stored["actor_name"], stored["args"]


def test_the_builders_write_the_documented_format() -> None:
    """Literal names and argument orders: a rename here breaks every service that enqueues."""
    files = [("a.txt", 10), ("b.txt", 20)]
    [one] = messages.copy_jobs("S3", [(7, files)])
    assert body(one) == ("copy", "copy_files", [7, "S3", ["a.txt", "b.txt"]])
    [two] = messages.copy_jobs("S3", [(7, files[:1]), (8, files[1:])])
    assert body(two) == ("copy", "copy_items", ["S3", [[7, ["a.txt"]], [8, ["b.txt"]]]])
    [empty] = messages.copy_jobs("S3", [(9, [])])
    assert body(empty) == ("copy", "finish_copy", [9, "S3"])
    [verify] = messages.verify_messages(7, "GCS", files)
    assert body(verify) == ("verify", "verify_files", [7, "GCS", ["a.txt", "b.txt"]])
    [delete] = messages.delete_messages(7, "local", files)
    assert body(delete) == ("delete", "delete_files", [7, "local", ["a.txt", "b.txt"]])
    [repair] = messages.repair_messages(7, "S3", files)
    assert body(repair) == ("copy", "repair_location", [7, "S3"])
    assert messages.QUEUES == ("copy", "delete", "verify")
    assert (messages.ACTOR_COPY, messages.ACTOR_DELETE, messages.ACTOR_VERIFY) == (
        "copy_file",
        "delete_location",
        "verify_location",
    )
    # Every job carries its time limit, grown with its bytes (and a copy's with its files).
    assert json.loads(one.encode())["options"]["time_limit"] == messages.copy_time_limit_ms(30, 2)
