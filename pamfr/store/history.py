"""What a message changed, as history rows written in its transaction once its log row
has an id."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pamfr.store import statements as sql
from pamfr.store.changes import patient_id_of
from pamfr.store.writes import Writes

if TYPE_CHECKING:
    from pamfr.store.repository import IdentityRepository


def history_writes(
    entries: list[tuple[IdentityRepository, int, str, str]],
) -> Writes:
    """The link and history rows that (repository, message id, control id, event) entries
    collected, once their messages have ids: one statement a table at most."""
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
    written = ((sql.INSERT_LINK, links), (sql.INSERT_HISTORY, rows))
    return [(statement, r) for statement, r in written if r]
