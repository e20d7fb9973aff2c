"""The outbox: the event rows of a transaction's messages, written in that transaction.

The unit of work (store/unit) derives `event_rows` from the changes of every message the
transaction logged and inserts them with `outbox_writes` as the transaction's last writes (on
the PostgreSQL held path, in the pipeline that ends with the COMMIT): committed with the
identity changes or not at all.

Commit order. A PostgreSQL sequence hands out ids in call order, not commit order: with several
receivers on one database, a transaction could take id 11, another id 12 and commit first, and
a reader at after=10 would see 12 and resume after it, never seeing 11. So every transaction
takes one transaction-scoped advisory lock (FEED_LOCK) right before it inserts its events and
keeps it until its COMMIT: the next writer gets its ids only once the previous one has
committed, and the ids become visible in increasing order. The lock is the last thing a
transaction takes, after every row and INS lock, so it is held for the insert and the commit
only, and a writer waiting for it holds no lock another one waits for. SQLite
serialises its writers on the database lock: ids are in commit order already.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Dialect, func, insert, select

from pamfr.identity.changefeed import Recorded, derive
from pamfr.store.changes import LoggedChanges, patient_id_of
from pamfr.store.schema import event
from pamfr.store.writes import Writes

# pg_advisory_xact_lock's 64-bit key space ("pamfrevt"); the INS locks use hashtext(), 32-bit.
FEED_LOCK = 0x70616D6672657674
_TAKE_FEED_LOCK = select(func.pg_advisory_xact_lock(FEED_LOCK))
_INSERT_EVENT = insert(event)


def _message_events(entry: LoggedChanges) -> list[dict]:
    changes = entry.changes
    records = [
        Recorded(patient_id_of(c.patient_id), c.operation, c.changes, c.notes)
        for c in changes.records
    ]
    return [
        {
            "at": changes.at,
            "type": e["type"],
            "message_id": entry.message_id,
            "control_id": entry.control_id,
            "patient_id": e["patient_id"],
            "other_patient_id": e["other_patient_id"],
            "version_id": str(entry.message_id),
            "detail": json.dumps(e["detail"], ensure_ascii=False, sort_keys=True),
        }
        for e in derive(records)
    ]


def event_rows(logged: Sequence[LoggedChanges]) -> list[dict]:
    """The event rows of logged messages, from the changes each one made, in order."""
    return [row for entry in logged for row in _message_events(entry)]


def outbox_writes(dialect: Dialect, rows: list[dict]) -> Writes:
    """(statement, rows) pairs that insert a transaction's events, the last writes it makes:
    on PostgreSQL the commit-order lock first; [] when there is no event."""
    if not rows:
        return []
    writes: Writes = []
    if dialect.name == "postgresql":
        writes.append((_TAKE_FEED_LOCK, [{}]))
    writes.append((_INSERT_EVENT, list(rows)))
    return writes
