"""The identity operations over real MLLP, against SQLite and PostgreSQL: each operation and
IHE edge case, the history rows behind them, and the `pamfr patient show / history` contract."""

from __future__ import annotations

import json
import re
from datetime import datetime

from sqlalchemy import select

from pamfr.hl7.samples import Person, message, nir_with_key
from pamfr.store.db import make_engine
from pamfr.store.schema import history as patient_history
from pamfr.store.schema import message as message_table
from pamfr.store.schema import patient, patient_link
from tests.helpers import pamfr_server
from tests.historycheck import as_history_fields, rebuilt_view
from tests.mllp_harness import Feed, ipp, msg, with_pid, without

INS = "279035121518989"  # the ANS test identity (OID .10)
TEST_OID = "1.2.250.1.213.1.4.10"
NIR_OID = "1.2.250.1.213.1.4.8"
OID = "1.2.250.1.999.1.1"  # the authority of samples.Person
OTHER_AUTHORITY = "CHU-Y&1.2.250.1.999.2.2&ISO"


def ops(rows: list[dict]) -> list[tuple[str, str]]:
    return [(r["event"], r["operation"]) for r in rows]


# -- create / update ------------------------------------------------------------------------


def test_a28_create_then_a28_on_a_known_ipp_updates(feed):
    feed.ok(msg("A28", Person("P1", ins=INS, used_name="Martin", used_given_name="Julie")))
    view = feed.show(*ipp("P1"))
    assert view["active"] is True and view["merged_into"] is None
    assert view["status"] == "qualifiee" and view["ins_usable"] is True
    assert view["ins"] == {"value": INS, "oid": TEST_OID, "kind": "NIR-TEST"}
    assert (view["used_name"], view["used_given_name"]) == ("Martin", "Julie")

    acks = feed(msg("A28", Person("P1", ins=INS, birth_name="PAT-AUTRE")))
    assert [a.code for a in acks] == ["AA"]
    again = feed.show(*ipp("P1"))
    assert again["id"] == view["id"] and again["birth_name"] == "PAT-AUTRE"
    assert feed.count(patient) == 1
    rows = feed.history(*ipp("P1"))
    assert ops(rows) == [("A28", "create"), ("A28", "update")]
    assert rows[1]["changes"] == {"birth_name": ["PAT-TEST", "PAT-AUTRE"]}


def test_a31_updates_and_a31_on_an_unknown_ipp_inserts(feed):
    feed.ok(msg("A31", Person("P2", given_names=("ANNE", "MARIE"))))  # unknown: inserted
    first = feed.show(*ipp("P2"))
    assert first["birth_given_names"] == ["ANNE", "MARIE"] and first["status"] == "validee"
    feed.ok(msg("A31", Person("P2", given_names=("ANNE", "CLAIRE", "MARIE"), birth_date="1979")))
    view = feed.show(*ipp("P2"))
    assert view["id"] == first["id"]
    assert view["first_given_name"] == "ANNE"
    assert view["birth_given_names"] == ["ANNE", "CLAIRE", "MARIE"]
    assert view["birth_date"] == "1979"
    rows = feed.history(*ipp("P2"))
    assert ops(rows) == [("A31", "create"), ("A31", "update")]  # an A31 that inserts creates
    assert rows[1]["changes"] == {
        "birth_given_names": ["ANNE MARIE", "ANNE CLAIRE MARIE"],
        "birth_date": ["1979-03-28", "1979"],
    }


def test_explicit_null_clears_and_empty_keeps(feed):
    feed.ok(msg("A28", Person("P3", used_name="Martin", used_given_name="Julie")))
    before = feed.show(*ipp("P3"))
    # Empty PID-7, PID-8, PID-11 and no ZFD: nothing of them changes.
    feed.ok(with_pid(msg("A31", Person("P3", zfd5=None)), f7="", f8="", f11=""))
    kept = feed.show(*ipp("P3"))
    for key in ("birth_date", "sex", "birth_place_insee", "used_name", "identity_mode"):
        assert kept[key] == before[key] and kept[key] is not None
    # Explicit nulls clear them, at the component level too; the used name is cleared by a D
    # repetition holding "".
    cleared_names = '""^^^^^^D~PAT-TEST^""^""^^^^L'
    feed.ok(with_pid(msg("A31", Person("P3")), f5=cleared_names, f7='""', f8='""', f11='""'))
    cleared = feed.show(*ipp("P3"))
    for key in ("birth_date", "sex", "birth_place_insee", "first_given_name", "used_name"):
        assert cleared[key] is None
    assert cleared["birth_given_names"] == [] and cleared["birth_name"] == "PAT-TEST"
    last = feed.history(*ipp("P3"))[-1]["changes"]
    assert last["birth_date"] == ["1979-03-28", None] and last["sex"] == ["F", None]
    assert last["birth_place_insee"] == ["63220", None]
    # An A31 without a birth name (PID-5 "" or only a used name) is refused: AE 101 at PID-5.
    for pid5 in ('""', "MARTIN^Julie^^^^^D"):
        (ack,) = feed(with_pid(msg("A31", Person("P3")), f5=pid5))
        assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", ["101"], ["PID^1^5"])
    assert feed.show(*ipp("P3"))["birth_name"] == "PAT-TEST"


def test_second_ipp_is_added_but_ipps_of_two_patients_are_ae_205(feed):
    other = f"Q1^^^{OTHER_AUTHORITY}^PI"
    feed.ok(msg("A28", Person("P6")), msg("A28", Person("Q2", authority=OTHER_AUTHORITY)))
    feed.ok(msg("A31", Person("P6", extra_ids=(other,))))
    p6 = feed.show(*ipp("P6"))
    assert feed.show(*ipp("Q1"))["id"] == p6["id"]
    assert feed.history(*ipp("P6"))[-1]["changes"] == {
        "identifiers": [[f"P6^PI^{OID}"], [f"P6^PI^{OID}", "Q1^PI^1.2.250.1.999.2.2"]]
    }
    # PID-3 names two known patients: that is a merge to be sent as an A40, not an update.
    rows = feed.count(patient_history)
    (ack,) = feed(msg("A31", Person("P6", extra_ids=(f"Q2^^^{OTHER_AUTHORITY}^PI",))))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", ["205"], ["PID^1^3"])
    assert feed.count(patient_history) == rows and feed.count(patient) == 2


def test_iti31_events_create_but_do_not_rewrite_a_known_identity(feed):
    feed.ok(msg("A01", Person("P4", ins=INS)))
    created = feed.show(*ipp("P4"))
    assert created["status"] == "qualifiee" and created["identity_mode"] == "INSI"
    later = [
        msg("A01", Person("P4", ins=INS, used_name="Durand")),
        msg("Z99", Person("P4", ins=INS, used_name="Durand", sex="M")),
        msg("A08", Person("P4", ins=INS, used_name="Durand", sex="M", insee="2A004")),
    ]
    for ack in feed(*later):
        assert (ack.code, ack.err_codes, ack.err_locations, ack.errs[0][4]) == (
            "AA",
            ["0"],
            ["PID^1"],
            "W",
        )
    # An encounter event with PID-32 left empty used to downgrade the identity: it agrees with
    # the store otherwise, so it changes nothing and says nothing.
    (ack,) = feed(with_pid(msg("A01", Person("P4")), f32=""))
    assert (ack.code, ack.errs) == ("AA", [])
    assert feed.show(*ipp("P4")) == created
    rows = feed.history(*ipp("P4"))
    assert ops(rows) == [("A01", "create"), ("A01", "update"), ("Z99", "update")] + [
        ("A08", "update"),
    ]
    assert all(r["changes"] == {} for r in rows[1:])
    assert rows[1]["notes"][0]["finding"] == "iti31-not-applied"


def test_iti31_events_update_with_the_operator_switch(db_url):
    with pamfr_server(db_url, iti31_updates_identity=True) as server:
        feed = Feed(server.port, db_url)
        feed.ok(msg("A01", Person("P4", ins=INS)))
        feed.ok(msg("Z99", Person("P4", ins=INS, used_name="Durand", sex="M")))
        feed.ok(msg("A08", Person("P4", ins=INS, used_name="Durand", sex="M", insee="2A004")))
        view = feed.show(*ipp("P4"))
    assert (view["used_name"], view["sex"], view["birth_place_insee"]) == ("Durand", "M", "2A004")
    assert view["status"] == "qualifiee"


def test_status_downgrade_removes_the_ins_and_says_why(feed):
    feed.ok(msg("A28", Person("P5", ins=INS)))
    assert feed.show(*ipp("P5"))["ins_usable"] is True
    # PROV: provisoire, and the stored INS is removed (the identity is not qualifiable).
    feed.ok(msg("A31", Person("P5", pid32=("PROV",), zfd5=None)))
    view = feed.show(*ipp("P5"))
    assert (view["status"], view["ins"], view["ins_usable"]) == ("provisoire", None, False)
    last = feed.history(*ipp("P5"))[-1]
    assert last["changes"] == {
        "status": ["qualifiee", "provisoire"],
        "ins_value": [INS, None],
        "ins_oid": [TEST_OID, None],
    }
    assert [n["finding"] for n in last["notes"]] == ["ins-removed"]
    # Back to qualifiee, then douteuse: provisoire whatever PID-32 says, the INS dropped with a
    # warning that names the reason and no patient data.
    feed.ok(msg("A31", Person("P5", ins=INS)))
    assert feed.show(*ipp("P5"))["status"] == "qualifiee"
    (ack,) = feed(msg("A31", Person("P5", ins=INS, pid32=("VALI", "DOUT"))))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AA", ["103"], ["PID^1^32"])
    assert ack.errs[0][4] == "W" and "DOUT" in ack.errs[0][8] and INS not in ack.errs[0][8]
    view = feed.show(*ipp("P5"))
    assert (view["status"], view["attributes"], view["ins"]) == ("provisoire", ["douteuse"], None)
    notes = feed.history(*ipp("P5"))[-1]["notes"]
    assert [n["finding"] for n in notes] == ["ins-disqualified", "ins-removed"]
    # The message log counts the warning.
    engine = make_engine(feed.db_url)
    with engine.connect() as conn:
        row = conn.execute(
            select(message_table.c.warnings, message_table.c.err_codes).order_by(
                message_table.c.id.desc()
            )
        ).first()
    engine.dispose()
    assert row.err_codes == "103" and row.warnings.startswith("103 PID^1^32: INS not kept")


def test_pid32_prov_with_an_ins_is_integrated_without_it(feed):
    """The public Ségur test for identity consumers: PID-32 not VALI, the INS is not kept."""
    (ack,) = feed(msg("A28", Person("SEG1", ins=INS, pid32=("PROV",))))
    assert (ack.code, ack.err_codes, ack.errs[0][4]) == ("AA", ["103"], "W")
    view = feed.show(*ipp("SEG1"))
    assert (view["status"], view["ins"], view["birth_name"]) == ("provisoire", None, "PAT-TEST")
    assert feed.history(*ipp("SEG1"))[0]["notes"][0]["finding"] == "ins-not-validated"


def test_ae_rules_answer_the_err_and_apply_nothing(feed):
    second_ins = f"{nir_with_key('1850775123456')}^^^ASIP-SANTE-INS-NIR&{TEST_OID}&ISO^INS"
    cases = [
        (msg("A28", Person("E1", ins=INS[:13] + "00")), "102", "PID^1^3"),
        (msg("A28", Person("E2", authority="")), "101", "PID^1^3"),  # IPP without CX-4
        (
            msg("A28", Person("E2", extra_ids=("E2B^^^CHU-X&1.2.250.1.999.1.1&ISO^PI",))),
            "205",
            "PID^1^3",
        ),
        (with_pid(msg("A28", Person("E2")), f5="MARTIN^Julie^^^^^D"), "101", "PID^1^5"),
        (msg("A28", Person("E3", ins=INS, extra_ids=(second_ins,))), "205", "PID^1^3"),
        (with_pid(msg("A28", Person("E4")), f3=f"{INS}^^^X&{TEST_OID}&ISO^INS"), "101", "PID^1^3"),
        (msg("A28", Person("E5", birth_date="19790231")), "102", "PID^1^7"),
        (msg("A28", Person("E6", sex="X")), "103", "PID^1^8"),
        (msg("A28", Person("E7", insee="7510")), "102", "PID^1^11"),
        (without("MRG", msg("A40", Person("E8"), prior_ipp="E0")), "100", "MRG^1^1"),
        (msg("A47", Person("E9"), prior_ipp=""), "101", "MRG^1^1"),
        (without("MRG", msg("A40", Person("E11"))) + "MRG|A1^^^CHU-X^AN\r", "101", "MRG^1^1"),
        (msg("A24", Person("E12"), other=Person("E12")), "205", "PID^2^3"),  # linked to itself
    ]
    acks = feed(*(m for m, _, _ in cases))
    for ack, (_, code, location) in zip(acks, cases, strict=True):
        assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", [code], [location])
    assert feed.count(patient) == 0 and feed.count(patient_history) == 0
    assert feed.count(message_table) == len(cases)
    # O and A are recorded as U, with a warning in an AA.
    (ack,) = feed(msg("A28", Person("E10", sex="O")))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AA", ["103"], ["PID^1^8"])
    assert ack.errs[0][4] == "W"
    assert feed.show(*ipp("E10"))["sex"] == "U"


# -- merge (A40) ----------------------------------------------------------------------------


def test_a40_merge(feed):
    feed.ok(
        msg("A28", Person("SRC1", birth_name="SOURCE")),
        msg("A28", Person("TGT1", birth_name="TARGET")),
    )
    source_id, target_id = feed.show(*ipp("SRC1"))["id"], feed.show(*ipp("TGT1"))["id"]
    feed.ok(msg("A40", Person("TGT1", birth_name="SURVIVOR", ins=INS), prior_ipp="SRC1"))

    merged = feed.show(*ipp("SRC1"))  # its IPP still finds it
    assert merged["id"] == source_id
    assert (merged["active"], merged["merged_into"]) == (False, target_id)
    assert merged["birth_name"] == "SOURCE"
    survivor = feed.show(*ipp("TGT1"))
    assert (survivor["active"], survivor["merged_into"]) == (True, None)
    # The survivor keeps its own demographics, status and INS: an A40 rewrites none of them.
    assert survivor["birth_name"] == "TARGET" and survivor["status"] == "validee"
    assert [i["value"] for i in survivor["identifiers"] if i["type"] == "PI"] == ["TGT1"]

    source_rows, target_rows = feed.history(*ipp("SRC1")), feed.history(*ipp("TGT1"))
    assert ops(source_rows)[-1] == ("A40", "merge")
    assert source_rows[-1]["changes"] == {"active": [True, False], "merged_into": [None, target_id]}
    assert ops(target_rows)[-1] == ("A40", "merge")
    assert target_rows[-1]["changes"] == {"merged_patients": [[], [source_id]]}

    # The same merge again (a new message): AA, nothing more, even with other demographics.
    feed.ok(msg("A40", Person("TGT1", birth_name="AGAIN"), prior_ipp="SRC1"))
    assert feed.show(*ipp("TGT1"))["birth_name"] == "TARGET"
    assert len(feed.history(*ipp("SRC1"))) == len(source_rows)
    assert len(feed.history(*ipp("TGT1"))) == len(target_rows)
    # An update sent to the merged IPP is not applied to it (warning 204 in an AA).
    (ack,) = feed(msg("A31", Person("SRC1", birth_name="LATE")))
    assert (ack.code, ack.err_codes, ack.errs[0][4]) == ("AA", ["204"], "W")
    assert feed.show(*ipp("SRC1"))["birth_name"] == "SOURCE"


def test_a40_edge_cases(feed):
    feed.ok(msg("A28", Person("M1")), msg("A28", Person("M2")), msg("A28", Person("M3")))
    m1 = feed.show(*ipp("M1"))["id"]
    patients, rows = feed.count(patient), feed.count(patient_history)

    # Source unknown: nothing to do, AA with a warning; the PID's patient is not touched.
    (ack,) = feed(msg("A40", Person("M2", birth_name="CHANGED"), prior_ipp="NOSUCH"))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AA", ["204"], ["MRG^1^1"])
    assert feed.show(*ipp("M2"))["birth_name"] == "PAT-TEST"
    assert feed.exit_code(*ipp("NOSUCH")) == 1
    assert (feed.count(patient), feed.count(patient_history)) == (patients, rows)

    # Source = target: AE.
    (ack,) = feed(msg("A40", Person("M2"), prior_ipp="M2"))
    assert ack.code == "AE" and ack.err_codes == ["205"]
    assert feed.show(*ipp("M2"))["active"] is True

    # Target unknown: acts as A47, the MRG patient takes the new IPP (its demographics stay).
    feed.ok(msg("A40", Person("M9", birth_name="RENAMED"), prior_ipp="M1"))
    renamed = feed.show(*ipp("M9"))
    assert (renamed["id"], renamed["active"], renamed["birth_name"]) == (m1, True, "PAT-TEST")
    assert feed.exit_code(*ipp("M1")) == 1
    assert feed.count(patient) == patients
    last = feed.history("--id", str(m1))[-1]
    assert (last["event"], last["operation"]) == ("A40", "merge")
    assert last["changes"]["identifiers"] == [[f"M1^PI^{OID}"], [f"M9^PI^{OID}"]]

    # A merged patient cannot be merged into another survivor; a merge into a merged-away
    # patient goes to its final survivor, with a warning (the inactive record is not touched).
    feed.ok(msg("A40", Person("M3"), prior_ipp="M2"))
    m3 = feed.show(*ipp("M3"))["id"]
    (into_other,) = feed(msg("A40", Person("M9"), prior_ipp="M2"))
    assert (into_other.code, into_other.err_codes) == ("AE", ["205"])
    assert feed.show(*ipp("M9"))["active"] is True
    (into_merged,) = feed(msg("A40", Person("M2"), prior_ipp="M9"))
    assert (into_merged.code, into_merged.err_codes, into_merged.errs[0][4]) == ("AA", ["0"], "W")
    assert feed.show(*ipp("M2"))["merged_into"] == m3
    assert feed.show(*ipp("M9"))["merged_into"] == m3


# -- change of identifier (A47) ---------------------------------------------------------------


def test_a47_change_identifier(feed):
    feed.ok(msg("A28", Person("C1", ins=INS)), msg("A28", Person("C2")))
    c1 = feed.show(*ipp("C1"))["id"]
    feed.ok(msg("A47", Person("C5", ins=INS), prior_ipp="C1"))
    view = feed.show(*ipp("C5"))
    assert view["id"] == c1 and view["active"] is True
    assert [i["value"] for i in view["identifiers"] if i["type"] == "PI"] == ["C5"]
    assert feed.exit_code(*ipp("C1")) == 1
    last = feed.history(*ipp("C5"))[-1]
    assert (last["event"], last["operation"]) == ("A47", "change_id")
    assert last["changes"] == {"identifiers": [[f"C1^PI^{OID}"], [f"C5^PI^{OID}"]]}

    # Onto an IPP another patient has: AE 205 (should have been an A40); nothing changes.
    rows = feed.count(patient_history)
    (ack,) = feed(msg("A47", Person("C2"), prior_ipp="C5"))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", ["205"], ["PID^1^3"])
    assert feed.show(*ipp("C5"))["id"] == c1 and feed.show(*ipp("C2"))["id"] != c1
    assert feed.count(patient_history) == rows

    # Source unknown: nothing, AA, and no patient is created.
    patients = feed.count(patient)
    feed.ok(msg("A47", Person("C7"), prior_ipp="NOSUCH"))
    assert feed.exit_code(*ipp("C7")) == 1
    assert (feed.count(patient), feed.count(patient_history)) == (patients, rows)


# -- links (A24 / A37) ------------------------------------------------------------------------


def test_a24_link_before_the_patients_exist_and_a37_unlink(feed):
    feed.ok(msg("A24", Person("L1"), other=Person("L2")))
    assert feed.count(patient) == 0 and feed.count(patient_link) == 1
    feed.ok(msg("A24", Person("L2"), other=Person("L1")))  # the same link: nothing more
    assert feed.count(patient_link) == 1
    feed.ok(msg("A28", Person("L1")), msg("A28", Person("L2")))
    l1, l2 = feed.show(*ipp("L1")), feed.show(*ipp("L2"))
    assert (l1["links"], l2["links"]) == ([l2["id"]], [l1["id"]])

    feed.ok(msg("A37", Person("L1"), other=Person("L2")))
    assert feed.show(*ipp("L1"))["links"] == [] and feed.show(*ipp("L2"))["links"] == []
    assert feed.count(patient_link) == 0
    unlink = feed.history(*ipp("L1"))[-1]
    assert (unlink["event"], unlink["operation"]) == ("A37", "unlink")
    assert unlink["changes"] == {f"link:L2^PI^{OID}": [True, None]}

    rows = feed.count(patient_history)
    feed.ok(msg("A37", Person("L1"), other=Person("L2")))  # unknown link: AA, nothing
    feed.ok(msg("A37", Person("L8"), other=Person("L9")))
    assert feed.count(patient_history) == rows and feed.count(patient) == 2


def test_a24_between_known_patients_is_in_both_histories(feed):
    feed.ok(msg("A28", Person("K1")), msg("A28", Person("K2")))
    feed.ok(msg("A24", Person("K1"), other=Person("K2")))
    for own, other in (("K1", "K2"), ("K2", "K1")):
        last = feed.history(*ipp(own))[-1]
        assert (last["event"], last["operation"]) == ("A24", "link")
        assert last["changes"] == {f"link:{other}^PI^{OID}": [None, True]}


# -- history ----------------------------------------------------------------------------------


def test_history_shape_and_rebuilding_the_identity_after_each_message(feed):
    person = Person("H1", used_name="Martin")
    steps = [
        message("A28", person, "H-1"),
        message("A31", Person("H1", ins=INS, given_names=("LEA", "ANNE")), "H-2"),
        message("A47", Person("H2", ins=INS, given_names=("LEA", "ANNE")), "H-3", prior_ipp="H1"),
        message("A31", Person("H2", pid32=("PROV", "DOUT"), zfd5=None, sex="M"), "H-4"),
        message("A01", Person("H2", extra_ids=("NH7^^^X^NH",), insee="99134"), "H-5"),
        message("A40", Person("H3", ins=INS), "H-6", prior_ipp="H2"),  # target unknown
        message("A31", Person("H3", birth_date="197903"), "H-7"),
    ]
    feed.ok(steps[0])
    patient_id = str(feed.show(*ipp("H1"))["id"])
    snapshots = {"H-1": as_history_fields(feed.show("--id", patient_id))}
    for step in steps[1:]:
        feed.ok(step)
        snapshots[step.split("|")[9]] = as_history_fields(feed.show("--id", patient_id))
    assert snapshots["H-7"] != snapshots["H-6"] != snapshots["H-5"]

    rows = feed.history("--id", patient_id)
    for row in rows:
        assert set(row) >= {"at", "event", "operation", "control_id", "changes"}
        assert datetime.fromisoformat(row["at"]).tzinfo is not None
        for value in row["changes"].values():
            assert isinstance(value, list) and len(value) == 2
    assert [(r["control_id"], r["event"], r["operation"]) for r in rows] == [
        ("H-1", "A28", "create"),
        ("H-2", "A31", "update"),
        ("H-3", "A47", "change_id"),
        ("H-4", "A31", "update"),
        ("H-5", "A01", "update"),
        ("H-6", "A40", "merge"),
        ("H-7", "A31", "update"),
    ]
    for control_id, expected in snapshots.items():
        assert rebuilt_view(rows, control_id) == expected, control_id


# -- the read-side contract ---------------------------------------------------------------------

CONTRACT = {
    "id": int,
    "active": bool,
    "merged_into": (int, type(None)),
    "identifiers": list,
    "ins": (dict, type(None)),
    "ins_usable": bool,
    "ins_collision": bool,
    "birth_name": (str, type(None)),
    "first_given_name": (str, type(None)),
    "birth_given_names": list,
    "used_name": (str, type(None)),
    "used_given_name": (str, type(None)),
    "birth_date": (str, type(None)),
    "sex": (str, type(None)),
    "birth_place_insee": (str, type(None)),
    "status": str,
    "attributes": list,
    "links": list,
    "updated_at": str,
}


def check_contract(view: dict) -> None:
    for key, kind in CONTRACT.items():
        assert isinstance(view[key], kind), (key, view[key])
    for ident in view["identifiers"]:
        assert set(ident) == {"value", "type", "authority", "oid"}
    if view["ins"] is not None:
        assert set(view["ins"]) == {"value", "oid", "kind"}
        assert view["ins"]["kind"] in {"NIR", "NIA", "NIR-TEST", "NIR-DEMO"}
    assert all(isinstance(n, str) for n in view["birth_given_names"])
    assert view["birth_date"] is None or re.fullmatch(
        r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?", view["birth_date"]
    )
    assert view["status"] in {"provisoire", "recuperee", "validee", "qualifiee"}
    assert set(view["attributes"]) <= {"douteuse", "fictive", "homonyme"}
    assert all(isinstance(i, int) for i in view["links"])
    assert datetime.fromisoformat(view["updated_at"]).tzinfo is not None


def test_show_contract_and_exit_codes(feed):
    nir = nir_with_key("1850775123456")
    feed.ok(
        msg(
            "A28", Person("S1", ins=nir, ins_oid=NIR_OID, pid32=("VALI", "HOMA"), birth_date="1985")
        ),
        msg("A28", Person("DUP", birth_name="FIRST")),
        msg("A28", Person("DUP", birth_name="SECOND", authority=OTHER_AUTHORITY)),
        msg("A24", Person("S1"), other=Person("DUP")),
    )
    view = feed.show(*ipp("S1"))
    check_contract(view)
    assert view["ins"] == {"value": nir, "oid": NIR_OID, "kind": "NIR"}
    assert (view["status"], view["attributes"], view["ins_usable"]) == (
        "qualifiee",
        ["homonyme"],
        True,
    )
    assert view["birth_date"] == "1985" and view["sex"] == "F"
    assert {"value": "S1", "type": "PI", "authority": "CHU-X", "oid": OID} in view["identifiers"]
    assert feed.show("--ins", nir)["id"] == view["id"] == feed.show("--id", str(view["id"]))["id"]
    check_contract(feed.show(*ipp("DUP"), "--authority", "CHU-X"))

    # The same IPP value under two authorities: ambiguous without --authority.
    result = feed.cli("patient", "show", *ipp("DUP"), "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("--id ") == 2
    assert feed.cli("patient", "history", *ipp("DUP")).exit_code == 2
    first = feed.show(*ipp("DUP"), "--authority", OID)
    second = feed.show(*ipp("DUP"), "--authority", "CHU-Y")
    assert (first["birth_name"], second["birth_name"]) == ("FIRST", "SECOND")
    assert view["links"] == [first["id"]]

    for selector in (ipp("NOSUCH"), ("--ins", INS), ("--id", "999")):
        result = feed.cli("patient", "show", *selector, "--json")
        assert (result.exit_code, result.stdout) == (1, "") and result.stderr
    assert feed.cli("patient", "show", "--json").exit_code == 2  # no selector

    card = feed.cli("patient", "show", *ipp("S1"))
    assert card.exit_code == 0 and "PAT-TEST" in card.stdout and "qualifiee" in card.stdout
    found = json.loads(feed.cli("patient", "find", "--name", "first", "--json").stdout)
    assert [p["id"] for p in found] == [first["id"]]
