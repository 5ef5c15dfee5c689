"""Deletes racing other jobs, and links a listing meets: what must never lose a copy."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import peewee as pw
import pytest

from catalog.integrity import bad_files, lost_files
from catalog.queries import reserve_location
from connectors.errors import ConnectorError
from connectors.local import LocalConnector
from tests.unit.workers.test_operations import (
    NOW,
    PREFERENCE,
    copy,
    damage,
    delete,
    delete_part,
    location,
    make_item,
)
from workers import operations
from workers.audit import audit_connector
from workers.operations import (
    DELETED,
    FILES_DELETED,
    REFUSED,
    copy_item_files,
    repair_location,
    verify_item_files,
)


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, LocalConnector]:
    return {name: LocalConnector(name, path=tmp_path / name) for name in PREFERENCE}


@pytest.mark.parametrize("link_to", ["a file outside the root", "a folder"])
def test_a_file_that_is_a_link_the_connector_refuses_does_not_confirm_a_copy(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], tmp_path: Path, link_to: str
) -> None:
    """The listing follows a link out of the root (or to a folder) and calls the file there.

    ``stat`` and a verification refuse such a link (SPEC §3: never escaping
    the root, symlinks included), but the listing that confirms a copy
    before a delete took it for the file: backup went, and the next
    verification of local finds the file bad, with no good copy left.
    """
    files = {"reads.fastq": os.urandom(3000), "sub/log.txt": b"log"}
    if link_to == "a folder":
        elsewhere = folders["local"].root / "other-item" / "folder"
        elsewhere.mkdir(parents=True)
        files["reads.fastq"] = os.urandom(os.stat(elsewhere).st_size)  # a folder's size
    item = make_item(folders, files=files, on=("local", "backup"))
    held = folders["local"].root / "item-1" / "reads.fastq"
    if link_to == "a folder":
        target = elsewhere
    else:
        target = tmp_path / "outside" / "reads.fastq"
        target.parent.mkdir()
        target.write_bytes(held.read_bytes())
    held.unlink()
    held.symlink_to(target)
    try:
        outcome = delete(item, "backup", folders)
    except Exception:  # refused by an error: acceptable, nothing removed
        outcome = "failed"
    assert outcome != DELETED, "backup deleted on the word of a link the connector refuses"
    assert (folders["backup"].root / "item-1" / "reads.fastq").exists()
    report = verify_item_files(item.id, "local", None, connectors=folders.__getitem__, now=NOW)
    assert report is not None and not report.ok  # local does not hold the file
    assert lost_files() == {}


def test_a_job_that_removes_files_after_its_delete_was_stopped_records_them_bad(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job past its decision removes its files after another job stopped the delete.

    The stop records as bad only the files whose rows were gone; the job in
    flight then removes its files and drops their rows, and on a damaged
    copy a file without a row is good. backup is repaired of nothing and
    counts again, without reads.fastq.
    """
    item = make_item(folders, on=("local", "backup"))
    removing = operations.delete_all
    raced: list[str] = []

    def racing(connector: Any, paths: Any, *, within: str = "") -> None:
        if not raced:
            raced.append("started")
            # Meanwhile local is found bad, and the delete's next job stops it.
            damage(item, "local", "sub/log.txt")
            raced[0] = delete_part(item, folders, "sub/log.txt")
        removing(connector, paths, within=within)

    monkeypatch.setattr(operations, "delete_all", racing)
    assert delete_part(item, folders, "reads.fastq") == FILES_DELETED
    assert raced == [REFUSED]
    backup = location(item, "backup")
    assert backup is not None
    assert not (folders["backup"].root / "item-1" / "reads.fastq").exists()
    # The stop found no file removed yet, settled backup OK again, and the
    # job in flight then removed reads.fastq and dropped its row.
    assert backup.status != "OK", "backup counts as a copy without reads.fastq"
    assert "reads.fastq" in {entry.path for entry in bad_files(backup.id)}
    lookup = folders.__getitem__
    repair_location(item.id, "backup", connectors=lookup, preference=PREFERENCE)
    assert (folders["backup"].root / "item-1" / "reads.fastq").exists()


def test_a_late_duplicate_job_of_a_finished_delete_leaves_a_new_copy_alone(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redelivered job, past its decision, removes its files once the delete is over.

    By then the copy is gone and a new one made at the same url (copy rule);
    the late job removes the new copy's file, which stays OK without it.
    """
    item = make_item(folders, on=("local", "backup"))
    assert delete_part(item, folders, "reads.fastq") == FILES_DELETED
    removing = operations.delete_all
    raced: list[str] = []

    def late(connector: Any, paths: Any, *, within: str = "") -> None:
        if not raced:
            raced.append("started")
            raced[0] = delete_part(item, folders, "sub/log.txt")  # the delete ends
            assert reserve_location(item.id, "backup", url=item.key) is not None
            for path in ("reads.fastq", "sub/log.txt"):
                copy(item, "backup", path, folders)
        removing(connector, paths, within=within)

    monkeypatch.setattr(operations, "delete_all", late)
    delete_part(item, folders, "reads.fastq")  # the duplicate of the first job
    assert raced == [DELETED]
    assert location(item, "backup").status == "OK"
    assert (folders["backup"].root / "item-1" / "reads.fastq").exists(), (
        "the new copy on backup lost a file it is recorded to hold"
    )


def test_a_copy_found_different_as_a_new_version_is_registered_is_not_damaged(
    catalog_db: pw.Database,
    folders: dict[str, LocalConnector],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A delete of ``backup`` confirms ``local`` against the hashes it read: the
    producer has just written a new version of ``a`` there, and registers it before
    the delete decides. ``local`` holds the new version, the only copy of it: what
    the confirmation found against the old hashes is no evidence, and must not make
    it damaged (the file lost). The delete does not go ahead: ``backup`` is stale."""
    from tests.unit.workers.test_verify import new_version_on_local

    item = make_item(folders, files={"a": b"version 1", "b": b"bravo"}, on=("local", "backup"))
    new = b"version 2, longer"
    (folders["local"].root / "item-1" / "a").write_bytes(new)
    confirm = operations.confirm_copy

    def then_registered(*args: Any, **kwargs: Any) -> Any:
        found = confirm(*args, **kwargs)
        new_version_on_local(catalog_db, new)
        return found

    monkeypatch.setattr(operations, "confirm_copy", then_registered)
    assert delete(item, "backup", folders) == REFUSED

    assert location(item, "local").status == "OK"  # type: ignore[union-attr]
    assert lost_files() == {}
    assert (folders["backup"].root / "item-1" / "a").read_bytes() == b"version 1"


@pytest.mark.parametrize("where", ["a stray name beside the files", "a file of the item"])
def test_a_link_loop_in_the_other_copy_is_no_object_and_no_crash(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], where: str
) -> None:
    """A link that points to itself lies in local's folder: ``backup`` is deleted.

    The listing that confirms local followed the link and let the operating
    system's error (ELOOP) out untyped: every delete counting on local
    failed for good with a traceback, and a file of the item that is such a
    link (not there: ``stat`` and a verification say so) was not found bad.
    """
    item = make_item(folders, on=("local", "backup"))
    folder = folders["local"].root / "item-1"
    if where == "a file of the item":
        (folder / "reads.fastq").unlink()
        (folder / "reads.fastq").symlink_to("reads.fastq")
    else:
        (folder / "stray").symlink_to("stray")
    outcome = delete(item, "backup", folders)
    if where == "a file of the item":
        assert outcome == REFUSED
        assert [entry.path for entry in bad_files(location(item, "local").id)] == ["reads.fastq"]
        assert (folders["backup"].root / "item-1" / "reads.fastq").exists()
    else:
        assert outcome == DELETED
        assert location(item, "local").status == "OK"


# -- a root that is not there: a volume not mounted (SPEC §3) ------------------


def unmount(connector: LocalConnector) -> Path:
    """Take the connector's root away, as an unmounted volume does; where it went."""
    away = connector.root.with_name(connector.root.name + "-unmounted")
    connector.root.rename(away)
    return away


def outcome_of(job: Any) -> str:
    """What a job returned, or ``"raised"`` for a transient error (retried later)."""
    try:
        return str(job())
    except ConnectorError as exc:
        assert exc.transient, exc
        assert "does not exist (not mounted?)" in str(exc), exc
        return "raised"


def test_a_delete_confirming_a_copy_on_a_missing_root_neither_deletes_nor_damages(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """local's volume is not mounted while ``backup`` is deleted.

    Its folder was taken for an empty one: the confirmation found every file
    of local "missing", marked the only other copy damaged, and the item lost.
    """
    item = make_item(folders, on=("local", "backup"))
    away = unmount(folders["local"])
    assert outcome_of(lambda: delete(item, "backup", folders)) in ("raised", REFUSED)
    assert bad_files(location(item, "local").id) == []  # type: ignore[union-attr]
    assert location(item, "local").status == "OK"  # type: ignore[union-attr]
    assert lost_files() == {}
    assert (folders["backup"].root / "item-1" / "reads.fastq").exists()
    assert not folders["local"].root.exists()
    # Mounted again: the copy is confirmed and the delete goes ahead.
    away.rename(folders["local"].root)
    assert delete(item, "backup", folders) == DELETED
    assert (folders["local"].root / "item-1" / "reads.fastq").exists()


def test_a_copy_on_a_missing_root_is_not_forgotten_by_its_delete(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """Nothing was removed: the copy's bytes are on the volume, and stay in the catalog."""
    item = make_item(folders, on=("local", "backup"))
    away = unmount(folders["backup"])
    assert outcome_of(lambda: delete(item, "backup", folders)) == "raised"
    assert location(item, "backup") is not None
    assert (away / "item-1" / "reads.fastq").exists()
    away.rename(folders["backup"].root)
    assert delete(item, "backup", folders) == DELETED
    assert not (folders["backup"].root / "item-1").exists()


def test_a_verification_or_audit_of_a_missing_root_concludes_nothing(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    item = make_item(folders, on=("local", "backup"))
    unmount(folders["backup"])
    lookup = folders.__getitem__
    assert (
        outcome_of(lambda: verify_item_files(item.id, "backup", None, connectors=lookup, now=NOW))
        == "raised"
    )
    assert outcome_of(lambda: audit_connector(folders["backup"], catalog_db, now=NOW)) == "raised"
    assert bad_files(location(item, "backup").id) == []  # type: ignore[union-attr]
    assert location(item, "backup").status == "OK"  # type: ignore[union-attr]


def test_a_repair_whose_source_s_root_is_missing_does_not_damage_the_source(
    catalog_db: pw.Database, folders: dict[str, LocalConnector]
) -> None:
    """The repair read local's file: "no such object" made local damaged too, the item lost."""
    item = make_item(folders, on=("local", "backup"))
    (folders["backup"].root / "item-1" / "reads.fastq").unlink()
    damage(item, "backup", "reads.fastq")
    away = unmount(folders["local"])
    lookup = folders.__getitem__
    assert (
        outcome_of(
            lambda: repair_location(item.id, "backup", connectors=lookup, preference=PREFERENCE)
        )
        == "raised"
    )
    assert bad_files(location(item, "local").id) == []  # type: ignore[union-attr]
    assert lost_files() == {}
    away.rename(folders["local"].root)
    repair_location(item.id, "backup", connectors=lookup, preference=PREFERENCE)
    assert location(item, "backup").status == "OK"  # type: ignore[union-attr]
    assert (folders["backup"].root / "item-1" / "reads.fastq").exists()


@pytest.mark.parametrize("look_first", [True, False])
def test_the_first_copy_into_a_root_never_made_makes_it(
    catalog_db: pw.Database, folders: dict[str, LocalConnector], look_first: bool
) -> None:
    """The embedded default's folders are made by their first copy, which looks there first."""
    item = make_item(folders, on=("local",))
    assert not folders["backup"].root.exists()
    reserve_location(item.id, "backup", url=item.key)
    report = copy_item_files(
        item.id,
        "backup",
        ["reads.fastq", "sub/log.txt"],
        connectors=folders.__getitem__,
        preference=PREFERENCE,
        look_first=look_first,
    )
    assert report.copied == 2 and location(item, "backup").status == "OK"  # type: ignore[union-attr]
    assert (folders["backup"].root / "item-1" / "sub" / "log.txt").read_bytes() == b"log"
