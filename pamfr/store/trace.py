"""INS traceability: every INS state an identity went through, from its history, with the
message that set it and why it was removed (what an INS audit asks a consumer to show)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from pamfr.store.schema import history, message

# The columns of an INS state, as the history's changes name them.
INS_FIELDS = (
    "ins_value",
    "ins_oid",
    "status",
    "identity_mode",
    "insi_query_date",
    "identity_document",
)
REMOVAL_FINDINGS = ("ins-removed", "ins-deleted", "ins-replaced")
TRACE_COLUMNS = (
    "patient_id",
    "at",
    "ins",
    "oid",
    "status",
    "identity_mode",
    "insi_query_date",
    "identity_document",
    "message_id",
    "control_id",
    "event",
    "removed_why",
)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ins_trace(
    conn: Connection,
    patient_ids: list[int],
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict]:
    """One row per change of an INS state of these patients (TRACE_COLUMNS), oldest first;
    `since`/`until` (aware) keep the rows of that time range."""
    query = (
        select(history, message.c.received_at)
        .join(message, message.c.id == history.c.message_id)
        .where(history.c.patient_id.in_(patient_ids))
        .order_by(history.c.patient_id, history.c.id)
    )
    rows: list[dict] = []
    state: dict[int, dict] = {}
    for r in conn.execute(query).mappings():
        changes = json.loads(r["changes"])
        notes = json.loads(r["notes"]) if r["notes"] else []
        removal = [n for n in notes if n.get("finding") in REMOVAL_FINDINGS]
        current = state.setdefault(r["patient_id"], dict.fromkeys(INS_FIELDS))
        touched = [f for f in INS_FIELDS if f in changes]
        if not touched and not removal:
            continue
        for f in touched:
            current[f] = changes[f][1]
        at = _utc(r["received_at"] or r["at"])
        if (since and at < since) or (until and at >= until):
            continue
        rows.append(
            {
                "patient_id": r["patient_id"],
                "at": at.isoformat(),
                "ins": current["ins_value"],
                "oid": current["ins_oid"],
                "status": current["status"],
                "identity_mode": current["identity_mode"],
                "insi_query_date": current["insi_query_date"],
                "identity_document": current["identity_document"],
                "message_id": r["message_id"],
                "control_id": r["control_id"],
                "event": r["event"],
                "removed_why": "; ".join(f"{n['finding']}: {n.get('text', '')}" for n in removal)
                or None,
            }
        )
    return rows


def patients_changed_since(conn: Connection, since: datetime) -> list[int]:
    """The patients with a history row at or after `since` (aware)."""
    bound = since.astimezone(UTC).replace(tzinfo=None) if conn.dialect.name == "sqlite" else since
    query = select(history.c.patient_id).distinct().where(history.c.at >= bound)
    return sorted(r[0] for r in conn.execute(query))
