"""Identity operations on the store, each run inside the caller's transaction.

Concurrency between several receivers on one PostgreSQL database rests on the unique IPP index
and on row locks (SELECT ... FOR UPDATE, taken in id order), never on in-process locks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import (
    Connection,
    and_,
    delete,
    select,
    update,
)

from pamfr.identity import changes as diffs
from pamfr.identity.collision import Flag, Holder, plan_collision
from pamfr.identity.findings import IdentityRefused, Note, Refusal
from pamfr.identity.model import (
    IPP_TYPE,
    Identifier,
    IdentifierRef,
    IdentityValues,
    PatientIdentity,
    StatedIns,
)
from pamfr.identity.rules import (
    Decision,
    MergeAction,
    Policy,
    Record,
    check_one_patient,
    decide_identity,
    decide_ins_change,
    designate_by_prior_ins,
    designate_prior,
    identifiers_to_add,
    link_notes,
    matching_ipp,
    plan_merge,
    plan_rename,
    prior_ipp,
    prior_ipps,
    rename_notes,
    unchanged_notes,
    update_notes,
)
from pamfr.store import statements as sql
from pamfr.store.authorities import AuthorityBook
from pamfr.store.changes import Change, MessageChanges, NewLink, PatientRef
from pamfr.store.namekeys import name_keys
from pamfr.store.pgbatch import Prefetched
from pamfr.store.schema import identifier, patient_link
from pamfr.store.sink import ImmediateSink, WriteSink


class ConcurrentChange(Exception):
    """What was looked up changed under a concurrent writer: the caller runs the message again."""


def _stored(row: dict) -> str:
    """An identifier row as the history records it."""
    return IdentifierRef.of_row(row).stored()


def _as_identifier(row: dict) -> Identifier:
    return Identifier(row["value"], row["type"], row["authority"], row["oid"])


def _as_record(row: dict | None) -> Record | None:
    return None if row is None else Record(row["id"], bool(row["active"]), row["merged_into"])


def survivor_id(conn: Connection, patient_id: int) -> int:
    """The patient a merged record points at (merges keep chains flat), or the patient."""
    merged_into = conn.execute(sql.SURVIVOR, {"pid": patient_id}).scalar_one_or_none()
    return merged_into if merged_into is not None else patient_id


class IdentityRepository:
    """Loads what the identity rules need, asks them (pamfr.identity.rules), writes what they
    decide through the transaction's sink (store/sink). One per message: `changes()` is what
    the message did, which becomes history rows and events once the message is logged.

    Reads go to `conn`; `prefetched`, the batch's look-ahead (PostgreSQL), answers the
    usual look-ups without a round trip."""

    def __init__(
        self,
        conn: Connection,
        now: datetime,
        prefetched: Prefetched | None = None,
        authorities: AuthorityBook | None = None,
        sink: WriteSink | None = None,
    ) -> None:
        self.conn = conn
        self.now = now
        self._records: list[Change] = []
        self._notes: list[Note] = []
        self._link: NewLink | None = None
        self._lock = conn.dialect.name == "postgresql"
        self._prefetched = prefetched
        self._sink = sink if sink is not None else ImmediateSink(conn)
        self._authorities = authorities if authorities is not None else AuthorityBook()

    def changes(self) -> MessageChanges:
        """What the message did so far: its history records, notes and new link."""
        return MessageChanges(self.now, tuple(self._records), tuple(self._notes), self._link)

    def _note(self, notes) -> None:
        self._notes.extend(notes)

    # -- look-ups -----------------------------------------------------------

    def find_patient_id_of(self, ident: Identifier) -> int | None:
        params = {"k": ident.authority_key, "v": ident.value, "t": ident.type or IPP_TYPE}
        return self.conn.execute(sql.FIND_PATIENT_ID, params).scalar_one_or_none()

    def _find_by_ipps(self, identity: PatientIdentity) -> int | None:
        for ipp in identity.ipps:
            found = self.find_patient_id_of(ipp)
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
                query = sql.LOAD_BY_IPP_FOR_UPDATE if self._lock else sql.LOAD_BY_IPP
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
        query = sql.LOAD_PATIENT_FOR_UPDATE if self._lock else sql.LOAD_PATIENT
        return dict(self.conn.execute(query, {"pid": patient_id}).mappings().one())

    def _lock_in_order(self, *ids: int) -> dict[int, dict]:
        return {pid: self._load(pid) for pid in sorted(set(ids))}

    def _identifiers(self, patient_id: int) -> list[dict]:
        if self._prefetched is not None and patient_id in self._prefetched.identifiers:
            # Read once: a message changes its patient's identifiers after this call only.
            return self._prefetched.identifiers.pop(patient_id)
        rows = self.conn.execute(sql.PATIENT_IDENTIFIERS, {"pid": patient_id})
        return [dict(r) for r in rows.mappings()]

    def _canonical(self, identity: PatientIdentity) -> PatientIdentity:
        return self._authorities.canonical_identity(self.conn, identity, self.now, self._sink)

    # -- writes -------------------------------------------------------------

    def _record(
        self,
        patient_id: PatientRef,
        operation: str,
        changes: dict[str, list],
        notes: Sequence[Note] = (),
    ) -> None:
        if changes or notes:
            self._records.append(Change(patient_id, operation, changes, tuple(notes)))

    def _insert_patient(self, identity: PatientIdentity, decision: Decision) -> None:
        """A new patient, whose IPPs the caller has just found free (a concurrent writer that
        takes one first makes the unique index refuse ours, and the message runs again)."""
        columns = decision.values.columns()
        notes = list(decision.notes)
        new_ins = decision.values.ins_value
        row = {
            **sql.NULL_COLUMNS,  # spelled out, so that held rows share one INSERT statement
            "active": True,
            "ins_collision": False,
            "created_at": self.now,
            "updated_at": self.now,
            **columns,
            **name_keys(columns),
        }
        plan = plan_collision(None, self._active_holders(new_ins, exclude=None))
        if plan.collision:
            row["ins_collision"] = columns["ins_collision"] = True
        notes += plan.notes
        self._set_flags(plan.others)
        patient_id = self._sink.insert_patient(row)
        if self._prefetched is not None and new_ins:
            self._prefetched.ins_moved(patient_id, None, str(new_ins))
        new_ids = self._write_identifiers(patient_id, identity.identifiers)
        changes = diffs.created(columns)
        if new_ids:
            changes["identifiers"] = [[], new_ids]
        self._note(notes)
        # "create" whatever the event: an A31 or an A01 that inserts creates the patient
        self._record(patient_id, "create", changes, notes)

    def _write_identifiers(
        self, patient_id: PatientRef, identifiers: Sequence[Identifier]
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
        self._sink.insert_identifiers(rows)
        return [i.ref.stored() for i in identifiers]

    def _add_identifiers(
        self, patient_id: int, identity: PatientIdentity, known: list[dict]
    ) -> list[str]:
        """Add the PID-3 identifiers the patient lacks: one IPP per authority, and never an
        IPP of another patient (that is an A40)."""
        added = identifiers_to_add(identity.identifiers, [_as_identifier(k) for k in known])
        owners = (self.find_patient_id_of(i) for i in added if i.type == IPP_TYPE)
        check_one_patient(patient_id, owners)
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
        policy: Policy | None = None,
    ) -> None:
        """Write what the rules decided. `identity`: the PID whose identifiers the patient
        gets; `still_owned`: an IPP looked up before the row lock, which must still be this
        patient's now that the lock is held."""
        values = decision.values.columns()
        notes = list(decision.notes)
        old_ins, new_ins = current["ins_value"], values["ins_value"]
        if new_ins != old_ins or (new_ins and not current["active"]):
            kept = self._active_holders(new_ins, exclude=patient_id)
            if self._prefetched is not None:
                self._prefetched.ins_moved(patient_id, old_ins, new_ins)
            let_go = old_ins if old_ins != new_ins else None  # the same INS: kept, not let go of
            released = self._active_holders(let_go, exclude=patient_id)
            plan = plan_collision(patient_id, kept, released)
            values["ins_collision"] = plan.collision
            notes += plan.notes
            self._set_flags(plan.others)
        diff = diffs.changed(current, values)
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
                    before if before is not None else [_stored(k) for k in known],
                    [*map(_stored, known), *added],
                ]
        if policy is not None:
            notes += unchanged_notes(policy, bool(diff))
        changed = {k: v[1] for k, v in diff.items() if k in values}
        if changed:
            row = {"pid": patient_id, "updated_at": self.now, **changed, **name_keys(changed)}
            self._sink.update_patient(row)
        self._note(notes)
        self._record(patient_id, operation, diff, notes)

    # -- one INS, one active patient -------------------------------------------

    def _active_holders(self, ins_value: object, exclude: int | None) -> list[Holder]:
        """The active patients holding this INS (none without an INS); on PostgreSQL under a
        lock on the INS, so that two receivers giving it to two patients at once see each
        other. The batch's prefetch answers the usual case (nobody but `exclude` holds it)
        without a round trip."""
        if not ins_value:
            return []
        ins_value, pf = str(ins_value), self._prefetched
        if pf is not None and not pf.others_may_hold(ins_value, exclude):
            return []
        self._sink.flush()  # earlier messages of the batch must be seen
        if self._lock:
            self.conn.execute(sql.LOCK_INS, {"v": ins_value})
        rows = self.conn.execute(sql.ACTIVE_HOLDERS, {"v": ins_value}).mappings()
        return [Holder(r["id"], bool(r["ins_collision"])) for r in rows]

    def _set_flags(self, flags: Sequence[Flag]) -> None:
        for flag in flags:
            self._sink.execute(sql.SET_COLLISION, {"pid": flag.id, "flag": flag.collision})
            change = {"ins_collision": [not flag.collision, flag.collision]}
            self._record(flag.id, "collision", change, [flag.note])

    # -- operations (PAM FR 2.11.1 and the IHE ITI-30 expected actions) -------------------

    def upsert(self, identity: PatientIdentity, operation: str, policy: Policy) -> None:
        """A28 / A31 / ITI-31 events: create the patient, or update it when its IPP is known."""
        identity = self._canonical(identity)
        current, still_owned = self._find_and_load(identity)
        if current is None:
            self._insert_patient(identity, decide_identity(identity, None, policy))
            return
        patient_id = current["id"]
        if not current["active"]:
            if still_owned is not None:
                self._still(self.find_patient_id_of(still_owned) == patient_id)
            notes = update_notes(_as_record(current))
            self._note(notes)
            self._record(patient_id, operation, {}, notes)
            return
        decision = decide_identity(identity, IdentityValues.from_row(current), policy)
        self._update_patient(
            patient_id,
            decision,
            "update",
            current,
            identity=identity if policy.rewrites_identity else None,
            still_owned=still_owned,
            policy=policy,
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
        source_ipps = [self._authorities.canonical(self.conn, i) for i in prior_ipps(prior)]
        if not source_ipps:
            raise IdentityRefused(Refusal.PRIOR_MISSING, "MRG-1 holds no IPP (CX-5 PI)")
        owners = [self.find_patient_id_of(i) for i in source_ipps]
        source_ipp = source_ipps[designate_prior(owners, self._survivors(owners))]
        source_id = self.find_patient_id_of(source_ipp)
        target_id = self._find_by_ipps(identity)
        self._one_target(identity, target_id)
        rows = self._lock_in_order(*(i for i in (source_id, target_id) if i is not None))
        self._still(
            self.find_patient_id_of(source_ipp) == source_id
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
            self._sink.execute(sql.SET_MERGED_INTO, {"pid": earlier, "into": survivor_id})
            self._record(earlier, "merge", {"merged_into": [source_id, survivor_id]})
        self._sink.execute(sql.DEACTIVATE, {"pid": source_id, "into": survivor_id, "now": self.now})
        source_changes: dict[str, list] = {
            "active": [True, False],
            "merged_into": [None, survivor_id],
        }
        if source["ins_collision"]:  # a merged-away record is never in collision
            self._sink.execute(sql.SET_COLLISION, {"pid": source_id, "flag": False})
            source_changes["ins_collision"] = [True, False]
        self._record(source_id, "merge", source_changes, plan.notes)
        released = self._active_holders(source["ins_value"], exclude=source_id)
        self._set_flags(plan_collision(source_id, holders_of_released=released).others)
        after = sorted({*merged_before, source_id, *earlier_merges})
        self._record(survivor["id"], "merge", {"merged_patients": [merged_before, after]})

    def _one_target(self, identity: PatientIdentity, target_id: int | None) -> None:
        """An A40's PID-3 designates one patient: its IPPs are free or of that patient (or of
        records merged into it); IPPs of two patients leave the target unknown, refused."""
        if target_id is None or len(identity.ipps) < 2:
            return
        owners = [self.find_patient_id_of(ipp) for ipp in identity.ipps]
        check_one_patient(survivor_id(self.conn, target_id), self._survivors(owners))

    def _survivors(self, owners: Sequence[int | None]) -> list[int | None]:
        """Each patient read through merges (None stays None)."""
        return [survivor_id(self.conn, o) if o is not None else None for o in owners]

    def _merged_ids(self, patient_id: int) -> list[int]:
        rows = self.conn.execute(sql.MERGED_INTO, {"pid": patient_id})
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
        source_id = self.find_patient_id_of(source_ipp)
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
        self._still(self.find_patient_id_of(old) == patient_id)
        owner = self.find_patient_id_of(new)
        action = plan_rename(_as_record(self._load(patient_id)), owner)
        if action is not MergeAction.RENAME:
            return
        before = [_stored(k) for k in self._identifiers(patient_id)]
        self._sink.execute(
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
        after = [_stored(k) for k in self._identifiers(patient_id)]
        self._record(patient_id, operation, {"identifiers": [before, after]})

    def _change_ins(
        self, identity: PatientIdentity, prior_ins: Sequence[StatedIns], policy: Policy
    ) -> None:
        """§4.4.2 to §4.4.4: the patient is found by MRG-1's INS (an active holder; the one
        PID-3's IPP designates when several hold it)."""
        values = sorted({s.value.upper() for s in prior_ins})
        holders = {h.id for v in values for h in self._active_holders(v, exclude=None)}
        owner = self._find_by_ipps(identity)
        survivor = survivor_id(self.conn, owner) if owner is not None else None
        target, notes = designate_by_prior_ins(owner, holders, survivor)
        if target is None:
            self._note(notes)
            return
        current = self._lock_in_order(target)[target]
        decision = decide_ins_change(identity, IdentityValues.from_row(current), policy)
        decision.notes[:0] = notes
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
        notes = link_notes([self._link_record(a), self._link_record(b)])
        self._note(notes)
        exists = self.conn.execute(select(patient_link.c.id).where(self._link_where(a, b))).first()
        if exists:
            self._record_link(a, b, "link", None, notes)
            return
        (ak, av), (bk, bv) = self._link_pair(a, b)
        # Written with the history, once the message row (which the link cites) exists.
        self._link = NewLink(ak, av, bk, bv, self.now)
        self._record_link(a, b, "link", [None, True], notes)

    def unlink(self, first: PatientIdentity, second: PatientIdentity) -> None:
        """A37: remove a link; an unknown link is not an error."""
        a, b = self._link_ipps(first, second)
        removed = self._sink.execute(delete(patient_link).where(self._link_where(a, b))).rowcount
        if removed:
            self._record_link(a, b, "unlink", [True, None])

    def _link_record(self, ident: Identifier) -> Record | None:
        pid = self.find_patient_id_of(ident)
        if pid is None:
            return None
        survivor = survivor_id(self.conn, pid)
        return Record(pid, survivor == pid, None if survivor == pid else survivor)

    def _record_link(
        self,
        a: Identifier,
        b: Identifier,
        operation: str,
        change: list | None,
        notes: Sequence[Note] = (),
    ) -> None:
        """History on each known patient, or on its survivor when it was merged away; `change`
        None: the link was there already, only the notes are written."""
        for n, (this, other) in enumerate(((a, b), (b, a)), start=1):
            pid = self.find_patient_id_of(this)
            if pid is not None:
                pid = survivor_id(self.conn, pid)
                changes = {} if change is None else {f"link:{other.ref.stored()}": change}
                self._record(pid, operation, changes, [x for x in notes if x.patient == n])
