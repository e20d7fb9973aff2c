"""The message log: every frame received, its outcome and the ACK that answered it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select

from pamfr.store.schema import message


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """One row of the log, as written by the receiver."""

    received_at: datetime
    door: str
    peer: str
    raw: bytes
    raw_size: int
    outcome: str
    ack: bytes | None
    sending_app: str = ""
    sending_facility: str = ""
    control_id: str = ""
    message_type: str = ""
    event: str = ""
    charset: str = ""
    error_text: str | None = None
    dedup_key: str | None = None
    duplicate_of: int | None = None
    duration_ms: float | None = None


def dedup_key(sending_app: str, sending_facility: str, control_id: str) -> str | None:
    """The duplicate-control key (MSH-3, MSH-4, MSH-10); None when there is no control id."""
    if not control_id:
        return None
    return f"{sending_app}|{sending_facility}|{control_id}"


_INSERT = insert(message).returning(message.c.id)
_FIND_PROCESSED = select(message.c.id, message.c.outcome, message.c.ack).where(
    message.c.dedup_key == bindparam("key")
)


def insert_message(conn: Connection, row: LoggedMessage) -> int:
    values = {k: getattr(row, k) for k in LoggedMessage.__dataclass_fields__}
    return conn.execute(_INSERT, values).scalar_one()


def find_processed(conn: Connection, key: str) -> tuple[int, str, bytes | None] | None:
    """The (id, outcome, ack) of the message already processed under this key, if any."""
    row = conn.execute(_FIND_PROCESSED, {"key": key}).first()
    return (row.id, row.outcome, row.ack) if row else None


def find_processed_many(
    conn: Connection, keys: list[str]
) -> dict[str, tuple[int, str, bytes | None]]:
    """find_processed for a batch, in one query."""
    if not keys:
        return {}
    rows = conn.execute(
        select(message.c.dedup_key, message.c.id, message.c.outcome, message.c.ack).where(
            message.c.dedup_key.in_(keys)
        )
    )
    return {r.dedup_key: (r.id, r.outcome, r.ack) for r in rows}


def list_messages(conn: Connection, *, outcome: str | None = None, limit: int = 50) -> list[dict]:
    query = select(message).order_by(message.c.id.desc()).limit(limit)
    if outcome:
        query = query.where(message.c.outcome == outcome)
    return [dict(r) for r in conn.execute(query).mappings()]
