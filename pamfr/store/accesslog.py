"""The desk's access log: who saw or changed what, by token name and internal ids only."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, insert, select

from pamfr.store.schema import desk_access


def record_access(
    engine: Engine,
    token_name: str,
    action: str,
    *,
    patient_id: int | None = None,
    message_id: int | None = None,
    detail: str = "",
) -> None:
    """One row, in its own transaction: the access is kept even if what follows fails."""
    with engine.begin() as conn:
        conn.execute(
            insert(desk_access).values(
                at=datetime.now(UTC),
                token_name=token_name,
                action=action,
                patient_id=patient_id,
                message_id=message_id,
                detail=detail[:255],
            )
        )


def access_rows(conn: Connection, limit: int = 100) -> list[dict]:
    """The latest rows, newest first."""
    query = select(desk_access).order_by(desk_access.c.id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]
