"""Run stored raw messages through the receiver again, after a configuration or code fix.

Each one becomes a new log row (door "reprocess") linked to the row it reruns
(message.reprocess_of); the original row stays as it was. The duplicate control lets a
message through only when the message logged under its key was not answered AA: what was
applied is never applied twice. A new final outcome (AA/AE) takes the duplicate-control key
over, so a later resend by the GAM gets the new answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, and_, exists, select
from sqlalchemy.orm import aliased

from pamfr.hl7.frame import Door, Inbound
from pamfr.path.receiver import Receiver
from pamfr.store.schema import message

_later = aliased(message)


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    received_at: datetime
    door: str
    peer: str
    control_id: str
    event: str
    outcome: str
    error_text: str | None
    raw: bytes
    cannot: str | None  # why it cannot be run again (raw purged, frame cut), else None


@dataclass(slots=True)
class ReprocessResult:
    by_outcome: Counter = field(default_factory=Counter)  # new outcome -> count
    cannot: list[Candidate] = field(default_factory=list)
    rows: list[tuple[Candidate, str, int | None]] = field(default_factory=list)


def candidates(
    conn: Connection,
    outcome: str,
    *,
    since: datetime | None = None,
    control_id: str | None = None,
) -> Iterator[Candidate]:
    """The log rows to run again, oldest first: this outcome, not a duplicate answered from
    another row, and not already reprocessed (the latest row of each chain is run)."""
    query = (
        select(message)
        .where(
            message.c.outcome == outcome,
            message.c.duplicate_of.is_(None),
            ~exists().where(and_(_later.c.reprocess_of == message.c.id)),
        )
        .order_by(message.c.id)
    )
    if since is not None:
        query = query.where(message.c.received_at >= since)
    if control_id is not None:
        query = query.where(message.c.control_id == control_id)
    for r in conn.execute(query).mappings():
        cannot = None
        if r["raw_purged_at"] is not None:
            cannot = f"raw purged on {r['raw_purged_at']:%Y-%m-%d} (retention)"
        elif r["raw_size"] > len(r["raw"]):
            cannot = f"frame of {r['raw_size']} bytes, only its first {len(r['raw'])} kept"
        yield Candidate(
            r["id"],
            r["received_at"],
            r["door"],
            r["peer"],
            r["control_id"],
            r["event"],
            r["outcome"],
            r["error_text"],
            bytes(r["raw"]),
            cannot,
        )


def reprocess(receiver: Receiver, rows: list[Candidate]) -> ReprocessResult:
    """Run each row's raw through the receiver, one transaction each, in the order given."""
    result = ReprocessResult()
    for c in rows:
        if c.cannot:
            result.cannot.append(c)
            continue
        inbound = Inbound(c.raw, c.peer, Door.REPROCESS, reprocess_of=c.id)
        outcome = receiver.commit([receiver.prepare(inbound)])[0]
        code = f"{outcome.code} (duplicate)" if outcome.duplicate else outcome.code
        result.by_outcome[code] += 1
        result.rows.append((c, code, outcome.message_id))
    return result
