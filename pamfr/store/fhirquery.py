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
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, Engine, and_, false, func, or_, select, true
from sqlalchemy.sql.elements import ColumnElement

from pamfr.identity.findings import Finding
from pamfr.identity.identifiers import BILLING_NIR_TYPE, INS_NAMESPACES, INS_TYPES
from pamfr.identity.ins import INS_OIDS
from pamfr.identity.model import Identifier, IdentifierRef, Status
from pamfr.identity.stored import StoredIdentity
from pamfr.store.readside import identifier_of, identity_of, iso
from pamfr.store.schema import authority, history, identifier, patient

NO_CHANGE = "{}"
DELETED = Finding.INS_DELETED.value
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
    """One token of identifier=: `system` already read into what it designates (an INS
    authority, a billing NIR system, an assigning authority's key) or None (a value alone:
    any system); `value` None is `system|` (any value of it)."""

    value: str | None
    kind: str = "any"  # any, ins (oid), nss (oid of the NH as stored), key (authority_key)
    key: str | None = None


@dataclass(frozen=True, slots=True)
class PatientCriteria:
    """Every criterion given must hold; None: not asked. `identifiers` are OR'd (comma)."""

    ids: tuple[int, ...] | None = None
    identifiers: tuple[IdentifierCriterion, ...] | None = None
    family: str | None = None  # folded (pamfr.identity.names.fold)
    given: str | None = None  # folded
    name: str | None = None  # folded
    birth_date: str | None = None  # YYYY, YYYY-MM or YYYY-MM-DD
    sexes: tuple[str, ...] | None = None
    active: bool | None = None


def _usable_ins() -> ColumnElement[bool]:
    """The INS shown on a resource: a qualified, active identity not in collision."""
    return and_(
        patient.c.status == Status.QUALIFIEE.value,
        patient.c.active.is_(True),
        patient.c.ins_collision.is_(False),
    )


# The identifier types a resource shows under their authority's own system (pamfr.fhir.patient:
# the INS is the patient row's, an NH only as a billing NIR).
_SHOWN_AS_STORED = identifier.c.type.not_in(("INS", "NH"))
# A stored identifier that states an INS (G8; written by a store older than the gate's reading
# of every CX-5 type) is never shown, so never found either.
_NOT_AN_INS = and_(
    identifier.c.type.not_in(sorted(INS_TYPES)),
    or_(
        identifier.c.type == BILLING_NIR_TYPE,
        and_(
            identifier.c.oid.not_in(list(INS_OIDS)),
            func.upper(identifier.c.authority).not_in(sorted(INS_NAMESPACES)),
        ),
    ),
)


def _identifier_clause(c: IdentifierCriterion) -> ColumnElement[bool]:
    value = c.value.strip() if c.value is not None else None
    if c.kind == "ins":
        clause = and_(patient.c.ins_oid == c.key, _usable_ins())
        return and_(clause, patient.c.ins_value == value.upper()) if value else clause
    holders = select(identifier.c.patient_id)
    if value is not None:
        holders = holders.where(identifier.c.value == value)
    if c.kind == "nss":  # shown only on a Patient without its INS
        holders = holders.where(identifier.c.authority_key == c.key, identifier.c.type == "NH")
        return and_(patient.c.id.in_(holders), or_(patient.c.ins_value.is_(None), ~_usable_ins()))
    if c.kind == "key":
        return patient.c.id.in_(
            holders.where(identifier.c.authority_key == c.key, _SHOWN_AS_STORED, _NOT_AN_INS)
        )
    assert value is not None
    return or_(  # a value alone: an IPP, another identifier, a billing NIR or the INS
        patient.c.id.in_(holders.where(_NOT_AN_INS)),
        and_(patient.c.ins_value == value.upper(), _usable_ins()),
    )


def _starts(column, prefix: str) -> ColumnElement[bool]:
    """A folded key that starts with the folded prefix: a range of the key's index."""
    return and_(column >= prefix, column < prefix + "\U0010ffff")


def _family(prefix: str) -> ColumnElement[bool]:
    return or_(_starts(patient.c.birth_name_key, prefix), _starts(patient.c.used_name_key, prefix))


def _given(prefix: str) -> ColumnElement[bool]:
    return or_(
        _starts(patient.c.first_given_key, prefix), _starts(patient.c.used_given_key, prefix)
    )


def _where(c: PatientCriteria) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if c.ids is not None:
        clauses.append(patient.c.id.in_(c.ids))
    if c.identifiers is not None:
        tokens = [_identifier_clause(i) for i in c.identifiers]
        clauses.append(or_(*tokens) if tokens else false())
    if c.family:
        clauses.append(_family(c.family))
    if c.given:
        clauses.append(_given(c.given))
    if c.name:
        clauses.append(or_(_family(c.name), _given(c.name)))
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


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a search: the patients as they are now, in id order, the total, and
    whether more follow."""

    versions: list[PatientVersion]
    total: int
    more: bool


def search_page(
    conn: Connection, criteria: PatientCriteria, *, after: int | None, count: int
) -> Page:
    """A search's page in six statements whatever `count` (current_versions loads it)."""
    ids = search_patients(conn, criteria, after=after, limit=count + 1)
    total = count_patients(conn, criteria)
    found = current_versions(conn, ids[:count])
    return Page([found[i] for i in ids[:count] if i in found], total, len(ids) > count)


# -- versions --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PatientVersion:
    """One version of a patient: the identity as it was after one message."""

    identity: StoredIdentity
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


def current_versions(conn: Connection, ids: Sequence[int]) -> dict[int, PatientVersion]:
    """The patients of `ids` as they are now, each with the version that made it so, in four
    statements whatever their number (unknown ids are absent). A24 links are not read: no
    resource shows them (docs/fhir.md)."""
    if not ids:
        return {}
    rows = conn.execute(select(patient).where(patient.c.id.in_(ids))).mappings().all()
    idents: dict[int, list[Identifier]] = defaultdict(list)
    for i in conn.execute(
        select(identifier).where(identifier.c.patient_id.in_(ids)).order_by(identifier.c.id)
    ).mappings():
        idents[i["patient_id"]].append(identifier_of(i))
    merged: dict[int, list[int]] = defaultdict(list)
    for pid, into in conn.execute(
        select(patient.c.id, patient.c.merged_into)
        .where(patient.c.merged_into.in_(ids))
        .order_by(patient.c.id)
    ):
        merged[into].append(pid)
    span = (
        select(
            history.c.patient_id,
            func.max(history.c.id).label("last"),
            func.min(history.c.message_id).label("first"),
        )
        .where(history.c.patient_id.in_(ids), history.c.changes != NO_CHANGE)
        .group_by(history.c.patient_id)
        .subquery()
    )
    lasts = {
        pid: (first, message_id, at)
        for pid, first, message_id, at in conn.execute(
            select(span.c.patient_id, span.c.first, history.c.message_id, history.c.at).join(
                history, history.c.id == span.c.last
            )
        )
    }
    out: dict[int, PatientVersion] = {}
    for row in rows:
        pid = row["id"]
        identity = identity_of(row, idents[pid], ())
        replaces = tuple(merged[pid])
        if pid not in lasts:
            updated = identity.updated_at.isoformat()
            out[pid] = PatientVersion(identity, replaces, "0", updated, True)
            continue
        first, message_id, at = lasts[pid]
        out[pid] = PatientVersion(
            identity, replaces, str(message_id), iso(at), created=first == message_id
        )
    return out


def current_version(conn: Connection, patient_id: int) -> PatientVersion | None:
    """The patient as it is now, with the version that made it so; None if unknown."""
    return current_versions(conn, [patient_id]).get(patient_id)


def patient_versions(conn: Connection, patient_id: int) -> list[PatientVersion] | None:
    """Every version of the patient, oldest first (the last one is the patient as it is
    now); None if unknown.

    A past version is the current row with each field set to what the history says it was
    then: the new value of the latest change up to that message, else the old value of the
    first change after it."""
    rebuild = _Rebuild.load(conn, patient_id)
    if rebuild is None:
        return None
    return [rebuild.version(k) for k in range(max(len(rebuild.steps), 1))]


def find_version(conn: Connection, patient_id: int, version_id: str) -> PatientVersion | None:
    """One version, rebuilt alone."""
    rebuild = _Rebuild.load(conn, patient_id)
    if rebuild is None:
        return None
    if not rebuild.steps:
        return rebuild.current if rebuild.current.version_id == version_id else None
    for k, step in enumerate(rebuild.steps):
        if str(step.message_id) == version_id:
            return rebuild.version(k)
    return None


@dataclass
class _Rebuild:
    conn: Connection
    current: PatientVersion
    steps: list[_Step]
    row: dict[str, Any]
    now_idents: list[str]
    resolve: _AuthorityResolver
    collisions: dict[str, bool] = field(default_factory=dict)
    deleted: frozenset[str] = frozenset()  # INS the sender deleted from this patient

    @classmethod
    def load(cls, conn: Connection, patient_id: int) -> _Rebuild | None:
        current = current_version(conn, patient_id)
        if current is None:
            return None
        steps = _steps(conn, patient_id)
        if not steps:
            return cls(conn, current, [], {}, [], _AuthorityResolver(conn, patient_id, []))
        row = dict(conn.execute(select(patient).where(patient.c.id == patient_id)).mappings().one())
        idents = conn.execute(
            select(identifier)
            .where(identifier.c.patient_id == patient_id)
            .order_by(identifier.c.id)
        ).mappings()
        now_idents = [IdentifierRef.of_row(i).stored() for i in idents]
        resolve = _AuthorityResolver(conn, patient_id, steps)
        deleted = _deleted_ins(conn, patient_id)
        return cls(conn, current, steps, row, now_idents, resolve, deleted=deleted)

    def version(self, k: int) -> PatientVersion:
        steps, current = self.steps, self.current
        if k >= len(steps) - 1:
            return PatientVersion(
                current.identity,
                current.replaces,
                current.version_id,
                current.last_updated,
                created=k == 0,
            )
        step = steps[k]
        state: dict[str, Any] = {
            **self.row,
            "identifiers": self.now_idents,
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
        identifiers = [identifier_of(self.resolve(text)) for text in state["identifiers"] or []]
        identity = identity_of(state, identifiers, ())
        if (
            identity.ins_usable
            and identity.ins is not None
            and (self._in_collision_now(identity.ins.value) or identity.ins.value in self.deleted)
        ):
            # An INS another active patient now holds too is usable on neither, and one the
            # sender deleted (§4.4.3: wrongly attributed) was never this patient's: no version
            # serves them, lest a product reading the history take them up again. (An INS
            # later replaced or withdrawn stays in the versions it was in force for.)
            identity = replace(identity, ins_usable=False)
        merged = tuple(sorted(int(i) for i in state["merged_patients"] or []))
        return PatientVersion(identity, merged, str(step.message_id), step.at, created=k == 0)

    def _in_collision_now(self, value: str) -> bool:
        if value not in self.collisions:
            self.collisions[value] = _in_collision_now(self.conn, value)
        return self.collisions[value]


def _deleted_ins(conn: Connection, patient_id: int) -> frozenset[str]:
    """The INS values the sender deleted from this patient (finding ins-deleted: `""` under
    an INS authority, the A47 of §4.4.3), read from the history rows that say so."""
    rows = conn.execute(
        select(history.c.changes, history.c.notes).where(
            history.c.patient_id == patient_id, history.c.notes.contains(DELETED, autoescape=True)
        )
    )
    deleted = set()
    for changes, notes in rows:
        if any(n.get("finding") == DELETED for n in json.loads(notes or "[]")):
            old = json.loads(changes).get("ins_value", [None])[0]
            if old:
                deleted.add(old)
    return frozenset(deleted)


def _in_collision_now(conn: Connection, ins: Any) -> bool:
    value = ins.get("value") if isinstance(ins, dict) else ins
    if not value:
        return False
    found = select(patient.c.id).where(
        patient.c.ins_value == value, patient.c.active.is_(True), patient.c.ins_collision.is_(True)
    )
    return conn.execute(found.limit(1)).first() is not None


class _AuthorityResolver:
    """Turns a history identifier (IdentifierRef's stored text) back into {value, type,
    authority, oid}: the authority_key is the OID when there was one, else the namespace."""

    def __init__(self, conn: Connection, patient_id: int, steps: list[_Step]) -> None:
        keys: set[str] = set()
        for step in steps:
            for side in step.changes.get("identifiers", ()):
                keys.update(IdentifierRef.parse(t).authority_key for t in side or ())
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
        ref = IdentifierRef.parse(text)
        value, kind, key = ref.value, ref.type, ref.authority_key
        if key in self.known:
            ns, oid = self.known[key]
        elif _OID.fullmatch(key):
            ns, oid = "", key
        else:
            ns, oid = key, ""
        return {"value": value, "type": kind, "authority": ns, "oid": oid or None}
