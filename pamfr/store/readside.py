"""The read side: a patient as the store holds it (pamfr.identity.stored.StoredIdentity, whose
as_json is what `pamfr patient show --json` prints), its history, searches.

The JSON shape is a contract that tests and other tools rely on (see README).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, and_, literal, or_, select

from pamfr.identity.identifiers import states_ins
from pamfr.identity.ins import Ins
from pamfr.identity.model import IPP_TYPE, Identifier
from pamfr.identity.names import fold
from pamfr.identity.status import ins_usable
from pamfr.identity.stored import StoredIdentity
from pamfr.store.schema import history, identifier, message, patient, patient_link


@dataclass(frozen=True, slots=True)
class Selector:
    ipp: str | None = None
    authority: str | None = None
    ins: str | None = None
    id: int | None = None


def aware(moment: datetime) -> datetime:
    """The time with its offset: SQLite gives back the stored UTC time without one."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 with its offset."""
    return aware(moment).isoformat()


def select_patient_ids(conn: Connection, sel: Selector) -> list[int]:
    if sel.id is not None:
        found = conn.execute(select(patient.c.id).where(patient.c.id == sel.id)).scalar()
        return [found] if found is not None else []
    if sel.ins is not None:
        return patients_with_ins(conn, sel.ins)
    if sel.ipp is not None:
        query = select(identifier.c.patient_id).where(
            identifier.c.value == sel.ipp, identifier.c.type == IPP_TYPE
        )
        if sel.authority:
            query = query.where(
                (identifier.c.authority_key == sel.authority)
                | (identifier.c.authority == sel.authority)
            )
        return sorted({r[0] for r in conn.execute(query)})
    return []


def patients_with_ins(conn: Connection, ins: str) -> list[int]:
    """The active patients holding this INS, a merged record standing for its survivor."""
    rows = conn.execute(
        select(patient.c.id, patient.c.active, patient.c.merged_into).where(
            patient.c.ins_value == ins.strip().upper()
        )
    )
    ids = {r.id if r.active or r.merged_into is None else r.merged_into for r in rows}
    return sorted(ids)


def stored_identity(conn: Connection, patient_id: int) -> StoredIdentity:
    """The patient as it is now, with its A24 links."""
    row = conn.execute(select(patient).where(patient.c.id == patient_id)).mappings().one()
    idents = conn.execute(
        select(identifier).where(identifier.c.patient_id == patient_id).order_by(identifier.c.id)
    ).mappings()
    return identity_of(
        row, [identifier_of(i) for i in idents], linked_patient_ids(conn, patient_id)
    )


def patient_view(conn: Connection, patient_id: int) -> dict[str, Any]:
    """The patient as `pamfr patient show --json` prints it."""
    return stored_identity(conn, patient_id).as_json()


def identifier_of(row: Mapping) -> Identifier:
    """An identifier row (the columns of `identifier`) as the patient holds it."""
    return Identifier(row["value"], row["type"], row["authority"] or "", row["oid"] or "")


def identity_of(
    row: Mapping, identifiers: Iterable[Identifier], links: Iterable[int]
) -> StoredIdentity:
    """The identity of a patient row (the columns of `patient`, times as the database gives
    them back) with its identifiers and linked patients. A stored identifier that states an INS
    (G8: a store written before the INS gate read every CX-5 type) is never shown: the
    patient's INS is its row's, kept by the gate, or none."""
    ins = Ins(row["ins_value"], row["ins_oid"]) if row["ins_value"] else None
    names = row["birth_given_names"]
    active, collision = bool(row["active"]), bool(row["ins_collision"])
    return StoredIdentity(
        id=row["id"],
        active=active,
        merged_into=row["merged_into"],
        identifiers=tuple(i for i in identifiers if not states_ins(i)),
        ins=ins,
        ins_usable=bool(ins) and ins_usable(row["status"], active, collision),
        ins_collision=collision,
        birth_name=row["birth_name"],
        first_given_name=row["first_given_name"],
        birth_given_names=tuple(names.split(" ")) if names else (),
        used_name=row["used_name"],
        used_given_name=row["used_given_name"],
        birth_date=row["birth_date"],
        sex=row["sex"],
        birth_place_insee=row["birth_place_insee"],
        status=row["status"],
        attributes=tuple(row["attributes"].split()) if row["attributes"] else (),
        other_status_codes=tuple(row["other_status_codes"].split())
        if row["other_status_codes"]
        else (),
        identity_mode=row["identity_mode"],
        insi_query_date=row["insi_query_date"],
        identity_document=row["identity_document"],
        links=tuple(links),
        created_at=aware(row["created_at"]),
        updated_at=aware(row["updated_at"]),
    )


def patient_history(conn: Connection, patient_id: int) -> list[dict]:
    rows = conn.execute(
        select(history).where(history.c.patient_id == patient_id).order_by(history.c.id)
    ).mappings()
    return [
        {
            "at": iso(r["at"]),
            "event": r["event"],
            "operation": r["operation"],
            "control_id": r["control_id"],
            "message_id": r["message_id"],
            "changes": json.loads(r["changes"]),
            "notes": json.loads(r["notes"]) if r["notes"] else [],
        }
        for r in rows
    ]


def find_patients(
    conn: Connection,
    *,
    name: str | None = None,
    birth_date: str | None = None,
    ins: str | None = None,
    limit: int = 100,
) -> list[int]:
    query = select(patient.c.id).order_by(patient.c.id).limit(limit)
    key = fold(name)
    if key:  # folded as FHIR's string search folds (HÉLÈNE finds Hélène and helene)
        query = query.where(
            patient.c.birth_name_key.contains(key, autoescape=True)
            | patient.c.used_name_key.contains(key, autoescape=True)
        )
    if birth_date:
        query = query.where(patient.c.birth_date == birth_date)
    if ins:  # the active survivors holding it
        query = query.where(patient.c.id.in_(patients_with_ins(conn, ins)))
    return [r[0] for r in conn.execute(query)]


def ins_collisions(conn: Connection) -> list[tuple[str, list[int]]]:
    """The INS held by more than one active patient, with those patients: the list the
    identity-vigilance team works through until a merge or an INS deletion resolves it."""
    rows = conn.execute(
        select(patient.c.ins_value, patient.c.id)
        .where(patient.c.ins_collision.is_(True), patient.c.active.is_(True))
        .order_by(patient.c.ins_value, patient.c.id)
    )
    found: dict[str, list[int]] = {}
    for value, pid in rows:
        found.setdefault(value, []).append(pid)
    return list(found.items())


def linked_patient_ids(conn: Connection, patient_id: int) -> list[int]:
    """The patients linked to this one (A24), each as its survivor. Links are kept by
    identifier: those of the records merged into this patient are its links too."""
    merged = [
        r[0] for r in conn.execute(select(patient.c.id).where(patient.c.merged_into == patient_id))
    ]
    ipps = conn.execute(
        select(identifier.c.authority_key, identifier.c.value).where(
            identifier.c.patient_id.in_([patient_id, *merged]), identifier.c.type == IPP_TYPE
        )
    ).all()
    others: list[tuple[str, str]] = []
    for key, value in ipps:
        rows = conn.execute(
            select(patient_link).where(
                or_(
                    and_(patient_link.c.a_authority_key == key, patient_link.c.a_value == value),
                    and_(patient_link.c.b_authority_key == key, patient_link.c.b_value == value),
                )
            )
        ).mappings()
        for r in rows:
            if (r["a_authority_key"], r["a_value"]) == (key, value):
                others.append((r["b_authority_key"], r["b_value"]))
            else:
                others.append((r["a_authority_key"], r["a_value"]))
    ids: set[int] = set()
    for key, value in others:
        row = conn.execute(
            select(patient.c.id, patient.c.merged_into)
            .join(identifier, identifier.c.patient_id == patient.c.id)
            .where(
                identifier.c.authority_key == key,
                identifier.c.value == value,
                identifier.c.type == IPP_TYPE,
            )
        ).first()
        if row is not None:
            ids.add(row.merged_into if row.merged_into is not None else row.id)
    ids.discard(patient_id)
    return sorted(ids)


def all_patient_ids(conn: Connection) -> list[int]:
    return [r[0] for r in conn.execute(select(patient.c.id).order_by(patient.c.id))]


# -- the message log -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """What `pamfr messages` selects; every criterion given must hold."""

    outcome: str | None = None
    since: datetime | None = None  # received at or after (aware)
    until: datetime | None = None  # received before (aware)
    sending_app: str | None = None
    sending_facility: str | None = None
    control_id: str | None = None
    ipp: str | None = None  # messages with a history row of a patient holding this IPP
    err_code: str | None = None
    warnings: bool = False  # AA with warnings
    event: str | None = None  # MSH-9.2 (A28...)
    limit: int = 20
    offset: int = 0  # rows skipped, newest first (a page of the desk)


def _moment(conn: Connection, moment: datetime) -> datetime:
    """A bound for received_at: SQLite keeps UTC times without their offset."""
    utc = moment.astimezone(UTC)
    return utc.replace(tzinfo=None) if conn.dialect.name == "sqlite" else utc


def message_log(conn: Connection, f: MessageFilter) -> list[dict]:
    """Rows of the message log, newest first."""
    query = select(message).order_by(message.c.id.desc()).limit(f.limit).offset(f.offset)
    if f.outcome:
        query = query.where(message.c.outcome == f.outcome)
    if f.since is not None:
        query = query.where(message.c.received_at >= _moment(conn, f.since))
    if f.until is not None:
        query = query.where(message.c.received_at < _moment(conn, f.until))
    if f.sending_app is not None:
        query = query.where(message.c.sending_app == f.sending_app)
    if f.sending_facility is not None:
        query = query.where(message.c.sending_facility == f.sending_facility)
    if f.control_id is not None:
        query = query.where(message.c.control_id == f.control_id)
    if f.event is not None:
        query = query.where(message.c.event == f.event)
    if f.ipp is not None:
        holders = select(identifier.c.patient_id).where(
            identifier.c.value == f.ipp, identifier.c.type == IPP_TYPE
        )
        touched = select(history.c.message_id).where(history.c.patient_id.in_(holders))
        query = query.where(message.c.id.in_(touched))
    if f.err_code is not None:
        spaced = literal(" ") + message.c.err_codes + literal(" ")
        query = query.where(spaced.like(f"% {f.err_code} %"))
    if f.warnings:
        query = query.where(
            message.c.outcome == "AA", message.c.warnings.is_not(None), message.c.warnings != ""
        )
    return [dict(r) for r in conn.execute(query).mappings()]
