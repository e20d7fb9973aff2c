"""The identity-vigilance worklists: potential doublons (and the "not a doublon" decisions),
provisional identities left so, INS removed lately, refusals per sender."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, func, insert, or_, select
from sqlalchemy.exc import IntegrityError

from pamfr.identity.doublons import Candidate, doublon_key, doublon_pairs
from pamfr.identity.model import IPP_TYPE
from pamfr.store.schema import (
    doublon_decision,
    history,
    identifier,
    message,
    patient,
    patient_link,
)

INS_REMOVAL_FINDINGS = ("ins-removed", "ins-deleted", "ins-replaced")


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bound(conn: Connection, moment: datetime) -> datetime:
    """A time bound as the dialect stores it (SQLite: naive UTC)."""
    return moment.replace(tzinfo=None) if conn.dialect.name == "sqlite" else moment


def _linked_pairs(conn: Connection) -> set[tuple[int, int]]:
    """Pairs of patients (smaller id first) linked by an A24: not doublons of each other.
    Links are kept between IPPs (few rows): their owners are then found by IPP value. An IPP
    of a patient merged into another stands for its survivor (the link is read there, as
    rules.link_notes says), so a link outlives the merge of either side."""
    links = conn.execute(
        select(
            patient_link.c.a_authority_key,
            patient_link.c.a_value,
            patient_link.c.b_authority_key,
            patient_link.c.b_value,
        )
    ).all()
    values = sorted({v for link in links for v in (link[1], link[3])})
    owner: dict[tuple[str, str], int] = {}
    for start in range(0, len(values), 500):
        query = select(
            identifier.c.authority_key,
            identifier.c.value,
            identifier.c.patient_id,
            patient.c.merged_into,
        ).join(patient, patient.c.id == identifier.c.patient_id)
        query = query.where(
            identifier.c.value.in_(values[start : start + 500]), identifier.c.type == IPP_TYPE
        )
        # merged_into is the final survivor: merges keep chains flat
        owner.update({(k, v): into or pid for k, v, pid, into in conn.execute(query)})
    pairs = set()
    for a_key, a_value, b_key, b_value in links:
        a, b = owner.get((a_key, a_value)), owner.get((b_key, b_value))
        if a is not None and b is not None and a != b:
            pairs.add((min(a, b), max(a, b)))
    return pairs


_DOUBLON_TRAITS = (
    "SELECT id, birth_name, birth_given_names, first_given_name, birth_date, sex FROM patient"
    " WHERE active AND birth_name IS NOT NULL AND birth_date IS NOT NULL AND sex IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class Decision:
    patient_a: int
    patient_b: int
    decided_by: str
    decided_at: datetime
    reason: str


def doublon_decisions(conn: Connection) -> list[Decision]:
    rows = conn.execute(select(doublon_decision).order_by(doublon_decision.c.id.desc()))
    return [
        Decision(r.patient_a, r.patient_b, r.decided_by, _utc(r.decided_at), r.reason) for r in rows
    ]


def potential_doublons(conn: Connection) -> list[tuple[int, int]]:
    """Active patients, neither linked nor decided "not a doublon", sharing the doublon key
    (pamfr/identity/doublons.py): the pairs, smaller id first."""
    return still_doublons(conn, pairs_by_key(conn))


def pairs_by_key(conn: Connection) -> list[tuple[int, int]]:
    """The pairs of active patients sharing the doublon key: the part of the rule that reads
    every identity (the desk keeps it a few minutes; still_doublons is applied each time)."""
    # on the DB-API cursor: SQLAlchemy's row objects would cost more than the rule itself
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute(_DOUBLON_TRAITS)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    return doublon_pairs(Candidate(r[0], doublon_key(r[1], r[2], r[3], r[4], r[5])) for r in rows)


def _decided_pairs(conn: Connection) -> set[tuple[int, int]]:
    """The pairs decided "not a doublon", each side read as its survivor: a patient merged
    into another is that other one, who is no more the same person as the other side."""
    decided = [(d.patient_a, d.patient_b) for d in doublon_decisions(conn)]
    ids = sorted({pid for pair in decided for pid in pair})
    survivor: dict[int, int] = {}
    for start in range(0, len(ids), 500):
        query = select(patient.c.id, patient.c.merged_into).where(
            patient.c.id.in_(ids[start : start + 500]), patient.c.merged_into.is_not(None)
        )
        survivor.update({pid: into for pid, into in conn.execute(query)})
    pairs = set()
    for a, b in decided:
        a, b = survivor.get(a, a), survivor.get(b, b)
        if a != b:
            pairs.add((min(a, b), max(a, b)))
    return pairs


def still_doublons(conn: Connection, pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The pairs whose two patients are still active, not linked, and not decided "not a
    doublon"."""
    if not pairs:
        return []
    excluded = _linked_pairs(conn) | _decided_pairs(conn)
    ids = sorted({pid for pair in pairs for pid in pair})
    active: set[int] = set()
    for start in range(0, len(ids), 500):
        # by primary key; "active IS 1" in the WHERE would lead SQLite to the status index
        query = select(patient.c.id, patient.c.active).where(
            patient.c.id.in_(ids[start : start + 500])
        )
        active.update(pid for pid, is_active in conn.execute(query) if is_active)
    return [p for p in pairs if p not in excluded and p[0] in active and p[1] in active]


class DecisionExists(Exception):
    """The pair already has a decision."""


def record_not_doublon(engine: Engine, a: int, b: int, by: str, reason: str) -> None:
    """Record that patients a and b are not one person (its own transaction)."""
    a, b = min(a, b), max(a, b)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(doublon_decision).values(
                    patient_a=a,
                    patient_b=b,
                    decided_by=by,
                    decided_at=datetime.now(UTC),
                    reason=reason,
                )
            )
    except IntegrityError:
        raise DecisionExists(f"patients {a} and {b} already have a decision") from None


def provisional_older_than(conn: Connection, days: int, limit: int = 500) -> list[dict]:
    """Active identities still provisional, created more than `days` days ago, oldest first."""
    before = _bound(conn, datetime.now(UTC) - timedelta(days=days))
    query = (
        select(patient.c.id, patient.c.created_at)
        .where(
            patient.c.active.is_(True),
            patient.c.status == "provisoire",
            patient.c.created_at < before,
        )
        .order_by(patient.c.created_at, patient.c.id)
        .limit(limit)
    )
    return [{"patient_id": r.id, "created_at": _utc(r.created_at)} for r in conn.execute(query)]


def ins_removed_since(conn: Connection, days: int = 30, limit: int = 500) -> list[dict]:
    """History rows of the last `days` days that removed an INS, newest first, with why."""
    since = _bound(conn, datetime.now(UTC) - timedelta(days=days))
    query = (
        select(history)
        .where(
            history.c.at >= since,
            or_(*(history.c.notes.like(f'%"{f}"%') for f in INS_REMOVAL_FINDINGS)),
        )
        .order_by(history.c.id.desc())
        .limit(limit)
    )
    found = []
    for r in conn.execute(query).mappings():
        notes = [n for n in json.loads(r["notes"]) if n.get("finding") in INS_REMOVAL_FINDINGS]
        found.append(
            {
                "patient_id": r["patient_id"],
                "at": _utc(r["at"]),
                "message_id": r["message_id"],
                "control_id": r["control_id"],
                "event": r["event"],
                "finding": notes[0]["finding"],
                "why": notes[0].get("text", ""),
            }
        )
    return found


def refusals_per_sender(conn: Connection, days: int = 7) -> list[dict]:
    """AE and AR answers of the last `days` days per sender (MSH-3|MSH-4), most first."""
    since = _bound(conn, datetime.now(UTC) - timedelta(days=days))
    query = (
        select(
            message.c.sending_app,
            message.c.sending_facility,
            message.c.outcome,
            func.count(),
            func.max(message.c.received_at),
        )
        .where(message.c.outcome.in_(("AE", "AR")), message.c.received_at >= since)
        .group_by(message.c.sending_app, message.c.sending_facility, message.c.outcome)
        .order_by(func.count().desc())
    )
    return [
        {
            "sender": f"{app}|{facility}" if facility else app or "-",
            "outcome": outcome,
            "count": count,
            "last": _utc(last),
        }
        for app, facility, outcome, count, last in conn.execute(query)
    ]


def patient_summaries(conn: Connection, ids: list[int]) -> dict[int, dict]:
    """What a worklist row shows of each patient (traits, status, badges, IPPs), in two
    queries whatever the number of patients: {id: {...}} with patient_view's keys."""
    found: dict[int, dict] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for r in conn.execute(select(patient).where(patient.c.id.in_(chunk))).mappings():
            found[r["id"]] = {
                "id": r["id"],
                "active": bool(r["active"]),
                "merged_into": r["merged_into"],
                "birth_name": r["birth_name"],
                "first_given_name": r["first_given_name"],
                "birth_date": r["birth_date"],
                "sex": r["sex"],
                "status": r["status"],
                "attributes": r["attributes"].split() if r["attributes"] else [],
                "ins_collision": bool(r["ins_collision"]),
                "identifiers": [],
            }
        query = select(identifier.c.patient_id, identifier.c.value, identifier.c.type).where(
            identifier.c.patient_id.in_(chunk), identifier.c.type == IPP_TYPE
        )
        for pid, value, kind in conn.execute(query.order_by(identifier.c.id)):
            found[pid]["identifiers"].append({"value": value, "type": kind})
    return found
