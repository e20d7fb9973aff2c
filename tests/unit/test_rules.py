"""The identity rules of docs/identity-rules.md, each on the pure identity module: what a
message says, what the store holds, what the identity becomes and why. No database, no HL7."""

from __future__ import annotations

import pytest

from pamfr.identity.authority import canonical, named_pairs
from pamfr.identity.collision import Holder, plan_collision
from pamfr.identity.findings import Finding, IdentityRefused, Refusal
from pamfr.identity.ins import nir_key
from pamfr.identity.model import (
    KEEP,
    BirthDate,
    Identifier,
    IdentityValues,
    PatientIdentity,
    StatedIns,
    Status,
    empty_identity,
)
from pamfr.identity.rules import (
    MergeAction,
    Policy,
    Record,
    check_one_patient,
    check_statement,
    decide_identity,
    decide_ins_change,
    designate_by_prior_ins,
    designate_prior,
    identifiers_to_add,
    link_notes,
    plan_merge,
    plan_rename,
)
from pamfr.identity.status import ins_usable, read_status

NIR_OID, NIA_OID = "1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9"
TEST_OID, DEMO_OID = "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"
IPP = Identifier("IPP1", "PI", "CHU-X", "1.2.250.1.999.1.1")


def with_key(body: str) -> str:
    return f"{body}{nir_key(body):02d}"


NIR = with_key("1790375123456")
NIR2 = with_key("1790375123457")
NIA = with_key("1790375123999")
BAD_KEY = NIR[:13] + ("00" if NIR[13:] != "00" else "01")

P, R, V, Q = (
    s.value for s in (Status.PROVISOIRE, Status.RECUPEREE, Status.VALIDEE, Status.QUALIFIEE)
)

TRAITS = dict(
    birth_name="DUPONT",
    first_given_name="JEAN",
    birth_given_names=("JEAN", "PAUL"),
    birth_date=BirthDate(1979, 3, 28),
    sex="M",
    birth_place_insee="75056",
)


def pid(
    *pid32: str, ins: tuple[StatedIns, ...] = (), absent: bool = False, **fields
) -> PatientIdentity:
    """A PID with the five traits, `ins` in PID-3 and PID-32 codes (absent: PID-32 empty)."""
    return PatientIdentity(
        identifiers=(IPP,),
        ins=ins,
        status_codes=None if absent else pid32,
        **{**TRAITS, **fields},
    )


def nir(value: str = NIR, oid: str = NIR_OID) -> StatedIns:
    return StatedIns(value, oid, "ASIP-SANTE-INS-NIR")


def nia(value: str = NIA) -> StatedIns:
    return StatedIns(value, NIA_OID, "ASIP-SANTE-INS-NIA")


def new(identity: PatientIdentity, production: bool = False):
    return decide_identity(identity, None, Policy(production=production))


def stored(**values) -> IdentityValues:
    """A stored qualified identity with NIR, unless told otherwise."""
    base = dict(
        birth_name="DUPONT",
        first_given_name="JEAN",
        birth_given_names="JEAN PAUL",
        birth_date="1979-03-28",
        sex="M",
        birth_place_insee="75056",
        ins_value=NIR,
        ins_oid=NIR_OID,
        status=Q,
    )
    return empty_identity().with_values({**base, **values})


def findings(decision) -> list[Finding]:
    return [n.finding for n in decision.notes]


def warned(decision) -> list[Finding]:
    return [n.finding for n in decision.notes if n.warning]


# -- S1 the status from PID-32 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid32", "with_ins", "status", "kept"),
    [
        (("VALI",), True, Q, True),
        (("VALI",), False, V, False),
        (("QUAL",), True, Q, True),  # QUAL read as VALI
        (("QUAL",), False, V, False),  # no longer an AE: QUAL is VALI
        (("PROV",), False, P, False),
        (("VIDE",), False, P, False),
        (("RECUP",), False, R, False),
        (("RECUP",), True, R, False),  # RECUP is not VALI: the INS is not kept
        (("PROV",), True, P, False),  # the Ségur test: PROV + INS -> no INS, provisoire
        ((" vali ",), True, Q, True),
    ],
)
def test_s1_status_table(pid32, with_ins, status, kept):
    decision = new(pid(*pid32, ins=(nir(),) if with_ins else ()))
    assert decision.values.status == status
    assert (decision.ins is not None) is kept


def test_s1_zfd5_insi_does_not_make_a_prov_identity_recuperee():
    decision = new(pid("PROV", identity_mode="INSI"))
    assert decision.values.status == P


# -- S2 two exclusive statuses --------------------------------------------------------------------


@pytest.mark.parametrize(("pid32", "status"), [(("PROV", "VALI"), P), (("VALI", "RECUP"), R)])
def test_s2_the_lower_status_wins_with_a_warning(pid32, status):
    decision = new(pid(*pid32, ins=(nir(),)))
    assert decision.values.status == status
    assert decision.ins is None
    assert Finding.STATUS_CONFLICT in warned(decision)


def test_s2_prov_and_vide_together_are_no_conflict():
    assert Finding.STATUS_CONFLICT not in findings(new(pid("PROV", "VIDE")))


# -- S3 attributes --------------------------------------------------------------------------------


@pytest.mark.parametrize("attribute", ["DOUT", "FICT"])
@pytest.mark.parametrize("status", ["VALI", "QUAL", "RECUP", "PROV"])
def test_s3_douteuse_or_fictive_is_provisoire_without_ins(status, attribute):
    decision = new(pid(status, attribute, ins=(nir(),)))
    assert decision.values.status == P
    assert decision.ins is None
    assert {"DOUT": "douteuse", "FICT": "fictive"}[attribute] in decision.values.attributes


def test_s3_homa_is_an_attribute_only_and_homd_another_code():
    decision = new(pid("VALI", "HOMA", "HOMD", ins=(nir(),)))
    assert decision.values.status == Q
    assert decision.values.attributes == "homonyme"
    assert decision.values.other_status_codes == "HOMD"


def test_s3_reading_keeps_other_0445_codes():
    reading = read_status(["VALI", "DOUB", "CACH"])
    assert reading.other_codes == ("DOUB", "CACH") and reading.claims_qualified


# -- G1 the INS gate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid32", "finding"),
    [
        (("PROV",), Finding.INS_NOT_VALIDATED),
        (("VIDE",), Finding.INS_NOT_VALIDATED),
        (("RECUP",), Finding.INS_NOT_VALIDATED),
        (("VALI", "INVA"), Finding.INS_DISQUALIFIED),
        (("VALI", "USUR"), Finding.INS_DISQUALIFIED),
        (("VALI", "DOUT"), Finding.INS_DISQUALIFIED),
        (("VALI", "FICT"), Finding.INS_DISQUALIFIED),
    ],
)
def test_g1_ins_not_kept_without_vali_or_with_a_barring_code(pid32, finding):
    decision = new(pid(*pid32, ins=(nir(),)))
    assert decision.ins is None
    assert finding in warned(decision)
    (note,) = [n for n in decision.notes if n.finding is finding]
    assert NIR not in note.text  # no patient data in a warning


@pytest.mark.parametrize(
    ("missing", "value"),
    [
        ("birth_name", None),
        ("first_given_name", None),
        ("birth_date", None),
        ("sex", None),
        ("sex", "U"),
        ("birth_place_insee", None),
        ("birth_place_insee", "99999"),  # birth place unknown: INSi never gives it
    ],
)
def test_g1_ins_kept_only_with_the_five_traits(missing, value):
    decision = new(pid("VALI", ins=(nir(),), **{missing: value}))
    assert decision.ins is None
    assert decision.values.status == V
    (note,) = [n for n in decision.notes if n.finding is Finding.INS_TRAITS_MISSING]
    assert note.field == missing and note.warning


def test_g1_traits_are_those_of_the_identity_after_the_message():
    """An empty field keeps the stored trait: an A31 that leaves the birth place empty keeps
    the INS; one that clears it with `""` loses it."""
    kept = decide_identity(pid("VALI", ins=(nir(),), birth_place_insee=KEEP), stored(), Policy())
    assert kept.ins is not None and kept.values.status == Q
    cleared = decide_identity(pid("VALI", birth_place_insee=None), stored(), Policy())
    assert cleared.ins is None and cleared.values.status == V
    assert Finding.INS_TRAITS_MISSING in warned(cleared)


# -- G2 removal of a stored INS -------------------------------------------------------------------


@pytest.mark.parametrize(
    "pid32",
    [
        ("PROV",),
        ("VIDE",),
        ("RECUP",),
        ("VALI", "DOUT"),
        ("VALI", "FICT"),
        ("VALI", "INVA"),
        ("VALI", "USUR"),
    ],
)
def test_g2_a_status_that_is_not_qualifiable_removes_the_stored_ins(pid32):
    decision = decide_identity(pid(*pid32), stored(), Policy())
    assert decision.ins is None
    assert decision.values.status != Q
    assert Finding.INS_REMOVED in findings(decision)


def test_g2_vali_without_ins_in_pid3_keeps_the_stored_ins():
    decision = decide_identity(pid("VALI"), stored(), Policy())
    assert decision.ins is not None and decision.values.status == Q
    assert decision.notes == []


def test_g2_explicit_null_ins_deletes_it():
    identity = PatientIdentity(identifiers=(IPP,), ins_cleared=True, status_codes=("VALI",))
    decision = decide_identity(identity, stored(), Policy())
    assert decision.ins is None and decision.values.status == V
    assert Finding.INS_DELETED in findings(decision)


# -- G3 PID-32 empty ------------------------------------------------------------------------------


def test_g3_update_with_pid32_empty_keeps_status_attributes_and_ins():
    before = stored(attributes="homonyme")
    decision = decide_identity(pid(absent=True, ins=(nir(NIR2),)), before, Policy())
    assert (decision.ins.value, decision.values.status) == (NIR, Q)
    assert decision.values.attributes == "homonyme"
    assert Finding.STATUS_ABSENT_KEPT in warned(decision)
    assert Finding.INS_STATUS_ABSENT in warned(decision)


def test_g3_creation_with_pid32_empty_is_provisoire_without_ins():
    decision = new(pid(absent=True, ins=(nir(),)))
    assert decision.values.status == P and decision.ins is None
    assert {Finding.STATUS_ABSENT_NEW, Finding.INS_STATUS_ABSENT} <= set(warned(decision))


# -- G4 keys and OIDs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [nir(BAD_KEY), StatedIns(NIR, "1.2.250.1.213.1.4.2"), nir(NIR[:14])]
)
def test_g4_a_corrupt_ins_on_a_vali_message_is_refused(bad):
    with pytest.raises(IdentityRefused) as caught:
        check_statement(pid("VALI", ins=(bad,)), needs_birth_name=True)
    assert caught.value.reason is Refusal.INS_CORRUPT


def test_g4_a_corrupt_ins_on_a_prov_message_is_a_warning():
    check_statement(pid("PROV", ins=(nir(BAD_KEY),)), needs_birth_name=True)
    decision = new(pid("PROV", ins=(nir(BAD_KEY),)))
    assert decision.ins is None
    assert Finding.INS_INVALID in warned(decision)


def test_g4_an_nia_with_a_bad_key_beside_a_valid_nir_keeps_the_nir():
    identity = pid("VALI", ins=(nia(NIA[:13] + "00"), nir()))
    check_statement(identity, needs_birth_name=True)
    decision = new(identity)
    assert decision.ins.value == NIR
    assert Finding.NIA_INVALID_NIR_KEPT in warned(decision)


# -- G5 NIA and NIR -------------------------------------------------------------------------------


def test_g5_nir_is_kept_when_both_come():
    decision = new(pid("VALI", ins=(nia(), nir())))
    assert (decision.ins.value, decision.ins.oid) == (NIR, NIR_OID)
    assert Finding.NIR_PREFERRED in findings(decision)


def test_g5_a_later_nia_does_not_replace_a_stored_nir():
    decision = decide_identity(pid("VALI", ins=(nia(),)), stored(), Policy())
    assert decision.ins.value == NIR
    assert Finding.NIA_NOT_REPLACING_NIR in warned(decision)


def test_g5_a_nir_replaces_a_stored_nia():
    decision = decide_identity(
        pid("VALI", ins=(nir(),)), stored(ins_value=NIA, ins_oid=NIA_OID), Policy()
    )
    assert (decision.ins.value, decision.ins.oid) == (NIR, NIR_OID)


# -- G6 test and demo INS in production -----------------------------------------------------------


@pytest.mark.parametrize("oid", [TEST_OID, DEMO_OID])
def test_g6_test_ins_not_kept_in_production(oid):
    decision = new(pid("VALI", ins=(nir(oid=oid),)), production=True)
    assert decision.ins is None and decision.values.status == V
    assert Finding.INS_TEST_IN_PRODUCTION in warned(decision)
    assert new(pid("VALI", ins=(nir(oid=oid),)), production=False).ins is not None


# -- G7 one INS, one active patient ---------------------------------------------------------------


def test_g7_ins_usable_only_on_an_active_record_without_collision():
    assert ins_usable(Q, active=True, collision=False)
    assert not ins_usable(Q, active=False)
    assert not ins_usable(Q, collision=True)
    assert not ins_usable(V)


def test_g7_a_new_holder_beside_an_active_one_flags_both_with_a_warning():
    plan = plan_collision(None, holders_of_kept=(Holder(7, collision=False),))
    assert plan.collision
    assert [n.finding for n in plan.notes] == [Finding.INS_COLLISION]
    assert all(n.warning for n in plan.notes)
    assert [(f.id, f.collision, f.note.finding) for f in plan.others] == [
        (7, True, Finding.INS_COLLISION)
    ]


def test_g7_a_holder_already_flagged_is_not_flagged_again():
    plan = plan_collision(3, holders_of_kept=(Holder(3, False), Holder(7, True), Holder(8, False)))
    assert plan.collision
    assert [f.id for f in plan.others] == [8]


def test_g7_no_collision_when_the_only_holder_is_this_patient():
    plan = plan_collision(3, holders_of_kept=(Holder(3, collision=False),))
    assert plan == plan_collision(3)
    assert not plan.collision and plan.notes == () and plan.others == ()


def test_g7_resolved_when_the_ins_is_let_go_and_one_flagged_holder_remains():
    plan = plan_collision(3, holders_of_released=(Holder(3, True), Holder(7, True)))
    assert not plan.collision and plan.notes == ()
    assert [(f.id, f.collision, f.note.finding) for f in plan.others] == [
        (7, False, Finding.INS_COLLISION_RESOLVED)
    ]
    assert not plan.others[0].note.warning


def test_g7_still_in_collision_while_two_others_hold_the_ins():
    released = (Holder(3, True), Holder(7, True), Holder(8, True))
    assert plan_collision(3, holders_of_released=released) == plan_collision(3)


def test_g7_replacing_an_ins_flags_the_new_holders_and_frees_the_old_one():
    plan = plan_collision(3, (Holder(3, False), Holder(8, False)), (Holder(7, True),))
    assert plan.collision
    assert [(f.id, f.collision) for f in plan.others] == [(8, True), (7, False)]


def test_g7_a_merge_of_two_records_sharing_the_ins_resolves_it():
    """A40: the merged-away record lets go of the INS; the survivor is left alone with it."""
    source, survivor = Holder(4, collision=True), Holder(9, collision=True)
    plan = plan_collision(source.id, holders_of_released=(survivor,))
    assert not plan.collision and plan.notes == ()
    assert [(f.id, f.collision) for f in plan.others] == [(9, False)]
    # the holders may be read before the merged-away record is deactivated: same outcome
    assert plan_collision(source.id, holders_of_released=(source, survivor)) == plan
    assert plan.others[0].note.finding is Finding.INS_COLLISION_RESOLVED


# -- L1 the INS life cycle of §4.4 (A47 with an INS in MRG-1) -------------------------------------


def test_l1_new_nir_replaces_the_previous_one():
    decision = decide_ins_change(pid("VALI", ins=(nir(NIR2),)), stored(), Policy())
    assert decision.ins.value == NIR2 and decision.values.status == Q
    assert Finding.INS_REPLACED in findings(decision)


def test_l1_ins_deleted_keeps_the_status_of_pid32():
    identity = PatientIdentity(identifiers=(IPP,), ins_cleared=True, status_codes=("VALI",))
    decision = decide_ins_change(identity, stored(ins_value=NIR, ins_oid=NIR_OID), Policy())
    assert decision.ins is None and decision.values.status == V
    assert Finding.INS_DELETED in findings(decision)


def test_l1_downgrade_with_prov_makes_the_identity_provisoire():
    identity = PatientIdentity(identifiers=(IPP,), ins_cleared=True, status_codes=("PROV",))
    decision = decide_ins_change(identity, stored(), Policy())
    assert decision.ins is None and decision.values.status == P


def test_l1_pid32_empty_deletes_the_ins_and_keeps_validee():
    identity = PatientIdentity(identifiers=(IPP,), ins_cleared=True)
    decision = decide_ins_change(identity, stored(), Policy())
    assert decision.ins is None and decision.values.status == V


def test_l1_demographics_are_not_rewritten():
    identity = pid("VALI", ins=(nir(NIR2),), birth_name="OTHER", birth_place_insee=None)
    decision = decide_ins_change(identity, stored(), Policy())
    assert decision.values.birth_name == "DUPONT"
    assert decision.values.birth_place_insee == "75056"


# -- E1 A28 and A31 need the birth name -----------------------------------------------------------


@pytest.mark.parametrize("birth_name", [KEEP, None])
def test_e1_a28_or_a31_without_birth_name_is_refused(birth_name):
    with pytest.raises(IdentityRefused) as caught:
        check_statement(pid("VALI", birth_name=birth_name), needs_birth_name=True)
    assert caught.value.reason is Refusal.BIRTH_NAME_MISSING
    check_statement(pid("VALI", birth_name=birth_name), needs_birth_name=False)


# -- E2 encounter events --------------------------------------------------------------------------


def test_e2_encounter_event_does_not_rewrite_a_known_identity():
    before = stored()
    identity = pid(absent=True, birth_name="OTHER")  # an A01 with PID-32 empty
    decision = decide_identity(identity, before, Policy(rewrites_identity=False))
    assert decision.values == before
    assert warned(decision) == [Finding.ITI31_NOT_APPLIED]


def test_e2_encounter_event_that_agrees_with_the_store_says_nothing():
    decision = decide_identity(pid("VALI"), stored(), Policy(rewrites_identity=False))
    assert decision.notes == []


def test_e2_encounter_event_creates_an_unknown_patient():
    decision = decide_identity(pid("VALI", ins=(nir(),)), None, Policy(rewrites_identity=False))
    assert decision.values.status == Q


def test_e2_the_switch_lets_encounter_events_update():
    decision = decide_identity(
        pid("VALI", birth_name="OTHER"), stored(), Policy(rewrites_identity=True)
    )
    assert decision.values.birth_name == "OTHER"


# -- E4 null semantics ----------------------------------------------------------------------------


def test_e4_empty_keeps_and_null_clears():
    identity = pid("VALI", birth_given_names=KEEP, used_name=None, birth_date=KEEP)
    decision = decide_identity(identity, stored(used_name="MARTIN"), Policy())
    assert decision.values.birth_given_names == "JEAN PAUL"
    assert decision.values.birth_date == "1979-03-28"
    assert decision.values.used_name is None


# -- M1 merges ------------------------------------------------------------------------------------


def test_m1_merge_into_the_pid3_patient():
    plan = plan_merge(Record(1, True), Record(2, True))
    assert (plan.action, plan.target) == (MergeAction.MERGE, 2)


def test_m1_a_merged_away_target_stands_for_its_final_survivor():
    plan = plan_merge(Record(1, True), Record(2, False, merged_into=3))
    assert (plan.action, plan.target) == (MergeAction.MERGE, 3)
    assert [n.finding for n in plan.notes] == [Finding.MERGE_TARGET_REDIRECTED]


def test_m1_an_a24_on_a_merged_away_ipp_warns_like_an_a40():
    assert link_notes([Record(1, True), None]) == []
    notes = link_notes([Record(1, True), Record(2, False, merged_into=3)])
    assert [(n.finding, n.patient, n.warning) for n in notes] == [
        (Finding.MERGE_TARGET_REDIRECTED, 2, True)
    ]
    both = link_notes([Record(4, False, merged_into=5), Record(2, False, merged_into=3)])
    assert [n.patient for n in both] == [1, 2]


def test_m1_unknown_source_is_no_action_with_a_warning():
    plan = plan_merge(None, Record(2, True))
    assert plan.action is MergeAction.NOTHING and plan.notes[0].finding is Finding.PRIOR_UNKNOWN


def test_m1_unknown_target_renames_the_source():
    assert plan_merge(Record(1, True), None).action is MergeAction.RENAME


def test_m1_merged_away_source_is_never_renamed():
    plan = plan_merge(Record(1, False, merged_into=3), None)
    assert plan.action is MergeAction.NOTHING and plan.notes[0].finding is Finding.MERGED_AWAY


@pytest.mark.parametrize(
    ("source", "target", "reason"),
    [
        (Record(1, True), Record(1, True), Refusal.SAME_PATIENT),
        (Record(1, True), Record(2, False, merged_into=1), Refusal.SAME_PATIENT),
        (Record(1, False, merged_into=5), Record(2, True), Refusal.PRIOR_MERGED_ELSEWHERE),
    ],
)
def test_m1_merges_that_are_refused(source, target, reason):
    with pytest.raises(IdentityRefused) as caught:
        plan_merge(source, target)
    assert caught.value.reason is reason


def test_m1_a_merge_already_done_is_no_action():
    assert (
        plan_merge(Record(1, False, merged_into=2), Record(2, True)).action is MergeAction.NOTHING
    )


def test_m1_a47_never_renames_a_merged_away_record():
    assert plan_rename(Record(1, False, merged_into=2), None) is MergeAction.NOTHING
    with pytest.raises(IdentityRefused):
        plan_rename(Record(1, True), owner_of_new=2)


# -- I1 identifiers and authorities ---------------------------------------------------------------


def test_i1_ipp_needs_its_authority():
    identity = PatientIdentity(identifiers=(Identifier("IPP1", "PI"),), status_codes=("PROV",))
    with pytest.raises(IdentityRefused) as caught:
        check_statement(identity, needs_birth_name=False)
    assert caught.value.reason is Refusal.IPP_WITHOUT_AUTHORITY


def test_i1_one_authority_whether_named_by_namespace_oid_or_both():
    known = named_pairs((Identifier("1", "PI", "HOP", "1.2.3"),))
    assert known == {"HOP": "1.2.3"}
    assert canonical(Identifier("9", "PI", "HOP"), known).authority_key == "1.2.3"
    assert canonical(Identifier("9", "PI", "", "1.2.3"), known).authority_key == "1.2.3"
    assert canonical(Identifier("9", "PI", "OTHER"), known).authority_key == "OTHER"


def test_i1_a_second_ipp_of_an_authority_is_refused():
    known = [IPP]
    with pytest.raises(IdentityRefused) as caught:
        identifiers_to_add([Identifier("IPP2", "PI", "CHU-X", "1.2.250.1.999.1.1")], known)
    assert caught.value.reason is Refusal.SECOND_IPP_SAME_AUTHORITY
    other = Identifier("IPP9", "PI", "CHU-Y", "1.2.9")
    assert identifiers_to_add([IPP, other], known) == [other]


def test_i1_pid3_naming_ipps_of_two_patients_is_refused():
    check_one_patient(5, [])
    check_one_patient(5, [None, 5])  # free, or already its own
    with pytest.raises(IdentityRefused) as caught:
        check_one_patient(5, [None, 6])
    assert caught.value.reason is Refusal.IPPS_OF_TWO_PATIENTS and caught.value.patient == 1


def test_l1_the_a47_changes_the_holder_pid3_designates_else_the_only_holder():
    # PID-3's IPP designates one of several holders: that one.
    assert designate_by_prior_ins(7, {3, 7}) == (7, [])
    # No IPP known, one active holder: that one.
    assert designate_by_prior_ins(None, {3}) == (3, [])
    # A known IPP whose patient does not hold the INS: two patients are designated.
    with pytest.raises(IdentityRefused) as refused:
        designate_by_prior_ins(9, {3})
    assert refused.value.reason is Refusal.INS_AND_IPP_DISAGREE
    # Nobody, or several without an IPP to choose: nothing is changed, with a warning.
    for owner, holders in ((None, set()), (None, {3, 7}), (9, set())):
        target, notes = designate_by_prior_ins(owner, holders)
        assert target is None
        assert [n.finding for n in notes] == [Finding.PRIOR_UNKNOWN]
    # PID-3's IPP is a record merged into the holder: it stands for its survivor, warned.
    target, notes = designate_by_prior_ins(5, {7}, survivor=7)
    assert target == 7 and [n.finding for n in notes] == [Finding.MERGE_TARGET_REDIRECTED]
    assert designate_by_prior_ins(7, {7}, survivor=7) == (7, [])


def test_m1_the_a40_source_is_the_first_mrg1_ipp_whose_record_is_known():
    assert designate_prior([None, 4], [None, 4]) == 1
    assert designate_prior([None, None], [None, None]) == 0
    assert designate_prior([3, 4], [4, 4]) == 0  # 3 was merged into 4: one record
    with pytest.raises(IdentityRefused) as refused:
        designate_prior([3, 4], [3, 4])
    assert refused.value.reason is Refusal.PRIOR_OF_TWO_PATIENTS
