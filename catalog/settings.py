"""Switches an operator sets at run time, kept in the catalog: every process reads them there.

``deletes_paused`` is read by the scan (no delete is queued) and by every
delete job under the item's lock (no file is removed), so a pause holds
whatever is already queued or running. The switches are rows of the
``setting`` table; setting one records who and why, and the history says so.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from catalog.models import Action, Setting, utcnow

#: The switch that stops every delete.
DELETES_PAUSED = "deletes_paused"
#: The last finished audit of a connector: ``audit:<connector>``, its time.
AUDITED = "audit:"


class Pause(NamedTuple):
    """Deletes are paused: since when, and the note left with it."""

    since: datetime
    note: str

    def as_json(self) -> dict[str, object]:
        return {
            "deletes_paused": True,
            "since": f"{self.since:%Y-%m-%dT%H:%M:%SZ}",
            "note": self.note,
        }

    def describe(self) -> str:
        why = f": {self.note}" if self.note else ""
        return f"deletes are paused since {self.since:%Y-%m-%dT%H:%M:%SZ}{why}"


def deletes_paused() -> Pause | None:
    """The pause of deletes, if deletes are paused."""
    row = Setting.get_or_none(Setting.name == DELETES_PAUSED)
    if row is None or row.value != "yes":
        return None
    return Pause(since=row.updated, note=row.note)


def pause_deletes(*, note: str = "", actor: str = "operator") -> Pause:
    """Pause every delete (idempotent: a pause already set keeps its time and note)."""
    current = deletes_paused()
    if current is not None:
        return current
    now = utcnow()
    _set(DELETES_PAUSED, "yes", note=note, when=now)
    Action.create(actor=actor, action="pause deletes")
    return Pause(since=now, note=note)


def resume_deletes(*, actor: str = "operator") -> bool:
    """Let deletes run again; False if they were not paused."""
    if deletes_paused() is None:
        return False
    Setting.update(value="no", updated=utcnow()).where(Setting.name == DELETES_PAUSED).execute()
    Action.create(actor=actor, action="resume deletes")
    return True


def last_audit(connector: str) -> datetime | None:
    """When the last audit of ``connector`` finished (None: never)."""
    row = Setting.get_or_none(Setting.name == AUDITED + connector)
    return None if row is None else row.updated


def record_audit(connector: str, *, finished: datetime, note: str) -> None:
    """Record that an audit of ``connector`` finished at ``finished``; ``note``: what it found."""
    _set(AUDITED + connector, "done", note=note, when=finished)


def _set(name: str, value: str, *, note: str, when: datetime) -> None:
    """Set the switch ``name`` (made if new)."""
    Setting.insert(name=name, value=value, note=note, updated=when).on_conflict(
        conflict_target=[Setting.name],
        update={Setting.value: value, Setting.note: note, Setting.updated: when},
    ).execute()
