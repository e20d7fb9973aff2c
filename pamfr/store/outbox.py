"""The outbox: the event rows of a transaction's messages, written with their history.

`outbox_writes` gives the (statement, rows) pairs that `history.history_writes` appends to
its own, so the plain path and the PostgreSQL pipelined path (pgpipeline.send_and_commit)
write the events in the transaction that changed the identities: committed together or not
at all.

Commit order. A PostgreSQL sequence hands out ids in call order, not commit order: with several
receivers on one database, a transaction could take id 11, another id 12 and commit first, and
a reader at after=10 would see 12 and resume after it, never seeing 11. So every transaction
takes one transaction-scoped advisory lock (FEED_LOCK) right before it inserts its events and
keeps it until its COMMIT: the next writer gets its ids only once the previous one has
committed, and the ids become visible in increasing order. The lock is the last thing a
transaction takes, so it is held for the insert and the commit only (in the rare batches that
insert events twice, a link then more messages, it is held from the first insert). SQLite
serialises its writers on the database lock: ids are in commit order already.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Executable, func, insert, select

from pamfr.feed.events import Recorded, derive
from pamfr.store.changes import patient_id_of
from pamfr.store.schema import event

# pg_advisory_xact_lock's 64-bit key space ("pamfrevt"); the INS locks use hashtext(), 32-bit.
FEED_LOCK = 0x70616D6672657674
_TAKE_FEED_LOCK = select(func.pg_advisory_xact_lock(FEED_LOCK))
_INSERT_EVENT = insert(event)


def event_rows(repo: Any, message_id: int, control_id: str) -> list[dict]:
    """The event rows of one message, from its repository's recorded changes."""
    records = [
        Recorded(patient_id_of(c.patient_id), c.operation, c.changes, c.notes) for c in repo.changes
    ]
    return [
        {
            "at": repo.now,
            "type": e["type"],
            "message_id": message_id,
            "control_id": control_id,
            "patient_id": e["patient_id"],
            "other_patient_id": e["other_patient_id"],
            "version_id": str(message_id),
            "detail": json.dumps(e["detail"], ensure_ascii=False, sort_keys=True),
        }
        for e in derive(records)
    ]


def outbox_writes(
    entries: Sequence[tuple[Any, int, str, str]],
) -> list[tuple[Executable, list[dict]]]:
    """(statement, rows) pairs for the events of (repository, message id, control id, event)
    entries: on PostgreSQL the commit-order lock first, then the inserts; [] when no event."""
    rows = [r for repo, mid, control_id, _ in entries for r in event_rows(repo, mid, control_id)]
    if not rows:
        return []
    writes: list[tuple[Executable, list[dict]]] = []
    if entries[0][0].conn.dialect.name == "postgresql":
        writes.append((_TAKE_FEED_LOCK, [{}]))
    writes.append((_INSERT_EVENT, rows))
    return writes
