"""What the FHIR read API asks of the store: the patients a search selects, and each
patient's versions, rebuilt from its history rows.

Versions (the convention the change feed shares): a patient's versionId is the id of the
message log row (patient_history.message_id) that last changed it; there is one version per
message that changed the identity (a history row whose `changes` is not empty), and its
lastUpdated is that row's `at`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, false, func, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from pamfr.identity.ins import INS_OIDS
from pamfr.identity.model import Status
from pamfr.store.readside import iso, linked_patient_ids, patient_view, view_of
from pamfr.store.schema import authority, history, identifier, patient

NO_CHANGE = "{}"
_OID = re.compile(r"[0-2](\.[0-9]+)+")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction: every query of a request sees the same snapshot."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        with conn.begin():
            yield conn


# -- search ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentifierCriterion:
    """identifier=[system|]value, the system already read: by OID (an INS authority or an
    assigning authority), by namespace (an authority without OID), or none (any)."""

    value: str
    oid: str | None = None
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class PatientCriteria:
    """Every criterion given must hold; None: not asked."""

    ids: tuple[int, ...] | None = None
    identifier: IdentifierCriterion | None = None
    family: str | None = None
    given: str | None = None
    birth_date: str | None = None  # YYYY, YYYY-MM or YYYY-MM-DD
    sexes: tuple[str, ...] | None = None
    active: bool | None = None
    matches_nothing: bool = False  # an identifier system this store never emits


def _usable_ins() -> ColumnElement[bool]:
    """The INS shown on a resource: a qualified, active identity not in collision."""
    return and_(
        patient.c.status == Status.QUALIFIEE.value,
        patient.c.active.is_(True),
        patient.c.ins_collision.is_(False),
    )


def _identifier_clause(c: IdentifierCriterion) -> ColumnElement[bool]:
    value = c.value.strip()
    if c.oid is not None and c.oid in INS_OIDS:
        return and_(patient.c.ins_value == value.upper(), patient.c.ins_oid == c.oid, _usable_ins())
    holders = select(identifier.c.patient_id).where(
        identifier.c.value == value, identifier.c.type != "INS"
    )
    if c.oid is not None:
        holders = holders.where(or_(identifier.c.oid == c.oid, identifier.c.authority_key == c.oid))
        return patient.c.id.in_(holders)
    if c.namespace is not None:
        holders = holders.where(identifier.c.authority == c.namespace, identifier.c.oid == "")
        return patient.c.id.in_(holders)
    return or_(patient.c.id.in_(holders), and_(patient.c.ins_value == value.upper(), _usable_ins()))


def _starts(column, text: str) -> ColumnElement[bool]:
    return func.lower(column).startswith(text.lower(), autoescape=True)


def _where(c: PatientCriteria) -> list[ColumnElement[bool]]:
    if c.matches_nothing:
        return [false()]
    clauses: list[ColumnElement[bool]] = []
    if c.ids is not None:
        clauses.append(patient.c.id.in_(c.ids))
    if c.identifier is not None:
        clauses.append(_identifier_clause(c.identifier))
    if c.family:
        clauses.append(
            or_(_starts(patient.c.birth_name, c.family), _starts(patient.c.used_name, c.family))
        )
    if c.given:
        word = c.given.lower()
        clauses.append(
            or_(
                _starts(patient.c.first_given_name, c.given),
                _starts(patient.c.used_given_name, c.given),
                _starts(patient.c.birth_given_names, c.given),
                func.lower(patient.c.birth_given_names).contains(" " + word, autoescape=True),
            )
        )
    if c.birth_date:
        clauses.append(
            or_(
                patient.c.birth_date == c.birth_date,
                patient.c.birth_date.startswith(c.birth_date + "-", autoescape=True),
            )
        )
    if c.sexes is not None:
        clauses.append(patient.c.sex.in_(c.sexes))
    if c.active is not None:
        clauses.append(patient.c.active.is_(true() if c.active else false()))
    return clauses


def search_patients(
    conn: Connection, criteria: PatientCriteria, *, after: int | None, limit: int
) -> list[int]:
    """The ids of the patients selected, in id order, after `after` (the page's cursor)."""
    query = select(patient.c.id).where(*_where(criteria)).order_by(patient.c.id).limit(limit)
    if after is not None:
        query = query.where(patient.c.id > after)
    return [r[0] for r in conn.execute(query)]


def count_patients(conn: Connection, criteria: PatientCriteria) -> int:
    query = select(func.count()).select_from(patient).where(*_where(criteria))
    return conn.execute(query).scalar_one()


# -- versions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatientVersion:
    """One version of a patient: patient_view's shape as it was after one message."""

    view: dict[str, Any]
    replaces: tuple[int, ...]  # the records merged into this one
    version_id: str  # the message log id (str); "0" for a patient with no history row
    last_updated: str  # ISO 8601 with offset
    created: bool = False  # the version that created the patient


@dataclass
class _Step:
    message_id: int
    at: str
    operations: list[str] = field(default_factory=list)
    changes: dict[str, list] = field(default_factory=dict)  # field: [old, new] over the step


def _merged_ids(conn: Connection, patient_id: int) -> tuple[int, ...]:
    rows = conn.execute(
        select(patient.c.id).where(patient.c.merged_into == patient_id).order_by(patient.c.id)
    )
    return tuple(r[0] for r in rows)


def _steps(conn: Connection, patient_id: int) -> list[_Step]:
    """The messages that changed the patient, oldest first; several rows of one message
    (a merge that also re-points) make one step."""
    rows = conn.execute(
        select(history.c.message_id, history.c.at, history.c.operation, history.c.changes)
        .where(history.c.patient_id == patient_id, history.c.changes != NO_CHANGE)
        .order_by(history.c.id)
    )
    steps: dict[int, _Step] = {}
    for message_id, at, operation, changes in rows:
        step = steps.setdefault(message_id, _Step(message_id, iso(at)))
        step.at = iso(at)
        step.operations.append(operation)
        for name, (old, new) in json.loads(changes).items():
            if name in step.changes:
                step.changes[name][1] = new
            else:
                step.changes[name] = [old, new]
    return [s for s in steps.values() if s.changes]


def _exists(conn: Connection, patient_id: int) -> bool:
    found = conn.execute(select(patient.c.id).where(patient.c.id == patient_id)).scalar()
    return found is not None


def current_version(conn: Connection, patient_id: int) -> PatientVersion | None:
    """The patient as it is now, with the version that made it so; None if unknown."""
    if not _exists(conn, patient_id):
        return None
    last = conn.execute(
        select(history.c.message_id, history.c.at)
        .where(history.c.patient_id == patient_id, history.c.changes != NO_CHANGE)
        .order_by(history.c.id.desc())
        .limit(1)
    ).first()
    view = patient_view(conn, patient_id)
    first_message = conn.execute(
        select(func.min(history.c.message_id)).where(
            history.c.patient_id == patient_id, history.c.changes != NO_CHANGE
        )
    ).scalar()
    if last is None:
        return PatientVersion(view, _merged_ids(conn, patient_id), "0", view["updated_at"], True)
    return PatientVersion(
        view,
        _merged_ids(conn, patient_id),
        str(last.message_id),
        iso(last.at),
        created=first_message == last.message_id,
    )


def patient_versions(conn: Connection, patient_id: int) -> list[PatientVersion] | None:
    """Every version of the patient, oldest first (the last one is the patient as it is
    now); None if unknown.

    A past version is the current row with each field set to what the history says it was
    then: the new value of the latest change up to that message, else the old value of the
    first change after it."""
    current = current_version(conn, patient_id)
    if current is None:
        return None
    steps = _steps(conn, patient_id)
    if not steps:
        return [current]
    row = dict(conn.execute(select(patient).where(patient.c.id == patient_id)).mappings().one())
    idents = conn.execute(
        select(identifier).where(identifier.c.patient_id == patient_id).order_by(identifier.c.id)
    ).mappings()
    now_idents = [_ident_text(i) for i in idents]
    resolve = _AuthorityResolver(conn, patient_id, steps)
    links = linked_patient_ids(conn, patient_id)
    versions: list[PatientVersion] = []
    for k, step in enumerate(steps):
        if k == len(steps) - 1:
            versions.append(
                PatientVersion(
                    current.view,
                    current.replaces,
                    current.version_id,
                    current.last_updated,
                    created=k == 0,
                )
            )
            break
        state: dict[str, Any] = {
            **row,
            "identifiers": now_idents,
            "merged_patients": list(current.replaces),
        }
        for name in {n for s in steps for n in s.changes}:
            before = [s.changes[name][1] for s in steps[: k + 1] if name in s.changes]
            after = [s.changes[name][0] for s in steps[k + 1 :] if name in s.changes]
            if before:
                state[name] = before[-1]
            elif after:
                state[name] = after[0]
        for column in ("attributes", "other_status_codes"):
            state[column] = state[column] or ""
        state["status"] = state["status"] or Status.PROVISOIRE.value
        identifiers = [resolve(text) for text in state["identifiers"] or []]
        view = view_of(state, identifiers, links)
        if view.get("ins_usable") and _in_collision_now(conn, view.get("ins")):
            # An INS another active patient now holds too is usable on neither: no version
            # serves it, lest a product reading the history take it up again. (An INS later
            # replaced or withdrawn stays in the versions it was in force for.)
            view = {**view, "ins_usable": False}
        merged = tuple(sorted(int(i) for i in state["merged_patients"] or []))
        versions.append(PatientVersion(view, merged, str(step.message_id), step.at, created=k == 0))
    return versions


def _in_collision_now(conn: Connection, ins: Any) -> bool:
    value = ins.get("value") if isinstance(ins, dict) else ins
    if not value:
        return False
    found = select(patient.c.id).where(
        patient.c.ins_value == value, patient.c.active.is_(True), patient.c.ins_collision.is_(True)
    )
    return conn.execute(found.limit(1)).first() is not None


def _ident_text(row) -> str:
    """As the history writes identifiers: value^type^authority_key."""
    return f"{row['value']}^{row['type']}^{row['authority_key']}"


class _AuthorityResolver:
    """Turns a history identifier (value^type^authority_key) back into {value, type,
    authority, oid}: the authority_key is the OID when there was one, else the namespace."""

    def __init__(self, conn: Connection, patient_id: int, steps: list[_Step]) -> None:
        keys: set[str] = set()
        for step in steps:
            for side in step.changes.get("identifiers", ()):
                keys.update(t.rsplit("^", 2)[-1] for t in side or ())
        self.known: dict[str, tuple[str, str]] = {}
        if keys:
            rows = conn.execute(
                select(identifier.c.authority_key, identifier.c.authority, identifier.c.oid)
                .where(identifier.c.authority_key.in_(keys))
                .distinct()
            )
            for key, ns, oid in rows:
                self.known.setdefault(key, (ns, oid))
            for ns, oid in conn.execute(
                select(authority.c.namespace, authority.c.oid).where(authority.c.oid.in_(keys))
            ):
                self.known.setdefault(oid, (ns, oid))

    def __call__(self, text: str) -> dict[str, Any]:
        value, kind, key = text.rsplit("^", 2)
        if key in self.known:
            ns, oid = self.known[key]
        elif _OID.fullmatch(key):
            ns, oid = "", key
        else:
            ns, oid = key, ""
        return {"value": value, "type": kind, "authority": ns, "oid": oid or None}


def find_version(conn: Connection, patient_id: int, version_id: str) -> PatientVersion | None:
    for version in patient_versions(conn, patient_id) or []:
        if version.version_id == version_id:
            return version
    return None
