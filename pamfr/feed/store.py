"""Reading the feed and keeping the webhook subscribers' cursors (SQLAlchemy Core).

Reads go through an engine of store.db.make_read_engine: on SQLite a read-only connection,
whose BEGIN never takes the write lock the receiver's writer needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from pamfr.store.readside import iso
from pamfr.store.schema import event, webhook_cursor

MAX_LIMIT = 1000


def as_json(row: Any) -> dict[str, Any]:
    """An event as GET /events, `pamfr events --json` and the webhooks give it."""
    return {
        "id": row["id"],
        "type": row["type"],
        "at": iso(row["at"]),
        "message_id": row["message_id"],
        "control_id": row["control_id"],
        "patient_id": row["patient_id"],
        "other_patient_id": row["other_patient_id"],
        "version_id": row["version_id"],
        "detail": json.loads(row["detail"]),
    }


def read_events(conn: Connection, after: int, limit: int) -> list[dict[str, Any]]:
    """The events after id `after`, oldest first, `limit` at most."""
    query = select(event).where(event.c.id > after).order_by(event.c.id).limit(limit)
    return [as_json(r) for r in conn.execute(query).mappings()]


def last_event_id(conn: Connection) -> int:
    return conn.execute(select(event.c.id).order_by(event.c.id.desc()).limit(1)).scalar() or 0


@dataclass(frozen=True)
class Cursor:
    name: str
    last_id: int
    failures: int
    parked_at: datetime | None
    last_error: str | None

    @property
    def parked(self) -> bool:
        return self.parked_at is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "last_id": self.last_id,
            "failures": self.failures,
            "parked_at": iso(self.parked_at) if self.parked_at else None,
            "last_error": self.last_error,
        }


def _cursor(row: Any) -> Cursor:
    return Cursor(row["name"], row["last_id"], row["failures"], row["parked_at"], row["last_error"])


def get_cursor(conn: Connection, name: str) -> Cursor | None:
    row = conn.execute(select(webhook_cursor).where(webhook_cursor.c.name == name)).mappings()
    found = row.first()
    return _cursor(found) if found is not None else None


def ensure_cursor(conn: Connection, name: str) -> Cursor:
    """The subscriber's cursor, created at the start of the feed the first time."""
    found = get_cursor(conn, name)
    if found is not None:
        return found
    now = datetime.now(UTC)
    conn.execute(insert(webhook_cursor).values(name=name, last_id=0, failures=0, updated_at=now))
    return Cursor(name, 0, 0, None, None)


def save_cursor(conn: Connection, cursor: Cursor) -> None:
    conn.execute(
        update(webhook_cursor)
        .where(webhook_cursor.c.name == cursor.name)
        .values(
            last_id=cursor.last_id,
            failures=cursor.failures,
            parked_at=cursor.parked_at,
            last_error=cursor.last_error,
            updated_at=datetime.now(UTC),
        )
    )


def all_cursors(conn: Connection) -> list[Cursor]:
    rows = conn.execute(select(webhook_cursor).order_by(webhook_cursor.c.name)).mappings()
    return [_cursor(r) for r in rows]


def unpark(conn: Connection, name: str) -> bool:
    """Deliveries to `name` start again from its cursor; False when there is no such one."""
    done = conn.execute(
        update(webhook_cursor)
        .where(webhook_cursor.c.name == name)
        .values(parked_at=None, failures=0, updated_at=datetime.now(UTC))
    )
    return done.rowcount > 0
