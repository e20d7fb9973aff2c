"""The identity rules of PAM FR 2.11.1 (docs/identity-rules.md): given what a message says and
what the store holds, what the identity becomes and why. Pure: no I/O, no HL7 places.

Each rule is named in docs/identity-rules.md with its source and its unit test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from pamfr.identity.findings import Finding, IdentityRefused, Note, Refusal
from pamfr.identity.ins import INS_OIDS, Ins, InsKind, InvalidIns, check_ins
from pamfr.identity.model import (
    INS_TRAITS,
    IPP_TYPE,
    Identifier,
    IdentityValues,
    PatientIdentity,
    StatedIns,
    Status,
    empty_identity,
)
from pamfr.identity.status import StatusReading, read_status

_INS_PREFERENCE = list(INS_OIDS)  # NIR first (§4.4.1), then NIA, then test and demo
_TEST_KINDS = frozenset({InsKind.NIR_TEST, InsKind.NIR_DEMO})
_INS_SEXES = frozenset({"F", "M"})
_UNKNOWN_PLACE = "99999"  # INSEE: birth place unknown


@dataclass(frozen=True, slots=True)
class Policy:
    """What the message is and what the operator allows, as the rules need it."""

    production: bool = False  # MSH-11 = P: test and demo INS are not kept
    rewrites_identity: bool = True  # A28/A31; the ITI-31 events only with the operator's switch
    identity_event: bool = False  # ITI-30 (A28/A31 here): the sender means to change the identity


@dataclass(slots=True)
class Decision:
    """The identity after the message and the notes."""

    values: IdentityValues
    notes: list[Note] = field(default_factory=list)

    @property
    def ins(self) -> Ins | None:
        value, oid = self.values.ins_value, self.values.ins_oid
        return Ins(str(value), str(oid)) if value and oid else None

    def set(self, **values: object) -> None:
        self.values = replace(self.values, **values)  # type: ignore[arg-type]


# -- checks on the message alone (run where it is parsed) -----------------------------------


def check_statement(identity: PatientIdentity, *, needs_birth_name: bool, patient: int = 1) -> None:
    """Refuse what no store can make right: IPPs without authority or twice from one
    authority, an A28/A31 without a birth name, a qualified identity with a corrupt INS."""
    ipps = identity.ipps
    if not ipps:
        raise IdentityRefused(Refusal.IPP_MISSING, "no IPP among the identifiers", patient)
    if any(not i.has_authority for i in ipps):
        raise IdentityRefused(
            Refusal.IPP_WITHOUT_AUTHORITY, "an IPP has no assigning authority", patient
        )
    authorities = [i.authority_key for i in ipps]
    if len(set(authorities)) != len(authorities):
        raise IdentityRefused(
            Refusal.SECOND_IPP_SAME_AUTHORITY,
            "two IPPs of one assigning authority: a patient has one (send an A40 or A47)",
            patient,
        )
    if needs_birth_name and not isinstance(identity.birth_name, str):
        raise IdentityRefused(
            Refusal.BIRTH_NAME_MISSING, "no birth name (name of type L) for the patient", patient
        )
    choose_ins(identity.ins, _reading(identity))


def _reading(identity: PatientIdentity) -> StatusReading | None:
    return None if identity.status_codes is None else read_status(identity.status_codes)


def choose_ins(
    stated: Sequence[StatedIns], reading: StatusReading | None
) -> tuple[Ins | None, list[Note]]:
    """The INS a PID-3 offers (NIR before NIA, §4.4.1) and what was wrong with the others.

    A sender that states a qualified identity (VALI) with a corrupt INS gets a refusal; on
    any other message the INS is not kept anyway, and its fault is only noted."""
    claims = reading is not None and reading.claims_qualified
    valid: dict[str, Ins] = {}
    invalid: list[tuple[StatedIns, str]] = []
    notes: list[Note] = []
    for s in stated:
        try:
            ins = check_ins(s.value, s.oid)
        except InvalidIns as exc:
            invalid.append((s, str(exc)))
            continue
        previous = valid.get(ins.oid)
        if previous is not None and previous.value != ins.value:
            if claims:
                raise IdentityRefused(
                    Refusal.TWO_INS_OF_ONE_KIND, f"two different INS of kind {ins.kind}"
                )
            continue
        valid[ins.oid] = ins
    best = min(valid.values(), key=lambda i: _INS_PREFERENCE.index(i.oid), default=None)
    for s, why in invalid:
        nia_beside_nir = (
            INS_OIDS.get(s.oid) is InsKind.NIA and best is not None and best.kind is InsKind.NIR
        )
        if nia_beside_nir:
            notes.append(Note(Finding.NIA_INVALID_NIR_KEPT, f"INS-NIA not kept ({why}); NIR kept"))
        elif claims:
            raise IdentityRefused(Refusal.INS_CORRUPT, f"invalid INS: {why}")
        else:
            notes.append(Note(Finding.INS_INVALID, f"invalid INS not kept: {why}"))
    kinds = {i.kind for i in valid.values()}
    if InsKind.NIR in kinds and InsKind.NIA in kinds:
        notes.append(Note(Finding.NIR_PREFERRED, "INS-NIA and INS-NIR sent: the NIR is kept"))
    return best, notes


# -- what the identity becomes ---------------------------------------------------------------


def decide_identity(
    identity: PatientIdentity, stored: IdentityValues | None, policy: Policy
) -> Decision:
    """A28, A31 and the ITI-31 events: the identity after the message.

    An ITI-31 event on a known patient changes nothing unless the operator allows it; a note
    says so when it would have changed something."""
    if stored is not None and not policy.rewrites_identity:
        would = decide_identity(identity, stored, Policy(policy.production, True))
        if would.values != stored:
            text = "encounter event: the identity of a known patient is updated only by A31"
            return Decision(stored, [Note(Finding.ITI31_NOT_APPLIED, text)])
        return Decision(stored)
    values = stored if stored is not None else empty_identity()
    decision = Decision(values.with_values(identity.stated_values()))
    reading = _reading(identity)
    candidate, ins_notes = choose_ins(identity.ins, reading)
    decision.notes = [*identity.notes, *ins_notes]
    current = decision.ins
    if reading is None:
        new_ins = _status_absent(decision, identity, stored is None, current)
    else:
        new_ins = _status_stated(decision, identity, reading, candidate, current, policy)
    _settle(decision, new_ins, current)
    return decision


def decide_ins_change(
    identity: PatientIdentity, stored: IdentityValues, policy: Policy
) -> Decision:
    """A47 whose MRG-1 is the patient's INS (§4.4.2 to §4.4.4): the previous INS goes; a new
    one in PID-3 takes its place under the same rules as an A31; the status is PID-32's
    (unchanged when PID-32 is empty, but a qualified identity without an INS is validee).
    Demographics are not rewritten."""
    decision = Decision(stored)
    reading = _reading(identity)
    candidate, decision.notes = choose_ins(identity.ins, reading)
    previous = decision.ins
    if reading is None:
        new_ins = None
        if identity.ins:
            decision.notes.append(_not_kept(Finding.INS_STATUS_ABSENT, "PID-32 is empty"))
    else:
        new_ins = _status_stated(decision, identity, reading, candidate, None, policy)
    _settle(decision, new_ins, previous, noted=True)
    if decision.ins is None:
        decision.notes.append(Note(Finding.INS_DELETED, "INS deleted by the sender (A47)"))
    elif decision.ins != previous:
        decision.notes.append(Note(Finding.INS_REPLACED, "INS replaced by the sender (A47)"))
    return decision


def _not_kept(finding: Finding, why: str) -> Note:
    return Note(finding, f"INS not kept: {why}")


def _status_absent(
    decision: Decision, identity: PatientIdentity, is_new: bool, current: Ins | None
) -> Ins | None:
    """PID-32 empty: an update keeps status, attributes and INS; a new identity is
    provisoire. An INS in the message is not taken either way."""
    if identity.ins:
        decision.notes.append(_not_kept(Finding.INS_STATUS_ABSENT, "PID-32 is empty"))
    if is_new:
        decision.set(status=Status.PROVISOIRE.value)
        decision.notes.append(
            Note(Finding.STATUS_ABSENT_NEW, "PID-32 is empty: new identity is provisoire")
        )
        return None
    decision.notes.append(
        Note(Finding.STATUS_ABSENT_KEPT, "PID-32 is empty: status and attributes unchanged")
    )
    return _cleared(decision, identity, current)


def _cleared(decision: Decision, identity: PatientIdentity, current: Ins | None) -> Ins | None:
    """`""` under an INS authority deletes the stored INS (NIR and NIA)."""
    if not identity.ins_cleared:
        return current
    if current is not None:
        decision.notes.append(Note(Finding.INS_DELETED, "INS deleted by the sender"))
    return None


def _status_stated(
    decision: Decision,
    identity: PatientIdentity,
    reading: StatusReading,
    candidate: Ins | None,
    current: Ins | None,
    policy: Policy,
) -> Ins | None:
    notes = decision.notes
    decision.set(
        status=reading.status.value,
        attributes=" ".join(a.value for a in reading.attributes),
        other_status_codes=" ".join(reading.other_codes),
    )
    if reading.conflict:
        notes.append(
            Note(
                Finding.STATUS_CONFLICT,
                f"PID-32 holds {'+'.join(reading.conflict)}: the lower status "
                f"({reading.status.value}) is kept",
            )
        )
    if not reading.claims_qualified:
        if identity.ins:
            if reading.barring:
                why = f"PID-32 holds {'+'.join(reading.barring)}"
                notes.append(_not_kept(Finding.INS_DISQUALIFIED, why))
            else:
                notes.append(_not_kept(Finding.INS_NOT_VALIDATED, "PID-32 does not say VALI"))
        return None
    if candidate is None:
        return _cleared(decision, identity, current)
    if candidate.kind in _TEST_KINDS and policy.production:
        notes.append(
            _not_kept(Finding.INS_TEST_IN_PRODUCTION, "test or demo OID in a production message")
        )
        return current
    if candidate.kind is InsKind.NIA and current is not None and current.kind is InsKind.NIR:
        notes.append(
            _not_kept(Finding.NIA_NOT_REPLACING_NIR, "an INS-NIA does not replace a stored NIR")
        )
        return current
    return candidate


def unchanged_notes(policy: Policy, changed: bool) -> list[Note]:
    """An A28/A31 on a known patient that changes nothing pamfr keeps (it changed what pamfr
    does not keep: an address, a phone, the visit): said, so that the sender and the history
    know it was received and why nothing changed."""
    if changed or not policy.identity_event:
        return []
    text = (
        "nothing pamfr keeps changed: addresses, phones, visit (PV1) and movement (ZBE) "
        "data are not kept"
    )
    return [Note(Finding.NOTHING_KEPT_CHANGED, text)]


def missing_traits(values: IdentityValues) -> list[str]:
    """The INS traits an identity lacks (sex must be F or M; a birth place 99999, unknown,
    is none: INSi never returns it, FR Core fr-core-3)."""
    missing = [t for t in INS_TRAITS if not getattr(values, t)]
    if "birth_place_insee" not in missing and values.birth_place_insee == _UNKNOWN_PLACE:
        missing.append("birth_place_insee")
    if "sex" not in missing and values.sex not in _INS_SEXES:
        missing.append("sex")
    return missing


def _settle(
    decision: Decision, new_ins: Ins | None, current: Ins | None, noted: bool = False
) -> None:
    """Keep the INS only with its five traits; removal is noted; the status follows."""
    if new_ins is not None:
        missing = missing_traits(decision.values)
        if missing:
            decision.notes.append(
                Note(
                    Finding.INS_TRAITS_MISSING,
                    f"INS not kept: INS trait(s) missing: {', '.join(missing)}",
                    field=missing[0],
                )
            )
            new_ins = None
    if (
        new_ins is None
        and current is not None
        and not noted
        and not _mentions_removal(decision.notes)
    ):
        decision.notes.append(Note(Finding.INS_REMOVED, _removal_text(decision.values)))
    decision.set(
        ins_value=new_ins.value if new_ins else None, ins_oid=new_ins.oid if new_ins else None
    )
    status = decision.values.status
    if status == Status.VALIDEE and new_ins is not None:
        decision.set(status=Status.QUALIFIEE.value)
    elif status == Status.QUALIFIEE and new_ins is None:
        decision.set(status=Status.VALIDEE.value)


def _mentions_removal(notes: list[Note]) -> bool:
    return any(n.finding in (Finding.INS_DELETED, Finding.INS_REMOVED) for n in notes)


def _removal_text(values: IdentityValues) -> str:
    return f"stored INS removed: the identity is now {values.status}"


# -- merges, identifier changes, links -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """A stored patient as the merge rules see it."""

    id: int
    active: bool
    merged_into: int | None = None


class MergeAction(Enum):
    NOTHING = "nothing"
    RENAME = "rename"  # the target is unknown: A47 semantics (IHE ITI-30 expected actions)
    MERGE = "merge"


@dataclass(frozen=True, slots=True)
class MergePlan:
    action: MergeAction
    target: int | None = None  # the final survivor
    notes: tuple[Note, ...] = ()


def plan_merge(source: Record | None, target: Record | None) -> MergePlan:
    """A40: MRG-1's patient (source) into PID-3's (target). A target merged away stands for
    its final survivor; an unknown source is no action; merging a patient into itself or a
    source already merged into another survivor is refused."""
    if source is None:
        note = Note(Finding.PRIOR_UNKNOWN, "MRG-1 designates no known patient: nothing merged")
        return MergePlan(MergeAction.NOTHING, notes=(note,))
    if target is None:
        if not source.active:
            note = Note(Finding.MERGED_AWAY, "MRG-1 patient was merged into another: not renamed")
            return MergePlan(MergeAction.NOTHING, notes=(note,))
        return MergePlan(MergeAction.RENAME, source.id)
    notes: tuple[Note, ...] = ()
    survivor = target.id
    if not target.active and target.merged_into is not None:
        survivor = target.merged_into
        notes = (
            Note(
                Finding.MERGE_TARGET_REDIRECTED,
                "PID-3 patient was merged into another: merged into its survivor",
            ),
        )
    if survivor == source.id:
        raise IdentityRefused(Refusal.SAME_PATIENT, "MRG-1 and PID-3 designate the same patient")
    if not source.active:
        if source.merged_into == survivor:
            return MergePlan(MergeAction.NOTHING, survivor, notes)
        raise IdentityRefused(
            Refusal.PRIOR_MERGED_ELSEWHERE, "the MRG-1 patient was already merged into another"
        )
    return MergePlan(MergeAction.MERGE, survivor, notes)


def designate_by_prior_ins(
    owner: int | None, holders: Iterable[int], survivor: int | None = None
) -> tuple[int | None, list[Note]]:
    """§4.4.2 to §4.4.4: the patient an A47 with an INS in MRG-1 changes. `holders` are the
    active patients holding MRG-1's INS, `owner` the patient PID-3's IPP designates (if any),
    `survivor` the one that patient was merged into (if it was: the IPP stands for it, with
    the warning of an A40 into a merged-away patient): the owner when it holds the INS, else
    the only holder; refused when the IPP designates a patient that does not hold it."""
    held = set(holders)
    redirected: list[Note] = []
    if owner is not None and survivor is not None and survivor != owner:
        owner = survivor
        text = "PID-3's IPP belongs to a patient merged into another: its survivor is changed"
        redirected.append(Note(Finding.MERGE_TARGET_REDIRECTED, text))
    if owner is not None and held and owner not in held:
        raise IdentityRefused(
            Refusal.INS_AND_IPP_DISAGREE,
            "MRG-1's INS and PID-3's IPP designate two different patients",
        )
    if owner in held:
        return owner, redirected
    if len(held) == 1:
        return next(iter(held)), redirected
    text = "MRG-1's INS designates no single active patient: nothing changed"
    return None, [*redirected, Note(Finding.PRIOR_UNKNOWN, text, field="prior")]


def plan_rename(source: Record | None, owner_of_new: int | None) -> MergeAction:
    """A47 on an IPP: MRG-1's identifier becomes PID-3's on the same patient. Raises when the
    new identifier is another patient's (that is an A40)."""
    if source is None or not source.active:
        return MergeAction.NOTHING
    if owner_of_new is not None and owner_of_new != source.id:
        raise IdentityRefused(
            Refusal.NEW_IDENTIFIER_TAKEN,
            "the new identifier already belongs to another patient (send an A40 merge)",
        )
    return MergeAction.RENAME if owner_of_new is None else MergeAction.NOTHING


def update_notes(record: Record) -> list[Note]:
    """A28/A31/ITI-31 on the IPP of a patient merged into another: its identity is not
    updated (no refusal: the sender learns it from the warning)."""
    if record.active:
        return []
    text = "this IPP belongs to a patient merged into another: identity not updated"
    return [Note(Finding.MERGED_AWAY, text)]


def rename_notes(source: Record | None) -> list[Note]:
    if source is None:
        return [Note(Finding.PRIOR_UNKNOWN, "MRG-1 designates no known patient: nothing changed")]
    if not source.active:
        return [Note(Finding.MERGED_AWAY, "MRG-1 patient was merged into another: not changed")]
    return []


def prior_ipp(prior: Sequence[Identifier]) -> Identifier | None:
    """The IPP of MRG-1 (a CX-5 left empty is read as PI); refused without its authority."""
    return next(iter(prior_ipps(prior)), None)


def prior_ipps(prior: Sequence[Identifier]) -> list[Identifier]:
    """Every IPP of MRG-1 (one per authority in a multi-facility feed), in order; refused
    when one has no authority."""
    ipps = []
    for ident in prior:
        if ident.type in ("", IPP_TYPE):
            if not ident.has_authority:
                raise IdentityRefused(
                    Refusal.PRIOR_WITHOUT_AUTHORITY, "MRG-1 IPP has no assigning authority"
                )
            ipps.append(Identifier(ident.value, IPP_TYPE, ident.authority, ident.oid))
    return ipps


def designate_prior(owners: Sequence[int | None], survivors: Sequence[int | None]) -> int:
    """A40: which of MRG-1's IPPs stands for the source record: the first whose patient is
    known (an unknown first IPP beside a known one must not leave the merge undone), else the
    first. `owners` are the patients the IPPs designate (None: unknown), `survivors` the same
    read through merges; known IPPs of two different people are refused."""
    known = {s for s in survivors if s is not None}
    if len(known) > 1:
        raise IdentityRefused(
            Refusal.PRIOR_OF_TWO_PATIENTS, "MRG-1 holds IPPs of two different patients"
        )
    return next((n for n, owner in enumerate(owners) if owner is not None), 0)


def matching_ipp(identity: PatientIdentity, old: Identifier) -> Identifier | None:
    """The PID-3 IPP that replaces `old`: the one of the same authority, else the first."""
    same = [i for i in identity.ipps if i.authority_key == old.authority_key]
    return (same or list(identity.ipps) or [None])[0]


def identifiers_to_add(
    stated: Sequence[Identifier], known: Sequence[Identifier]
) -> list[Identifier]:
    """The stated identifiers a patient lacks. A patient has one IPP per authority: a
    different IPP from an authority it already has is refused (that is an A40 or A47)."""
    have = {(k.authority_key, k.value, k.type) for k in known}
    ipp_by_authority = {k.authority_key: k.value for k in known if k.type == IPP_TYPE}
    added: list[Identifier] = []
    for ident in stated:
        key = (ident.authority_key, ident.value, ident.type)
        if key in have:
            continue
        if ident.type == IPP_TYPE:
            if ipp_by_authority.get(ident.authority_key, ident.value) != ident.value:
                raise IdentityRefused(
                    Refusal.SECOND_IPP_SAME_AUTHORITY,
                    "the patient already has an IPP of this authority (send an A40 or A47)",
                )
            ipp_by_authority[ident.authority_key] = ident.value
        have.add(key)
        added.append(ident)
    return added


def check_one_patient(patient: int, owners: Iterable[int | None]) -> None:
    """The IPPs a PID-3 adds to a patient (`owners`: the patient each designates, None when
    free) are free or its own: an IPP of another patient means PID-3 names two patients
    (that is an A40 merge)."""
    if any(owner not in (None, patient) for owner in owners):
        raise IdentityRefused(
            Refusal.IPPS_OF_TWO_PATIENTS,
            "PID-3 holds IPPs of two different patients (send an A40 merge)",
        )


def link_notes(records: Sequence[Record | None]) -> list[Note]:
    """A24: an IPP of a patient merged into another stands for its survivor (the link is read
    on the survivor), with the warning of an A40 into a merged-away patient. `records`: the
    patients of the two PIDs, None when unknown."""
    return [
        Note(
            Finding.MERGE_TARGET_REDIRECTED,
            "this IPP belongs to a patient merged into another: linked to its survivor",
            patient=n,
        )
        for n, record in enumerate(records, start=1)
        if record is not None and not record.active and record.merged_into is not None
    ]


def check_link(first: PatientIdentity, second: PatientIdentity) -> None:
    a, b = first.ipp, second.ipp
    if a is not None and b is not None and (a.authority_key, a.value) == (b.authority_key, b.value):
        raise IdentityRefused(Refusal.LINK_TO_SELF, "A24 links a patient to itself", patient=2)
