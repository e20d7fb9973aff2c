"""Identity operations on the store, each run inside the caller's transaction.

Concurrency between several receivers on one PostgreSQL database rests on the unique IPP index
and on row locks (SELECT ... FOR UPDATE, taken in id order), never on in-process locks.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import (
    Connection,
    Executable,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    update,
)

from pamfr.identity.errors import MessageRejected, Problem
from pamfr.identity.ins import Ins
from pamfr.identity.model import (
    INS_TYPE,
    IPP_TYPE,
    KEEP,
    BirthDate,
    Identifier,
    PatientIdentity,
)
from pamfr.store import pgpipeline
from pamfr.store.schema import history, identifier, patient, patient_link


class ConcurrentChange(Exception):
    """What was looked up changed under a concurrent writer: the caller runs the message again."""


@dataclass(eq=False)
class NewPatient:
    """A patient row held back for a batch's flush, which gives it its id."""

    columns: dict[str, object]
    id: int | None = None


def _patient_id(patient_id: int | NewPatient) -> int | None:
    return patient_id.id if isinstance(patient_id, NewPatient) else patient_id


@dataclass
class Change:
    """One history row to write once the message row exists."""

    patient_id: int | NewPatient
    operation: str
    changes: dict[str, list] = field(default_factory=dict)


def identity_columns(identity: PatientIdentity) -> dict[str, object]:
    """The patient columns a PID sets; empty HL7 fields (KEEP) are left out."""
    values: dict[str, object] = {}

    def put(column: str, value: object) -> None:
        if value is not KEEP:
            values[column] = value

    put("birth_name", identity.birth_name)
    put("first_given_name", identity.first_given_name)
    names = identity.birth_given_names
    put("birth_given_names", " ".join(names) if isinstance(names, tuple) else names)
    put("used_name", identity.used_name)
    put("used_given_name", identity.used_given_name)
    date = identity.birth_date
    put("birth_date", date.iso() if isinstance(date, BirthDate) else date)
    put("sex", identity.sex)
    put("birth_place_insee", identity.birth_place_insee)
    if isinstance(identity.ins, Ins):
        values["ins_value"], values["ins_oid"] = identity.ins.value, identity.ins.oid
    elif identity.ins is None:
        values["ins_value"] = values["ins_oid"] = None
    values["status"] = identity.status.status.value
    values["attributes"] = " ".join(a.value for a in identity.status.attributes)
    values["other_status_codes"] = " ".join(identity.status.other_codes)
    put("identity_mode", identity.identity_mode)
    put("insi_query_date", identity.insi_query_date)
    put("identity_document", identity.identity_document)
    return values


def _ident_text(i: Identifier | dict) -> str:
    if isinstance(i, dict):
        return f"{i['value']}^{i['type']}^{i['authority_key']}"
    return f"{i.value}^{i.type}^{i.authority_key}"


# Statements of the hot path, built once: building one costs twice what executing it does.
_FIND_PATIENT_ID = (
    select(identifier.c.patient_id)
    .where(
        identifier.c.authority_key == bindparam("k"),
        identifier.c.value == bindparam("v"),
        identifier.c.type == bindparam("t"),
    )
    .limit(1)
)
_LOAD_PATIENT = select(patient).where(patient.c.id == bindparam("pid"))
_LOAD_PATIENT_FOR_UPDATE = _LOAD_PATIENT.with_for_update()
# Look-up and load (and lock) in one round trip, for the usual PID-3 with a single IPP.
_LOAD_BY_IPP = select(patient).where(patient.c.id == _FIND_PATIENT_ID.scalar_subquery())
_LOAD_BY_IPP_FOR_UPDATE = _LOAD_BY_IPP.with_for_update()
_PATIENT_IDENTIFIERS = (
    select(identifier).where(identifier.c.patient_id == bindparam("pid")).order_by(identifier.c.id)
)
_INSERT_PATIENT = insert(patient).returning(patient.c.id)
_NULL_COLUMNS = dict.fromkeys(c.name for c in patient.c if c.nullable and not c.primary_key)
_INSERT_IDENTIFIED_PATIENT = insert(patient)
_INSERT_PATIENTS = insert(patient).returning(patient.c.id, sort_by_parameter_order=True)
_INSERT_IDENTIFIER = insert(identifier)
_UPDATE_PATIENT = update(patient).where(patient.c.id == bindparam("pid"))
_INSERT_HISTORY = insert(history)
_INSERT_LINK = insert(patient_link)


# A batch's look-up of several IPPs at once (PostgreSQL) is one equality look-up per IPP, all
# sent together: each uses the IPP index whatever the statistics say, where one statement for
# all (a join on unnest, or ANY arrays) was planned as a scan of the whole index while the
# tables were young. Their identifiers are read once all the rows are locked.
_IDENTIFIERS_BY_IPP = (
    select(identifier)
    .where(identifier.c.patient_id == _FIND_PATIENT_ID.scalar_subquery())
    .order_by(identifier.c.id)
)


@dataclass
class HeldWrites:
    """The writes of a batch's prefetched messages, sent together: new patients in one
    statement, their identifiers in another, updates in one per set of changed columns."""

    patients: list[NewPatient] = field(default_factory=list)
    identifiers: list[dict] = field(default_factory=list)
    updates: dict[tuple[str, ...], list[dict]] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return bool(self.patients or self.identifiers or self.updates)

    def assign_ids(self, ids: list[int]) -> None:
        for new, patient_id in zip(self.patients, ids, strict=True):
            new.id = patient_id

    def flush(self, conn: Connection) -> None:
        """Send the writes now, the new patients taking their ids from the database."""
        if self.patients:
            rows = [new.columns for new in self.patients]
            self.assign_ids(conn.execute(_INSERT_PATIENTS, rows).scalars().all())
        for statement, rows in self.writes(with_patients=False):
            conn.execute(statement, rows)
        self.patients, self.identifiers, self.updates = [], [], {}

    def writes(self, with_patients: bool = True) -> list[tuple[Executable, list[dict]]]:
        """The statements and their rows, once every new patient has its id."""
        writes: list[tuple[Executable, list[dict]]] = []
        if with_patients and self.patients:
            writes.append(
                (_INSERT_IDENTIFIED_PATIENT, [{**n.columns, "id": n.id} for n in self.patients])
            )
        if self.identifiers:
            rows = [{**r, "patient_id": _patient_id(r["patient_id"])} for r in self.identifiers]
            writes.append((_INSERT_IDENTIFIER, rows))
        writes += [(_UPDATE_PATIENT, rows) for rows in self.updates.values()]
        return writes


@dataclass(frozen=True)
class Prefetched:
    """What `prefetch` found for a batch: by IPP (authority key, value), the locked patient
    row or None when no patient holds it; by patient id, its identifiers; and the count of
    leading IPPs it covers (it stops before an IPP whose patient an earlier one designates,
    so that message looks up again once the held writes are flushed)."""

    patients: dict[tuple[str, str], dict | None]
    identifiers: dict[int, list[dict]]
    covered: int
    new_patient_ids: list[int]  # enough for every covered IPP to be a new patient
    message_ids: list[int]  # enough for the whole batch
    held: HeldWrites = field(default_factory=HeldWrites)


def prefetch(
    conn: Connection,
    ipps: list[Identifier],
    messages: int,
    first: Sequence[tuple[Executable, dict]] = (),
) -> tuple[Prefetched, list[dict]] | None:
    """Look up, lock and load the patients of several single-IPP messages in one round trip,
    with ids for the new rows of a batch of `messages`, and the rows of the `first` queries
    sent ahead of them. The caller makes sure no message of the batch changes what another's
    look-up finds: distinct IPPs, and no merge or identifier change before them. None on
    SQLite, where a look-up costs less than the batching (and there is no row lock to take)."""
    if conn.dialect.name != "postgresql" or not pgpipeline.supported():
        return None
    wanted = [(i.authority_key, i.value) for i in ipps]
    # Locked in one order (by IPP) by every receiver's prefetch; a merge locks by id, and a
    # deadlock between the two is retried. The identifiers are read once all the locks are
    # held (the statements run in order), so they are current: a patient whose IPP moved
    # meanwhile fails its re-check later.
    order = sorted(set(wanted))
    params = [{"k": k, "v": v, "t": IPP_TYPE} for k, v in order]
    results = pgpipeline.read(
        conn,
        [
            *first,
            *((_LOAD_BY_IPP_FOR_UPDATE, p) for p in params),
            *((_IDENTIFIERS_BY_IPP, p) for p in params),
            (pgpipeline.NEXT_IDS, {"patients": len(ipps), "messages": messages}),
        ],
    )
    first_rows = [row for rows in results[: len(first)] for row in rows]
    del results[: len(first)]
    ids = results.pop()
    found = {
        key: rows[0] if rows else None
        for key, rows in zip(order, results[: len(order)], strict=True)
    }
    # A patient two of the IPPs designate comes back twice: each identifier once, in id order.
    by_id = {r["id"]: r for rows in results[len(order) :] for r in rows}
    patients: dict[tuple[str, str], dict | None] = {}
    claimed: set[int] = set()
    for key in wanted:
        row = found.get(key)
        if row is not None:
            if row["id"] in claimed:
                break
            claimed.add(row["id"])
        patients[key] = row
    identifiers: dict[int, list[dict]] = {pid: [] for pid in claimed}
    for i in sorted(by_id):
        if by_id[i]["patient_id"] in identifiers:
            identifiers[by_id[i]["patient_id"]].append(by_id[i])
    reserved = ids[0]
    prefetched = Prefetched(
        patients, identifiers, len(patients), reserved["patient_ids"], reserved["message_ids"]
    )
    return prefetched, first_rows


class IdentityRepository:
    def __init__(
        self, conn: Connection, now: datetime, prefetched: Prefetched | None = None
    ) -> None:
        self.conn = conn
        self.now = now
        self.changes: list[Change] = []
        self.warnings: list[Problem] = []
        self._lock = conn.dialect.name == "postgresql"
        self.pending_link: dict | None = None
        self._prefetched = prefetched
        self._held = prefetched.held if prefetched is not None else None

    # -- look-ups -----------------------------------------------------------

    def find_patient_id(self, ident: Identifier) -> int | None:
        params = {"k": ident.authority_key, "v": ident.value, "t": ident.type or IPP_TYPE}
        return self.conn.execute(_FIND_PATIENT_ID, params).scalar_one_or_none()

    def _find_by_ipps(self, identity: PatientIdentity) -> int | None:
        for ipp in identity.ipps:
            found = self.find_patient_id(ipp)
            if found is not None:
                return found
        return None

    def _find_and_load(self, identity: PatientIdentity) -> tuple[dict | None, Identifier | None]:
        """The patient that PID-3's IPPs designate, loaded and (PostgreSQL) locked, and the IPP
        whose ownership the caller must re-check once it reads the identifiers under the lock
        (None: already re-checked, or no lock to re-check after)."""
        ipps = identity.ipps
        if len(ipps) == 1:
            ipp = ipps[0]
            key = (ipp.authority_key, ipp.value)
            if self._prefetched is not None and key in self._prefetched.patients:
                row = self._prefetched.patients[key]
            else:
                query = _LOAD_BY_IPP_FOR_UPDATE if self._lock else _LOAD_BY_IPP
                params = {"k": ipp.authority_key, "v": ipp.value, "t": IPP_TYPE}
                row = self.conn.execute(query, params).mappings().first()
            if row is None:
                return None, None
            return dict(row), ipp if self._lock else None
        patient_id = self._find_by_ipps(identity)
        if patient_id is None:
            return None, None
        current = self._load(patient_id)
        if self._lock:  # PostgreSQL: another receiver may have moved the IPP before our lock
            self._still(self._find_by_ipps(identity) == patient_id)
        return current, None

    def _load(self, patient_id: int) -> dict:
        query = _LOAD_PATIENT_FOR_UPDATE if self._lock else _LOAD_PATIENT
        return dict(self.conn.execute(query, {"pid": patient_id}).mappings().one())

    def _lock_in_order(self, *ids: int) -> dict[int, dict]:
        return {pid: self._load(pid) for pid in sorted(set(ids))}

    def _identifiers(self, patient_id: int) -> list[dict]:
        if self._prefetched is not None and patient_id in self._prefetched.identifiers:
            # Read once: a message changes its patient's identifiers after this call only.
            return self._prefetched.identifiers.pop(patient_id)
        rows = self.conn.execute(_PATIENT_IDENTIFIERS, {"pid": patient_id})
        return [dict(r) for r in rows.mappings()]

    # -- writes -------------------------------------------------------------

    def _record(
        self, patient_id: int | NewPatient, operation: str, changes: dict[str, list]
    ) -> None:
        if changes:
            self.changes.append(Change(patient_id, operation, changes))

    def _insert_patient(self, identity: PatientIdentity, operation: str) -> None:
        """A new patient, whose IPPs the caller has just found free (a concurrent writer that
        takes one first makes the unique index refuse ours, and the message runs again)."""
        columns = identity_columns(identity)
        row = {
            **_NULL_COLUMNS,  # spelled out, so that held rows share one INSERT statement
            "active": True,
            "created_at": self.now,
            "updated_at": self.now,
            **columns,
        }
        patient_id: int | NewPatient
        if self._held is not None:
            patient_id = NewPatient(row)
            self._held.patients.append(patient_id)
        else:
            patient_id = self.conn.execute(_INSERT_PATIENT, row).scalar_one()
        new_ids = self._add_identifiers(
            patient_id, identity.identifiers, known=[], ipps_checked=True
        )
        changes = {k: [None, v] for k, v in columns.items() if v not in (None, "")}
        changes["active"] = [None, True]
        if new_ids:
            changes["identifiers"] = [[], new_ids]
        self._record(patient_id, operation, changes)

    def _add_identifiers(
        self,
        patient_id: int | NewPatient,
        identifiers: tuple[Identifier, ...],
        known: list[dict],
        ipps_checked: bool = False,
    ) -> list[str]:
        """Add the PID-3 identifiers the patient lacks (the INS lives on the patient row)."""
        have = {(k["authority_key"], k["value"], k["type"]) for k in known}
        rows = []
        for ident in identifiers:
            key = (ident.authority_key, ident.value, ident.type)
            if ident.type == INS_TYPE or key in have:
                continue
            if (
                ident.type == IPP_TYPE
                and not ipps_checked
                and self.find_patient_id(ident) not in (None, patient_id)
            ):
                raise MessageRejected(
                    Problem(
                        205,
                        "PID^1^3",
                        "PID-3 holds IPPs of two different patients (send an A40 merge)",
                    )
                )
            have.add(key)
            rows.append(
                dict(
                    patient_id=patient_id,
                    value=ident.value,
                    type=ident.type,
                    authority=ident.authority,
                    oid=ident.oid,
                    authority_key=ident.authority_key,
                )
            )
        if rows and self._held is not None:
            self._held.identifiers += rows
        elif rows:
            self.conn.execute(_INSERT_IDENTIFIER, rows)
        return [_ident_text(r) for r in rows]

    def _update_patient(
        self,
        patient_id: int,
        identity: PatientIdentity,
        operation: str,
        extra: dict[str, list] | None = None,
        current: dict | None = None,
        still_owned: Identifier | None = None,
    ) -> None:
        """`still_owned`: an IPP looked up before the row lock, which must still be this
        patient's now that the lock is held."""
        current = current if current is not None else self._load(patient_id)
        columns = identity_columns(identity)
        diff = {k: [current[k], v] for k, v in columns.items() if current[k] != v}
        diff.update(extra or {})
        known = self._identifiers(patient_id)
        if still_owned is not None:
            owned = (still_owned.authority_key, still_owned.value, IPP_TYPE)
            self._still(any((k["authority_key"], k["value"], k["type"]) == owned for k in known))
        added = self._add_identifiers(patient_id, identity.identifiers, known)
        if added:
            before = diff["identifiers"][0] if "identifiers" in diff else None
            diff["identifiers"] = [
                before if before is not None else [_ident_text(k) for k in known],
                [*map(_ident_text, known), *added],
            ]
        if diff:
            values = {k: v[1] for k, v in diff.items() if k in columns}
            row = {"pid": patient_id, "updated_at": self.now, **values}
            if self._held is not None:
                self._held.updates.setdefault(tuple(sorted(values)), []).append(row)
            else:
                self.conn.execute(_UPDATE_PATIENT, row)
        self._record(patient_id, operation, diff)

    # -- operations (IHE ITI-30 expected actions) --------------------------------

    def upsert(self, identity: PatientIdentity, operation: str) -> None:
        """A28 / A31 / ITI-31 events: create the patient, or update it when its IPP is known."""
        current, still_owned = self._find_and_load(identity)
        if current is None:
            self._insert_patient(identity, operation)
            return
        patient_id = current["id"]
        if not current["active"]:
            if still_owned is not None:
                self._still(self.find_patient_id(still_owned) == patient_id)
            self.warnings.append(
                Problem(
                    204,
                    "PID^1^3",
                    "this IPP belongs to a patient merged into another: identity not updated",
                    severity="W",
                )
            )
            return
        self._update_patient(
            patient_id, identity, "update", current=current, still_owned=still_owned
        )

    @staticmethod
    def _still(unchanged: bool) -> None:
        """After taking the row locks: what was looked up before them must still hold."""
        if not unchanged:
            raise ConcurrentChange("identifiers changed by another writer; look up again")

    def _prior_ipp(self, prior: tuple[Identifier, ...]) -> Identifier | None:
        for ident in prior:
            if ident.type in ("", IPP_TYPE):
                return Identifier(ident.value, IPP_TYPE, ident.authority, ident.oid)
        return None

    @staticmethod
    def _matching_ipp(identity: PatientIdentity, source: Identifier) -> Identifier | None:
        same_authority = [i for i in identity.ipps if i.authority_key == source.authority_key]
        return (same_authority or list(identity.ipps) or [None])[0]

    def merge(self, identity: PatientIdentity, prior: tuple[Identifier, ...]) -> None:
        """A40: the MRG-1 patient is merged into the PID-3 patient."""
        source_ipp = self._prior_ipp(prior)
        if source_ipp is None:
            raise MessageRejected(Problem(101, "MRG^1^1", "MRG-1 holds no IPP (CX-5 PI)"))
        source_id = self.find_patient_id(source_ipp)
        if source_id is None:
            return  # IHE: source unknown, nothing to do
        target_id = self._find_by_ipps(identity)
        if target_id is None:
            self._rename(source_id, source_ipp, identity, "merge")
            return
        if target_id == source_id:
            raise MessageRejected(
                Problem(205, "MRG^1^1", "MRG-1 and PID-3 designate the same patient")
            )
        rows = self._lock_in_order(source_id, target_id)
        self._still(
            self.find_patient_id(source_ipp) == source_id
            and self._find_by_ipps(identity) == target_id
        )
        source, target = rows[source_id], rows[target_id]
        if not source["active"]:
            if source["merged_into"] == target_id:
                return  # already merged into this survivor
            raise MessageRejected(
                Problem(205, "MRG^1^1", "the MRG-1 patient was already merged into another patient")
            )
        if not target["active"]:
            raise MessageRejected(
                Problem(205, "PID^1^3", "the PID-3 patient was itself merged into another patient")
            )
        merged_before = self._merged_ids(target_id)
        self.conn.execute(
            update(patient)
            .where(patient.c.id == source_id)
            .values(active=False, merged_into=target_id, updated_at=self.now)
        )
        self._record(
            source_id, "merge", {"active": [True, False], "merged_into": [None, target_id]}
        )
        self._update_patient(
            target_id,
            identity,
            "merge",
            {"merged_patients": [merged_before, sorted([*merged_before, source_id])]},
        )

    def _merged_ids(self, patient_id: int) -> list[int]:
        rows = self.conn.execute(
            select(patient.c.id).where(patient.c.merged_into == patient_id).order_by(patient.c.id)
        )
        return [r[0] for r in rows]

    def change_identifier(self, identity: PatientIdentity, prior: tuple[Identifier, ...]) -> None:
        """A47: MRG-1's identifier becomes PID-3's on the same patient."""
        source_ipp = self._prior_ipp(prior)
        if source_ipp is None:
            raise MessageRejected(Problem(101, "MRG^1^1", "MRG-1 holds no IPP (CX-5 PI)"))
        source_id = self.find_patient_id(source_ipp)
        if source_id is None:
            return  # IHE: source unknown, nothing to do
        self._rename(source_id, source_ipp, identity, "change_id")

    def _rename(
        self, patient_id: int, old: Identifier, identity: PatientIdentity, operation: str
    ) -> None:
        new = self._matching_ipp(identity, old)
        if new is None:
            raise MessageRejected(Problem(101, "PID^1^3", "PID-3 holds no IPP (CX-5 PI)"))
        self._lock_in_order(patient_id)
        self._still(self.find_patient_id(old) == patient_id)
        owner = self.find_patient_id(new)
        if owner is not None and owner != patient_id:
            raise MessageRejected(
                Problem(
                    205,
                    "PID^1^3",
                    "the new identifier already belongs to another patient (send an A40 merge)",
                )
            )
        renamed: dict[str, list] = {}
        if owner is None:
            before = [_ident_text(k) for k in self._identifiers(patient_id)]
            self.conn.execute(
                update(identifier)
                .where(
                    identifier.c.patient_id == patient_id,
                    identifier.c.authority_key == old.authority_key,
                    identifier.c.value == old.value,
                    identifier.c.type == IPP_TYPE,
                )
                .values(
                    value=new.value,
                    authority=new.authority,
                    oid=new.oid,
                    authority_key=new.authority_key,
                )
            )
            after = [_ident_text(k) for k in self._identifiers(patient_id)]
            renamed["identifiers"] = [before, after]
        self._update_patient(patient_id, identity, operation, renamed)

    # -- links ----------------------------------------------------------------

    @staticmethod
    def _link_pair(a: Identifier, b: Identifier) -> tuple[tuple[str, str], tuple[str, str]]:
        pair = sorted([(a.authority_key, a.value), (b.authority_key, b.value)])
        return pair[0], pair[1]

    def _link_where(self, a: Identifier, b: Identifier):
        (ak, av), (bk, bv) = self._link_pair(a, b)
        return and_(
            patient_link.c.a_authority_key == ak,
            patient_link.c.a_value == av,
            patient_link.c.b_authority_key == bk,
            patient_link.c.b_value == bv,
        )

    def link(self, first: PatientIdentity, second: PatientIdentity) -> None:
        """A24: record a link between two identifiers (patients need not exist yet)."""
        a, b = first.ipp, second.ipp
        assert a is not None and b is not None
        if a.authority_key == b.authority_key and a.value == b.value:
            raise MessageRejected(Problem(205, "PID^2^3", "A24 links a patient to itself"))
        exists = self.conn.execute(select(patient_link.c.id).where(self._link_where(a, b))).first()
        if exists:
            return
        (ak, av), (bk, bv) = self._link_pair(a, b)
        # Written with the history, once the message row (which the link cites) exists.
        self.pending_link = dict(
            a_authority_key=ak, a_value=av, b_authority_key=bk, b_value=bv, created_at=self.now
        )
        self._record_link(a, b, "link", [None, True])

    def unlink(self, first: PatientIdentity, second: PatientIdentity) -> None:
        """A37: remove a link; an unknown link is not an error."""
        a, b = first.ipp, second.ipp
        assert a is not None and b is not None
        removed = self.conn.execute(delete(patient_link).where(self._link_where(a, b))).rowcount
        if removed:
            self._record_link(a, b, "unlink", [True, None])

    def _record_link(self, a: Identifier, b: Identifier, operation: str, change: list) -> None:
        for this, other in ((a, b), (b, a)):
            pid = self.find_patient_id(this)
            if pid is not None:
                self._record(pid, operation, {f"link:{_ident_text(other)}": change})


def write_histories(
    conn: Connection, entries: list[tuple[IdentityRepository, int, str, str]]
) -> None:
    """The links and history rows that (repository, message id, control id, event) entries
    collected, once their messages are logged: one statement for each table at most."""
    for statement, rows in history_writes(entries):
        conn.execute(statement, rows)


def history_writes(
    entries: list[tuple[IdentityRepository, int, str, str]],
) -> list[tuple[Executable, list[dict]]]:
    links: list[dict] = []
    rows: list[dict] = []
    for repo, message_id, control_id, event in entries:
        if repo.pending_link is not None:
            links.append({**repo.pending_link, "message_id": message_id})
        rows += [
            dict(
                patient_id=_patient_id(c.patient_id),
                at=repo.now,
                message_id=message_id,
                control_id=control_id,
                event=event,
                operation=c.operation,
                changes=json.dumps(c.changes, ensure_ascii=False, default=str),
            )
            for c in repo.changes
        ]
    return [
        (statement, r) for statement, r in ((_INSERT_LINK, links), (_INSERT_HISTORY, rows)) if r
    ]


def linked_patient_ids(conn: Connection, patient_id: int) -> list[int]:
    """Ids of the patients linked to this one (links are kept by identifier)."""
    ipps = conn.execute(
        select(identifier.c.authority_key, identifier.c.value).where(
            identifier.c.patient_id == patient_id, identifier.c.type == IPP_TYPE
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
    ids: list[int] = []
    for key, value in others:
        pid = conn.execute(
            select(identifier.c.patient_id).where(
                identifier.c.authority_key == key,
                identifier.c.value == value,
                identifier.c.type == IPP_TYPE,
            )
        ).scalar_one_or_none()
        if pid is not None and pid not in ids:
            ids.append(pid)
    return sorted(ids)
