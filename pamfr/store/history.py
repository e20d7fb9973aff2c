"""What a message changed, as history rows written in its transaction once its log row
has an id."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pamfr.identity.findings import Note
from pamfr.store import statements as sql
from pamfr.store.writes import Writes

if TYPE_CHECKING:
    from pamfr.store.repository import IdentityRepository


@dataclass(eq=False)
class NewPatient:
    """A patient row held back for a batch's flush, which gives it its id."""

    columns: dict[str, object]
    id: int | None = None


def patient_id_of(patient_id: int | NewPatient) -> int | None:
    return patient_id.id if isinstance(patient_id, NewPatient) else patient_id


@dataclass
class Change:
    """One history row to write once the message row exists."""

    patient_id: int | NewPatient
    operation: str
    changes: dict[str, list] = field(default_factory=dict)
    notes: list[Note] = field(default_factory=list)  # what was dropped or kept, and why


def history_writes(
    entries: list[tuple[IdentityRepository, int, str, str]],
) -> Writes:
    """The link and history rows that (repository, message id, control id, event) entries
    collected, once their messages have ids: one statement for each table at most."""
    links: list[dict] = []
    rows: list[dict] = []
    for repo, message_id, control_id, event in entries:
        if repo.pending_link is not None:
            links.append({**repo.pending_link, "message_id": message_id})
        rows += [
            dict(
                patient_id=patient_id_of(c.patient_id),
                at=repo.now,
                message_id=message_id,
                control_id=control_id,
                event=event,
                operation=c.operation,
                changes=json.dumps(c.changes, ensure_ascii=False, default=str),
                notes=json.dumps([n.as_json() for n in c.notes]) if c.notes else None,
            )
            for c in repo.changes
        ]
    return [
        (statement, r)
        for statement, r in ((sql.INSERT_LINK, links), (sql.INSERT_HISTORY, rows))
        if r
    ]
