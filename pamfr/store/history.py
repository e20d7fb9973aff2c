"""What a message changed, as history rows written in its transaction once its log row
has an id."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pamfr.store import statements as sql
from pamfr.store.changes import LoggedChanges, patient_id_of
from pamfr.store.writes import Writes


def history_writes(logged: Sequence[LoggedChanges]) -> Writes:
    """The link and history rows of messages whose log rows have ids: one statement a table
    at most."""
    links: list[dict] = []
    rows: list[dict] = []
    for entry in logged:
        changes, message_id = entry.changes, entry.message_id
        if changes.link is not None:
            links.append(changes.link.row(message_id))
        rows += [
            dict(
                patient_id=patient_id_of(c.patient_id),
                at=changes.at,
                message_id=message_id,
                control_id=entry.control_id,
                event=entry.event,
                operation=c.operation,
                changes=json.dumps(c.changes, ensure_ascii=False, default=str),
                notes=json.dumps([n.as_json() for n in c.notes]) if c.notes else None,
            )
            for c in changes.records
        ]
    written = ((sql.INSERT_LINK, links), (sql.INSERT_HISTORY, rows))
    return [(statement, r) for statement, r in written if r]
