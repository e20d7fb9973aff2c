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
    func,
    insert,
    select,
    update,
)

from pamfr.feed.outbox import outbox_writes
from pamfr.identity.findings import Finding, IdentityRefused, Note, Refusal
from pamfr.identity.model import (
    IDENTITY_FIELDS,
    IPP_TYPE,
    Identifier,
    PatientIdentity,
    StatedIns,
)
from pamfr.identity.rules import (
    Decision,
    MergeAction,
    Policy,
    Record,
    collision_note,
    collision_resolved_note,
    decide_identity,
    decide_ins_change,
    identifiers_to_add,
    matching_ipp,
    plan_merge,
    plan_rename,
    prior_ipp,
    rename_notes,
)
from pamfr.store import pgpipeline
from pamfr.store.authorities import AuthorityBook
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
    notes: list[Note] = field(default_factory=list)  # what was dropped or kept, and why


def _ident_text(i: Identifier | dict) -> str:
    if isinstance(i, dict):
        return f"{i['value']}^{i['type']}^{i['authority_key']}"
    return f"{i.value}^{i.type}^{i.authority_key}"


def _as_identifier(row: dict) -> Identifier:
    return Identifier(row["value"], row["type"], row["authority"], row["oid"])


def _as_record(row: dict | None) -> Record | None:
    return None if row is None else Record(row["id"], bool(row["active"]), row["merged_into"])


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
_ACTIVE_HOLDERS = select(patient.c.id, patient.c.ins_collision).where(
    patient.c.ins_value == bindparam("v"), patient.c.active.is_(True)
)
_LOCK_INS = select(func.pg_advisory_xact_lock(func.hashtext(bindparam("v"))))
_SET_COLLISION = (
    update(patient).where(patient.c.id == bindparam("pid")).values(ins_collision=bindparam("flag"))
)
_MERGED_INTO = (
    select(patient.c.id).where(patient.c.merged_into == bindparam("pid")).order_by(patient.c.id)
)
_SET_MERGED_INTO = (
    update(patient).where(patient.c.id == bindparam("pid")).values(merged_into=bindparam("into"))
)
_DEACTIVATE = (
    update(patient)
    .where(patient.c.id == bindparam("pid"))
    .values(active=False, merged_into=bindparam("into"), updated_at=bindparam("now"))
)
_SURVIVOR = select(patient.c.merged_into).where(patient.c.id == bindparam("pid"))


def survivor_id(conn: Connection, patient_id: int) -> int:
    """The patient a merged record points at (merges keep chains flat), or the patient."""
    merged_into = conn.execute(_SURVIVOR, {"pid": patient_id}).scalar_one_or_none()
    return merged_into if merged_into is not None else patient_id


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
    # By INS the messages state: the ids of the active patients holding it when the batch
    # began (under a lock on the INS), and who took or let go of it since in the batch.
    ins_holders: dict[str, set[int]] = field(default_factory=dict)
    ins_changes: dict[str, dict[object, bool]] = field(default_factory=dict)

    def others_may_hold(self, ins_value: str, exclude: object) -> bool:
        """Whether a patient other than `exclude` may hold the INS; True when not known."""
        if ins_value not in self.ins_holders:
            return True
        holders: set[object] = set(self.ins_holders[ins_value])
        for who, holds in self.ins_changes.get(ins_value, {}).items():
            (holders.add if holds else holders.discard)(who)
        holders.discard(exclude)
        return bool(holders)

    def ins_moved(self, who: object, old: str | None, new: str | None) -> None:
        if old:
            self.ins_changes.setdefault(old, {})[who] = False
        if new:
            self.ins_changes.setdefault(new, {})[who] = True


def prefetch(
    conn: Connection,
    ipps: list[Identifier],
    messages: int,
    first: Sequence[tuple[Executable, dict]] = (),
    ins_values: Sequence[str] = (),
) -> tuple[Prefetched, list[dict]] | None:
    """Look up, lock and load the patients of several single-IPP messages in one round trip,
    with ids for the new rows of a batch of `messages`, the active holders of the INS the
    messages state (each INS locked first), and the rows of the `first` queries sent ahead of
    them. The caller makes sure no message of the batch changes what another's
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
    inses = sorted(set(ins_values))
    results = pgpipeline.read(
        conn,
        [
            *first,
            *((_LOAD_BY_IPP_FOR_UPDATE, p) for p in params),
            *((_IDENTIFIERS_BY_IPP, p) for p in params),
            *((statement, {"v": v}) for v in inses for statement in (_LOCK_INS, _ACTIVE_HOLDERS)),
            (pgpipeline.NEXT_IDS, {"patients": len(ipps), "messages": messages}),
        ],
    )
    first_rows = [row for rows in results[: len(first)] for row in rows]
    del results[: len(first)]
    ids = results.pop()
    holders = results[len(results) - 2 * len(inses) :]
    del results[len(results) - 2 * len(inses) :]
    ins_holders = {v: {r["id"] for r in rows} for v, rows in zip(inses, holders[1::2], strict=True)}
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
        patients,
        identifiers,
        len(patients),
        reserved["patient_ids"],
        reserved["message_ids"],
        ins_holders=ins_holders,
    )
    return prefetched, first_rows


class IdentityRepository:
    """Loads what the identity rules need, asks them (pamfr.identity.rules), writes what they
    decide. One per message; its changes and notes become history rows once the message is
    logged."""

    def __init__(
        self,
        conn: Connection,
        now: datetime,
        prefetched: Prefetched | None = None,
        authorities: AuthorityBook | None = None,
    ) -> None:
        self.conn = conn
        self.now = now
        self.changes: list[Change] = []
        self.notes: list[Note] = []
        self._lock = conn.dialect.name == "postgresql"
        self.pending_link: dict | None = None
        self._prefetched = prefetched
        self._held = prefetched.held if prefetched is not None else None
        self._authorities = authorities if authorities is not None else AuthorityBook()

    @property
    def warnings(self) -> list[Note]:
        return [n for n in self.notes if n.warning]

    def _note(self, notes) -> None:
        self.notes.extend(notes)

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

    def _canonical(self, identity: PatientIdentity) -> PatientIdentity:
        return self._authorities.canonical_identity(self.conn, identity, self.now)

    # -- writes -------------------------------------------------------------

    def _record(
        self,
        patient_id: int | NewPatient,
        operation: str,
        changes: dict[str, list],
        notes: Sequence[Note] = (),
    ) -> None:
        if changes or notes:
            self.changes.append(Change(patient_id, operation, changes, list(notes)))

    def _insert_patient(
        self, identity: PatientIdentity, decision: Decision, operation: str
    ) -> None:
        """A new patient, whose IPPs the caller has just found free (a concurrent writer that
        takes one first makes the unique index refuse ours, and the message runs again)."""
        columns = {k: decision.values[k] for k in IDENTITY_FIELDS}
        notes = list(decision.notes)
        new_ins = decision.values["ins_value"]
        row = {
            **_NULL_COLUMNS,  # spelled out, so that held rows share one INSERT statement
            "active": True,
            "ins_collision": False,
            "created_at": self.now,
            "updated_at": self.now,
            **columns,
        }
        patient_id: int | NewPatient
        if new_ins:
            others = self._active_holders(str(new_ins), exclude=None)
            if others:
                row["ins_collision"] = columns["ins_collision"] = True
                notes.append(collision_note())
                self._flag_collision(others)
        if self._held is not None:
            patient_id = NewPatient(row)
            self._held.patients.append(patient_id)
        else:
            patient_id = self.conn.execute(_INSERT_PATIENT, row).scalar_one()
        if self._prefetched is not None and new_ins:
            self._prefetched.ins_moved(patient_id, None, str(new_ins))
        new_ids = self._write_identifiers(patient_id, identity.identifiers)
        changes = {k: [None, v] for k, v in columns.items() if v not in (None, "", False)}
        changes["active"] = [None, True]
        if new_ids:
            changes["identifiers"] = [[], new_ids]
        self._note(notes)
        self._record(patient_id, operation, changes, notes)

    def _write_identifiers(
        self, patient_id: int | NewPatient, identifiers: Sequence[Identifier]
    ) -> list[str]:
        rows = [
            dict(
                patient_id=patient_id,
                value=ident.value,
                type=ident.type,
                authority=ident.authority,
                oid=ident.oid,
                authority_key=ident.authority_key,
            )
            for ident in identifiers
        ]
        if rows and self._held is not None:
            self._held.identifiers += rows
        elif rows:
            self.conn.execute(_INSERT_IDENTIFIER, rows)
        return [_ident_text(r) for r in rows]

    def _add_identifiers(
        self, patient_id: int, identity: PatientIdentity, known: list[dict]
    ) -> list[str]:
        """Add the PID-3 identifiers the patient lacks: one IPP per authority, and never an
        IPP of another patient (that is an A40)."""
        added = identifiers_to_add(identity.identifiers, [_as_identifier(k) for k in known])
        for ident in added:
            if ident.type == IPP_TYPE and self.find_patient_id(ident) not in (None, patient_id):
                raise IdentityRefused(
                    Refusal.IPPS_OF_TWO_PATIENTS,
                    "PID-3 holds IPPs of two different patients (send an A40 merge)",
                )
        return self._write_identifiers(patient_id, added)

    def _update_patient(
        self,
        patient_id: int,
        decision: Decision,
        operation: str,
        current: dict,
        identity: PatientIdentity | None = None,
        extra: dict[str, list] | None = None,
        still_owned: Identifier | None = None,
    ) -> None:
        """Write what the rules decided. `identity`: the PID whose identifiers the patient
        gets; `still_owned`: an IPP looked up before the row lock, which must still be this
        patient's now that the lock is held."""
        values: dict[str, object] = {k: decision.values[k] for k in IDENTITY_FIELDS}
        notes = list(decision.notes)
        old_ins, new_ins = current["ins_value"], values["ins_value"]
        if new_ins != old_ins or (new_ins and not current["active"]):
            collision = False
            if new_ins:
                others = self._active_holders(str(new_ins), exclude=patient_id)
                if others:
                    collision = True
                    notes.append(collision_note())
                    self._flag_collision(others)
            values["ins_collision"] = collision
            if self._prefetched is not None:
                self._prefetched.ins_moved(patient_id, old_ins, new_ins)
            if old_ins:
                self._release_ins(str(old_ins), exclude=patient_id)
        diff = {k: [current[k], v] for k, v in values.items() if current[k] != v}
        diff.update(extra or {})
        if identity is not None or still_owned is not None:
            known = self._identifiers(patient_id)
            if still_owned is not None:
                owned = (still_owned.authority_key, still_owned.value, IPP_TYPE)
                self._still(
                    any((k["authority_key"], k["value"], k["type"]) == owned for k in known)
                )
            added = self._add_identifiers(patient_id, identity, known) if identity else []
            if added:
                before = diff["identifiers"][0] if "identifiers" in diff else None
                diff["identifiers"] = [
                    before if before is not None else [_ident_text(k) for k in known],
                    [*map(_ident_text, known), *added],
                ]
        changed = {k: v[1] for k, v in diff.items() if k in values}
        if changed:
            row = {"pid": patient_id, "updated_at": self.now, **changed}
            if self._held is not None:
                self._held.updates.setdefault(tuple(sorted(changed)), []).append(row)
            else:
                self.conn.execute(_UPDATE_PATIENT, row)
        self._note(notes)
        self._record(patient_id, operation, diff, notes)

    # -- one INS, one active patient -------------------------------------------

    def _active_holders(self, ins_value: str, exclude: int | None) -> list[dict]:
        """The other active patients holding this INS; on PostgreSQL under a lock on the INS,
        so that two receivers giving it to two patients at once see each other. The batch's
        prefetch answers the usual case (nobody else holds it) without a round trip."""
        pf = self._prefetched
        if pf is not None and not pf.others_may_hold(ins_value, exclude):
            return []
        if self._held is not None and self._held.pending:
            self._held.flush(self.conn)  # earlier messages of the batch must be seen
        if self._lock:
            self.conn.execute(_LOCK_INS, {"v": ins_value})
        rows = self.conn.execute(_ACTIVE_HOLDERS, {"v": ins_value}).mappings()
        return [dict(r) for r in rows if r["id"] != exclude]

    def _flag_collision(self, others: list[dict]) -> None:
        for other in others:
            if not other["ins_collision"]:
                self.conn.execute(_SET_COLLISION, {"pid": other["id"], "flag": True})
                self._record(
                    other["id"], "collision", {"ins_collision": [False, True]}, [collision_note()]
                )

    def _release_ins(self, ins_value: str, exclude: int) -> None:
        """A patient let go of this INS (removed, replaced, merged away): a holder left alone
        with it is no longer in collision."""
        remaining = self._active_holders(ins_value, exclude=exclude)
        if len(remaining) == 1 and remaining[0]["ins_collision"]:
            other = remaining[0]["id"]
            self.conn.execute(_SET_COLLISION, {"pid": other, "flag": False})
            self._record(
                other, "collision", {"ins_collision": [True, False]}, [collision_resolved_note()]
            )

    # -- operations (PAM FR 2.11.1 and the IHE ITI-30 expected actions) -------------------

    def upsert(self, identity: PatientIdentity, operation: str, policy: Policy) -> None:
        """A28 / A31 / ITI-31 events: create the patient, or update it when its IPP is known."""
        identity = self._canonical(identity)
        current, still_owned = self._find_and_load(identity)
        if current is None:
            self._insert_patient(identity, decide_identity(identity, None, policy), operation)
            return
        patient_id = current["id"]
        if not current["active"]:
            if still_owned is not None:
                self._still(self.find_patient_id(still_owned) == patient_id)
            note = Note(
                Finding.MERGED_AWAY,
                "this IPP belongs to a patient merged into another: identity not updated",
            )
            self._note([note])
            self._record(patient_id, operation, {}, [note])
            return
        decision = decide_identity(identity, current, policy)
        self._update_patient(
            patient_id,
            decision,
            "update",
            current,
            identity=identity if policy.rewrites_identity else None,
            still_owned=still_owned,
        )

    @staticmethod
    def _still(unchanged: bool) -> None:
        """After taking the row locks: what was looked up before them must still hold."""
        if not unchanged:
            raise ConcurrentChange("identifiers changed by another writer; look up again")

    def _prior_ipp(self, prior: Sequence[Identifier]) -> Identifier | None:
        ipp = prior_ipp(prior)
        return self._authorities.canonical(self.conn, ipp) if ipp is not None else None

    def merge(self, identity: PatientIdentity, prior: Sequence[Identifier]) -> None:
        """A40: the MRG-1 patient is merged into the PID-3 patient, which keeps its own
        demographics, status and INS."""
        identity = self._canonical(identity)
        source_ipp = self._prior_ipp(prior)
        if source_ipp is None:
            raise IdentityRefused(Refusal.PRIOR_MISSING, "MRG-1 holds no IPP (CX-5 PI)")
        source_id = self.find_patient_id(source_ipp)
        target_id = self._find_by_ipps(identity)
        rows = self._lock_in_order(*(i for i in (source_id, target_id) if i is not None))
        self._still(
            self.find_patient_id(source_ipp) == source_id
            and self._find_by_ipps(identity) == target_id
        )
        plan = plan_merge(_as_record(rows.get(source_id)), _as_record(rows.get(target_id)))
        self._note(plan.notes)
        if plan.action is MergeAction.RENAME:
            assert source_id is not None
            self._rename(source_id, source_ipp, identity, "merge")
            return
        if plan.action is MergeAction.NOTHING or source_id is None:
            return
        survivor_id = plan.target
        assert survivor_id is not None
        survivor = rows.get(survivor_id) or self._load(survivor_id)
        source = rows[source_id]
        merged_before = self._merged_ids(survivor_id)
        earlier_merges = self._merged_ids(source_id)
        # A chain is never left behind: what was merged into the source now names the survivor.
        for earlier in earlier_merges:
            self.conn.execute(_SET_MERGED_INTO, {"pid": earlier, "into": survivor_id})
            self._record(earlier, "merge", {"merged_into": [source_id, survivor_id]})
        self.conn.execute(_DEACTIVATE, {"pid": source_id, "into": survivor_id, "now": self.now})
        source_changes: dict[str, list] = {
            "active": [True, False],
            "merged_into": [None, survivor_id],
        }
        if source["ins_collision"]:
            self.conn.execute(_SET_COLLISION, {"pid": source_id, "flag": False})
            source_changes["ins_collision"] = [True, False]
        self._record(source_id, "merge", source_changes, plan.notes)
        if source["ins_value"]:
            self._release_ins(source["ins_value"], exclude=source_id)
        after = sorted({*merged_before, source_id, *earlier_merges})
        self._record(survivor["id"], "merge", {"merged_patients": [merged_before, after]})

    def _merged_ids(self, patient_id: int) -> list[int]:
        rows = self.conn.execute(_MERGED_INTO, {"pid": patient_id})
        return [r[0] for r in rows]

    def change_identifier(
        self, identity: PatientIdentity, prior: Sequence[Identifier], prior_ins, policy: Policy
    ) -> None:
        """A47: MRG-1's IPP becomes PID-3's on the same patient; or, when MRG-1 is an INS,
        the INS life cycle of §4.4 (replaced, deleted, downgraded)."""
        identity = self._canonical(identity)
        source_ipp = self._prior_ipp(prior)
        if source_ipp is None:
            self._change_ins(identity, prior_ins, policy)
            return
        source_id = self.find_patient_id(source_ipp)
        source = self._lock_in_order(source_id)[source_id] if source_id is not None else None
        record = _as_record(source)
        notes = rename_notes(record)
        if notes:
            self._note(notes)
            if source_id is not None:
                self._record(source_id, "change_id", {}, notes)
            return
        assert source_id is not None
        self._rename(source_id, source_ipp, identity, "change_id")

    def _rename(
        self, patient_id: int, old: Identifier, identity: PatientIdentity, operation: str
    ) -> None:
        new = matching_ipp(identity, old)
        if new is None:
            raise IdentityRefused(Refusal.IPP_MISSING, "PID-3 holds no IPP (CX-5 PI)")
        self._lock_in_order(patient_id)
        self._still(self.find_patient_id(old) == patient_id)
        owner = self.find_patient_id(new)
        action = plan_rename(_as_record(self._load(patient_id)), owner)
        if action is not MergeAction.RENAME:
            return
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
        self._record(patient_id, operation, {"identifiers": [before, after]})

    def _change_ins(
        self, identity: PatientIdentity, prior_ins: Sequence[StatedIns], policy: Policy
    ) -> None:
        """§4.4.2 to §4.4.4: the patient is found by MRG-1's INS (an active holder; the one
        PID-3's IPP designates when several hold it)."""
        values = sorted({s.value.upper() for s in prior_ins})
        holders = {
            r["id"] for v in values for r in self.conn.execute(_ACTIVE_HOLDERS, {"v": v}).mappings()
        }
        owner = self._find_by_ipps(identity)
        if owner is not None and holders and owner not in holders:
            raise IdentityRefused(
                Refusal.INS_AND_IPP_DISAGREE,
                "MRG-1's INS and PID-3's IPP designate two different patients",
            )
        target = owner if owner in holders else None
        if target is None and len(holders) == 1:
            target = next(iter(holders))
        if target is None:
            text = "MRG-1's INS designates no single active patient: nothing changed"
            self._note([Note(Finding.PRIOR_UNKNOWN, text, field="prior")])
            return
        current = self._lock_in_order(target)[target]
        decision = decide_ins_change(identity, current, policy)
        self._update_patient(target, decision, "change_ins", current)

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

    def _link_ipps(
        self, first: PatientIdentity, second: PatientIdentity
    ) -> tuple[Identifier, Identifier]:
        a, b = self._canonical(first).ipp, self._canonical(second).ipp
        assert a is not None and b is not None  # the parser refuses a PID without an IPP
        if (a.authority_key, a.value) == (b.authority_key, b.value):
            raise IdentityRefused(Refusal.LINK_TO_SELF, "A24 links a patient to itself", 2)
        return a, b

    def link(self, first: PatientIdentity, second: PatientIdentity) -> None:
        """A24: record a link between two identifiers (patients need not exist yet)."""
        a, b = self._link_ipps(first, second)
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
        a, b = self._link_ipps(first, second)
        removed = self.conn.execute(delete(patient_link).where(self._link_where(a, b))).rowcount
        if removed:
            self._record_link(a, b, "unlink", [True, None])

    def _record_link(self, a: Identifier, b: Identifier, operation: str, change: list) -> None:
        """History on each known patient, or on its survivor when it was merged away."""
        for this, other in ((a, b), (b, a)):
            pid = self.find_patient_id(this)
            if pid is not None:
                pid = survivor_id(self.conn, pid)
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
                notes=json.dumps([n.as_json() for n in c.notes]) if c.notes else None,
            )
            for c in repo.changes
        ]
    return [
        (statement, r) for statement, r in ((_INSERT_LINK, links), (_INSERT_HISTORY, rows)) if r
    ] + outbox_writes(entries)  # the change feed's events, in the same transaction
