"""The message log: every frame received, its outcome and the ACK that answered it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Executable, bindparam, insert, select, update

from pamfr.store import pgpipeline
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
    warnings: str | None = None  # the ERRs of severity W, "code place: text; ..."
    err_codes: str | None = None  # every ERR code of the ACK, space separated
    content_sha256: str | None = None
    reprocess_of: int | None = None


def dedup_key(sending_app: str, sending_facility: str, control_id: str) -> str | None:
    """The duplicate-control key (MSH-3, MSH-4, MSH-10); None when there is no control id."""
    if not control_id:
        return None
    return f"{sending_app}|{sending_facility}|{control_id}"


_INSERT = insert(message).returning(message.c.id)
_INSERT_IDENTIFIED = insert(message)
_INSERT_MANY = insert(message).returning(message.c.id, sort_by_parameter_order=True)


_PROCESSED_COLUMNS = (
    message.c.dedup_key,
    message.c.id,
    message.c.outcome,
    message.c.ack,
    message.c.content_sha256,
)
_FIND_PROCESSED_IN = select(*_PROCESSED_COLUMNS).where(
    message.c.dedup_key.in_(bindparam("keys", expanding=True))
)
_FIND_PROCESSED_KEY = select(*_PROCESSED_COLUMNS).where(message.c.dedup_key == bindparam("key"))


def message_writes(
    rows: list[LoggedMessage], ids: list[int]
) -> list[tuple[Executable, list[dict]]]:
    """The insert of log rows whose ids are already known (see pgpipeline.NEXT_IDS)."""
    values = [
        {"id": i, **{k: getattr(row, k) for k in LoggedMessage.__dataclass_fields__}}
        for row, i in zip(rows, ids, strict=True)
    ]
    return [(_INSERT_IDENTIFIED, values)]


def insert_messages(conn: Connection, rows: list[LoggedMessage]) -> list[int]:
    """Log rows; their ids, in the order of `rows`. One statement on PostgreSQL; one per row
    on SQLite, where SQLAlchemy cannot keep RETURNING in the order of the rows."""
    values = [{k: getattr(row, k) for k in LoggedMessage.__dataclass_fields__} for row in rows]
    if len(values) == 1:
        return [conn.execute(_INSERT, values[0]).scalar_one()]
    return list(conn.execute(_INSERT_MANY, values).scalars())


def release_keys(conn: Connection, ids: list[int]) -> None:
    """Take the duplicate-control key off these rows: a reprocess's final outcome holds it."""
    if ids:
        conn.execute(update(message).where(message.c.id.in_(ids)).values(dedup_key=None))


@dataclass(frozen=True, slots=True)
class Processed:
    """The message already processed under a duplicate-control key."""

    id: int
    outcome: str
    ack: bytes | None
    content_sha256: str | None  # None for messages logged before it was recorded

    def same_content(self, digest: str | None) -> bool:
        return self.content_sha256 is None or digest is None or self.content_sha256 == digest


def find_processed(conn: Connection, keys: list[str]) -> dict[str, Processed]:
    """The messages already processed under these duplicate-control keys: one query on
    SQLite, one round trip on PostgreSQL."""
    if not keys:
        return {}
    if conn.dialect.name != "postgresql":
        return processed_from(conn.execute(_FIND_PROCESSED_IN, {"keys": keys}).mappings())
    if pgpipeline.supported():
        found = pgpipeline.read(conn, processed_queries(keys))
    else:
        found = [
            conn.execute(stmt, params).mappings().all() for stmt, params in processed_queries(keys)
        ]
    return processed_from(row for rows in found for row in rows)


def processed_queries(keys: list[str]) -> list[tuple[Executable, dict]]:
    """find_processed as PostgreSQL statements to send together, one equality look-up a
    key; see processed_from. The server plans a statement it keeps prepared once, maybe while
    the log is young and has no statistics, and keeps that plan until the next ANALYZE: for
    "IN ($1, $2, $3)" or "= ANY($1)" that was a scan of the whole table, where each equality
    look-up uses the unique index."""
    return [(_FIND_PROCESSED_KEY, {"key": key}) for key in keys]


def processed_from(rows: Iterable[Mapping]) -> dict[str, Processed]:
    return {
        r["dedup_key"]: Processed(r["id"], r["outcome"], r["ack"], r["content_sha256"])
        for r in rows
    }
