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


def record_patients(
    engine: Engine, token_name: str, action: str, patient_ids: list[int], detail: str = ""
) -> None:
    """One row per patient shown (one row without a patient when none was), in one
    transaction: a search's answer names its patients."""
    at = datetime.now(UTC)
    rows = [
        {"at": at, "token_name": token_name, "action": action, "patient_id": pid}
        for pid in patient_ids
    ] or [{"at": at, "token_name": token_name, "action": action, "patient_id": None}]
    with engine.begin() as conn:
        conn.execute(
            insert(desk_access), [{**r, "message_id": None, "detail": detail[:255]} for r in rows]
        )


def access_rows(conn: Connection, limit: int = 100) -> list[dict]:
    """The latest rows, newest first."""
    query = select(desk_access).order_by(desk_access.c.id.desc()).limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]
