"""The identity rules of docs/identity-rules.md end to end: real messages over MLLP to a real
receiver on SQLite and PostgreSQL, the ACK's ERR segments, the store through `pamfr patient`,
the history notes, the message log and the daemon's log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pamfr.hl7.samples import Person, message, nir_with_key
from tests.helpers import Ack, pamfr_server, send, start_daemon
from tests.mllp_harness import Feed, ipp, msg, with_pid

SPEC = Path(__file__).resolve().parents[1] / "corpus" / "spec"
INS = "279035121518989"  # the ANS test identity (test OID)
TEST_OID = "1.2.250.1.213.1.4.10"
NIR_OID, NIA_OID = "1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9"


def production(text: str) -> str:
    return text.replace("|T|2.5^FRA", "|P|2.5^FRA", 1)


def ins_rep(value: str, oid: str = TEST_OID, namespace: str = "ASIP-SANTE-INS-NIR") -> str:
    return f"{value}^^^{namespace}&{oid}&ISO^INS"


def warning(ack: Ack) -> list[tuple[str, str]]:
    assert ack.code == "AA", ack.errs
    assert all(e[4] == "W" for e in ack.errs)
    return list(zip(ack.err_codes, ack.err_locations, strict=True))


def findings(rows: list[dict]) -> list[str]:
    return [n["finding"] for r in rows for n in r["notes"]]


def a47_ins(who: str, prior_ins: str, pid3_ins: str) -> str:
    """An A47 of §4.4: MRG-1 the previous INS, PID-3 the IPP and the new INS (or `""`)."""
    pid3 = f"{who}^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{pid3_ins}"
    text = with_pid(msg("A47", Person(who), prior_ipp=""), f3=pid3)
    return text.replace("MRG|^^^CHU-X&1.2.250.1.999.1.1&ISO^PI", f"MRG|{prior_ins}")


# -- S: status ------------------------------------------------------------------------------------


def test_s1_status_from_pid32_with_qual_and_recup_read_leniently(feed):
    # QUAL is read as VALI: with a valid INS the identity is qualifiee and keeps it...
    assert feed.one(msg("A28", Person("S1Q", ins=INS, pid32=("QUAL",)))).errs == []
    view = feed.show(*ipp("S1Q"))
    assert (view["status"], view["ins"]["value"], view["ins_usable"]) == ("qualifiee", INS, True)
    # ... and without an INS it is validee (not refused).
    assert feed.one(msg("A28", Person("S1V", pid32=("QUAL",)))).errs == []
    assert feed.show(*ipp("S1V"))["status"] == "validee"
    # RECUP gives recuperee, whose INS is not kept (it is not VALI).
    ack = feed.one(msg("A28", Person("S1R", ins=INS, pid32=("RECUP",))))
    assert warning(ack) == [("103", "PID^1^32")]
    view = feed.show(*ipp("S1R"))
    assert (view["status"], view["ins"], view["ins_usable"]) == ("recuperee", None, False)
    assert findings(feed.history(*ipp("S1R"))) == ["ins-not-validated"]
    # VIDE is provisoire.
    assert feed.one(msg("A28", Person("S1E", pid32=("VIDE",)))).errs == []
    assert feed.show(*ipp("S1E"))["status"] == "provisoire"


def test_s2_two_statuses_the_lower_wins_with_a_warning(feed):
    ack = feed.one(msg("A28", Person("S2", ins=INS, pid32=("PROV", "VALI"))))
    assert ("103", "PID^1^32") in warning(ack)
    view = feed.show(*ipp("S2"))
    assert (view["status"], view["ins"]) == ("provisoire", None)
    assert "status-conflict" in findings(feed.history(*ipp("S2")))


def test_s3_homonyme_is_an_attribute_only(feed):
    assert feed.one(msg("A28", Person("S3", ins=INS, pid32=("VALI", "HOMA")))).errs == []
    view = feed.show(*ipp("S3"))
    assert (view["status"], view["attributes"], view["ins_usable"]) == (
        "qualifiee",
        ["homonyme"],
        True,
    )


@pytest.mark.parametrize("code, attribute", [("FICT", "fictive"), ("DOUT", "douteuse")])
def test_s3_fictive_or_douteuse_makes_a_vali_identity_provisoire(feed, code, attribute):
    who = f"S3{code}"
    ack = feed.one(msg("A28", Person(who, ins=INS, pid32=("VALI", code))))
    assert warning(ack) == [("103", "PID^1^32")]
    view = feed.show(*ipp(who))
    assert (view["status"], view["attributes"], view["ins"], view["ins_usable"]) == (
        "provisoire",
        [attribute],
        None,
        False,
    )
    assert findings(feed.history(*ipp(who))) == ["ins-disqualified"]


# -- G: the INS gate ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", ["INVA", "USUR", "FICT", "DOUT"])
def test_g1_a_barring_code_drops_the_ins(feed, code):
    ack = feed.one(msg("A28", Person(f"G1{code}", ins=INS, pid32=("VALI", code))))
    assert warning(ack) == [("103", "PID^1^32")]
    assert code in ack.errs[0][8]
    assert feed.show(*ipp(f"G1{code}"))["ins"] is None


def test_g2_pid32_null_clears_the_status_and_removes_the_ins(feed):
    assert feed.one(msg("A28", Person("G2N", ins=INS))).errs == []
    assert feed.show(*ipp("G2N"))["status"] == "qualifiee"
    # `""` is not an empty field: the sender clears the status, so nothing is qualified.
    ack = feed.one(with_pid(msg("A31", Person("G2N", ins=INS)), f32='""'))
    assert ack.code == "AA"
    view = feed.show(*ipp("G2N"))
    assert (view["status"], view["ins"], view["ins_usable"]) == ("provisoire", None, False)
    assert findings(feed.history(*ipp("G2N")))[-1:] == ["ins-removed"]


def test_g1_missing_trait_drops_the_ins(feed):
    ack = feed.one(msg("A28", Person("G1T", ins=INS, insee=None)))
    assert warning(ack) == [("101", "PID^1^11")]
    view = feed.show(*ipp("G1T"))
    assert (view["status"], view["ins"]) == ("validee", None)
    # An A31 that leaves the birth place empty keeps the stored one, and the INS with it.
    assert feed.one(msg("A31", Person("G1U", ins=INS))).errs == []
    unchanged = feed.one(msg("A31", Person("G1U", ins=INS, insee=None)))
    assert warning(unchanged) == [("0", "PID^1")]  # nothing-kept-changed: nothing else to say
    assert feed.show(*ipp("G1U"))["ins"]["value"] == INS
    # 99999 says the birth place is unknown: no trait, and INSi never returns it (FR Core
    # fr-core-3), so no qualified identity holds it.
    ack = feed.one(msg("A28", Person("G1X", ins=nir_with_key("1790399220777"), insee="99999")))
    assert warning(ack) == [("101", "PID^1^11")]
    assert (feed.show(*ipp("G1X"))["status"], feed.show(*ipp("G1X"))["ins"]) == ("validee", None)


@pytest.mark.parametrize(
    "pid32, status",
    [
        (("VIDE",), "provisoire"),
        (("RECUP",), "recuperee"),
        (("VALI", "FICT"), "provisoire"),
        (("VALI", "INVA"), "validee"),
        (("VALI", "USUR"), "validee"),
    ],
    ids=["VIDE", "RECUP", "FICT", "INVA", "USUR"],
)
def test_g2_a_status_that_is_not_qualifiable_removes_the_stored_ins(feed, pid32, status):
    who = f"G2{pid32[-1]}"
    assert feed.one(msg("A28", Person(who, ins=INS))).errs == []
    assert feed.show(*ipp(who))["status"] == "qualifiee"
    # The message carries no INS: nothing was refused, so no warning; the removal is history.
    assert feed.one(msg("A31", Person(who, pid32=pid32))).errs == []
    view = feed.show(*ipp(who))
    assert (view["status"], view["ins"], view["ins_usable"]) == (status, None, False)
    last = feed.history(*ipp(who))[-1]
    assert last["changes"]["ins_value"] == [INS, None]
    assert last["notes"] == [
        {"finding": "ins-removed", "text": f"stored INS removed: the identity is now {status}"}
    ]


def test_g2_null_under_the_ins_authority_deletes_the_ins(feed):
    assert feed.one(msg("A28", Person("G2D", ins=INS))).errs == []
    pid3 = "G2D^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~" + ins_rep('""')
    assert feed.one(with_pid(msg("A31", Person("G2D")), f3=pid3)).errs == []
    view = feed.show(*ipp("G2D"))
    assert (view["status"], view["ins"], view["ins_usable"]) == ("validee", None, False)
    last = feed.history(*ipp("G2D"))[-1]
    assert last["changes"]["ins_value"] == [INS, None]
    assert last["notes"] == [{"finding": "ins-deleted", "text": "INS deleted by the sender"}]
    # A VALI PID-3 that merely lists no INS is no deletion.
    assert feed.one(msg("A28", Person("G2K", ins=INS))).errs == []
    assert feed.one(msg("A31", Person("G2K", used_name="DURAND"))).errs == []
    assert feed.show(*ipp("G2K"))["ins"]["value"] == INS


def test_g3_pid32_empty_keeps_a_qualified_identity(feed):
    assert feed.one(msg("A28", Person("G3", ins=INS, pid32=("VALI", "HOMA")))).errs == []
    before = feed.show(*ipp("G3"))
    ack = feed.one(with_pid(msg("A31", Person("G3", ins=INS, used_name="DURAND")), f32=""))
    assert set(warning(ack)) == {("101", "PID^1^32")}
    after = feed.show(*ipp("G3"))
    assert after["used_name"] == "DURAND"
    for key in ("status", "attributes", "ins", "ins_usable"):
        assert after[key] == before[key], key
    # A new identity with PID-32 empty is provisoire, without its INS.
    ack = feed.one(with_pid(msg("A28", Person("G3N", ins=INS)), f32=""))
    assert warning(ack) == [("101", "PID^1^32"), ("101", "PID^1^32")]
    assert (feed.show(*ipp("G3N"))["status"], feed.show(*ipp("G3N"))["ins"]) == ("provisoire", None)


def test_g4_nia_with_a_bad_key_beside_a_valid_nir(feed):
    nir, nia = nir_with_key("2790351215189"), nir_with_key("2790351215190")
    bad_nia = nia[:13] + f"{(int(nia[13:]) % 97) + 1:02d}"
    pid3 = (
        f"G4^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{ins_rep(bad_nia, NIA_OID)}~{ins_rep(nir, NIR_OID)}"
    )
    ack = feed.one(production(with_pid(msg("A31", Person("G4")), f3=pid3)))
    assert warning(ack) == [("102", "PID^1^3")]
    view = feed.show(*ipp("G4"))
    assert (view["ins"]["value"], view["ins"]["kind"], view["status"]) == (nir, "NIR", "qualifiee")


def test_g5_a_later_nia_does_not_replace_the_nir(feed):
    nir, nia = nir_with_key("2790351215189"), nir_with_key("2790351215190")
    base = "G5^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"
    both = f"{base}~{ins_rep(nia, NIA_OID, 'ASIP-SANTE-INS-NIA')}~{ins_rep(nir, NIR_OID)}"
    assert feed.one(production(with_pid(msg("A31", Person("G5")), f3=both))).errs == []
    assert feed.show(*ipp("G5"))["ins"]["kind"] == "NIR"
    only_nia = f"{base}~{ins_rep(nia, NIA_OID, 'ASIP-SANTE-INS-NIA')}"
    ack = feed.one(production(with_pid(msg("A31", Person("G5")), f3=only_nia)))
    assert warning(ack) == [("0", "PID^1^3"), ("0", "PID^1")]  # and nothing kept changed
    assert feed.show(*ipp("G5"))["ins"]["value"] == nir


def test_g5_a_nir_replaces_a_stored_nia(feed):
    nir, nia = nir_with_key("2790351215189"), nir_with_key("2790351215190")
    base = "G5R^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"
    only_nia = f"{base}~{ins_rep(nia, NIA_OID, 'ASIP-SANTE-INS-NIA')}"
    assert feed.one(production(with_pid(msg("A31", Person("G5R")), f3=only_nia))).errs == []
    assert feed.show(*ipp("G5R"))["ins"] == {"value": nia, "oid": NIA_OID, "kind": "NIA"}
    only_nir = f"{base}~{ins_rep(nir, NIR_OID)}"
    assert feed.one(production(with_pid(msg("A31", Person("G5R")), f3=only_nir))).errs == []
    view = feed.show(*ipp("G5R"))
    assert (view["ins"], view["status"], view["ins_usable"]) == (
        {"value": nir, "oid": NIR_OID, "kind": "NIR"},
        "qualifiee",
        True,
    )
    assert feed.history(*ipp("G5R"))[-1]["changes"]["ins_value"] == [nia, nir]


def test_g6_a_test_ins_in_a_production_message_is_not_kept(feed):
    ack = feed.one(production(msg("A28", Person("G6", ins=INS))))
    assert warning(ack) == [("103", "PID^1^3")]
    assert (feed.show(*ipp("G6"))["ins"], feed.show(*ipp("G6"))["status"]) == (None, "validee")


@pytest.mark.parametrize("cx5", ["INS-NIR", "INS", ""])
@pytest.mark.parametrize("pid32", ["PROV", ""])
def test_g8_a_refused_ins_is_never_among_the_identifiers(feed, cx5, pid32):
    who = f"G8{cx5.replace('-', '')}{pid32}"
    nir = nir_with_key("1790363220123")
    pid3 = f"{who}^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{nir}^^^ASIP-SANTE-INS-NIR&{NIR_OID}&ISO^{cx5}"
    ack = feed.one(production(with_pid(msg("A28", Person(who)), f3=pid3, f32=pid32)))
    assert ("PID^1^32" in [where for _, where in warning(ack)]) is True
    view = feed.show(*ipp(who))
    assert view["ins"] is None and view["status"] == "provisoire"
    assert [i["value"] for i in view["identifiers"]] == [who]
    (row,) = feed.history(*ipp(who))
    assert findings([row])[0] in ("ins-not-validated", "ins-status-absent")
    assert nir not in json.dumps(row)
    shown = feed.cli("patient", "show", "--ipp", who)
    assert nir not in shown.stdout and "INS-NIR" not in shown.stdout


def test_g8_an_ins_typed_ins_nir_is_the_ins_and_its_key_is_checked(feed):
    nir = nir_with_key("1790363220123")
    typed = f"G8K^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{nir}^^^ASIP-SANTE-INS-NIR&{NIR_OID}&ISO^INS-NIR"
    assert feed.one(production(with_pid(msg("A28", Person("G8K")), f3=typed))).errs == []
    view = feed.show(*ipp("G8K"))
    assert (view["ins"]["value"], view["status"]) == (nir, "qualifiee")
    assert [i["type"] for i in view["identifiers"]] == ["PI", "INS"]  # the kept INS, as INS
    bad = typed.replace("G8K", "G8B").replace(nir, nir[:13] + f"{int(nir[13:]) % 97 + 1:02d}")
    ack = feed.one(production(with_pid(msg("A28", Person("G8B")), f3=bad)))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", ["102"], ["PID^1^3"])


def test_g8_an_ins_named_by_namespace_alone_is_never_an_identifier(feed):
    nir = nir_with_key("1790363220123")
    # The INS authority by its namespace only, CX-5 empty, on a PROV identity: refused by the
    # gate, so neither stored nor served.
    pid3 = f"G8NS^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{nir}^^^ASIP-SANTE-INS-NIR^"
    ack = feed.one(with_pid(msg("A28", Person("G8NS")), f3=pid3, f32="PROV"))
    assert ("103", "PID^1^32") in warning(ack)
    view = feed.show(*ipp("G8NS"))
    assert (view["ins"], [i["value"] for i in view["identifiers"]]) == (None, ["G8NS"])
    # The billing namespace learnt with the NIR's OID (an NH) never puts an identifier of
    # another type under that OID: it would be served as an INS-NIR nobody checked.
    nh = f"G8NH^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{nir}^^^ASIP-SANTE-NIR&{NIR_OID}&ISO^NH"
    assert feed.one(with_pid(msg("A28", Person("G8NH")), f3=nh, f32="PROV")).code == "AA"
    loose = f"G8NX^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{nir}^^^ASIP-SANTE-NIR^"
    assert feed.one(with_pid(msg("A28", Person("G8NX")), f3=loose, f32="PROV")).code == "AA"
    for who in ("G8NS", "G8NX"):
        served = feed.cli("patient", "show", "--ipp", who, "--json")
        assert NIR_OID not in served.stdout, who
    nh_view = feed.show(*ipp("G8NH"))
    assert [(i["type"], i["oid"]) for i in nh_view["identifiers"]][1] == ("NH", NIR_OID)


def test_g7_one_ins_one_active_patient(feed):
    assert feed.one(msg("A28", Person("G7A", ins=INS))).errs == []
    ack = feed.one(msg("A28", Person("G7B", ins=INS)))
    assert warning(ack) == [("205", "PID^1^3")]
    for who in ("G7A", "G7B"):
        view = feed.show(*ipp(who))
        assert (view["ins_collision"], view["ins_usable"]) == (True, False), who
    listed = feed.cli("patient", "collisions", "--json")
    assert listed.exit_code == 1
    ids = sorted(feed.show(*ipp(w))["id"] for w in ("G7A", "G7B"))
    assert json.loads(listed.stdout) == [{"ins": INS, "patients": ids}]
    assert "ins-collision" in findings(feed.history(*ipp("G7A")))
    # The INS deleted from one of them (A47, §4.4.3): the other is alone with it again.
    deleted = a47_ins("G7B", ins_rep(INS), f'""^^^ASIP-SANTE-INS-NIR&{TEST_OID}&ISO^INS')
    assert feed.one(deleted).code == "AA"
    assert feed.show(*ipp("G7B"))["ins"] is None
    survivor = feed.show(*ipp("G7A"))
    assert (survivor["ins_collision"], survivor["ins_usable"]) == (False, True)
    assert "ins-collision-resolved" in findings(feed.history(*ipp("G7A")))
    assert feed.cli("patient", "collisions").exit_code == 0


def test_g7_a_merge_resolves_the_collision(feed):
    assert feed.one(msg("A28", Person("G7M", ins=INS))).errs == []
    assert warning(feed.one(msg("A28", Person("G7N", ins=INS)))) == [("205", "PID^1^3")]
    for who in ("G7M", "G7N"):
        assert feed.show(*ipp(who))["ins_collision"] is True, who
    # G7N merged into G7M: the survivor alone holds the INS again.
    assert feed.one(msg("A40", Person("G7M", ins=INS), prior_ipp="G7N")).errs == []
    survivor = feed.show(*ipp("G7M"))
    assert (survivor["ins"]["value"], survivor["ins_collision"], survivor["ins_usable"]) == (
        INS,
        False,
        True,
    )
    merged = feed.show(*ipp("G7N"))
    assert (merged["active"], merged["merged_into"], merged["ins_collision"]) == (
        False,
        survivor["id"],
        False,
    )
    assert merged["ins_usable"] is False
    resolved = [r for r in feed.history(*ipp("G7M")) if findings([r]) == ["ins-collision-resolved"]]
    assert [(r["event"], r["changes"]) for r in resolved] == [
        ("A40", {"ins_collision": [True, False]})
    ]
    assert feed.cli("patient", "collisions").exit_code == 0
    assert feed.show("--ins", INS)["id"] == survivor["id"]


# -- L: the INS life cycle (§4.4) -----------------------------------------------------------------


def spec(name: str, control_id: str | None = None) -> bytes:
    raw = (SPEC / name).read_bytes()
    return raw.replace(b"|SPEC-", f"|{control_id}-".encode()) if control_id else raw


def test_l1_the_spec_examples_of_section_4_4(feed):
    selector = ("--ipp", "1900068", "--authority", "350000121")
    # §4.4.1: the NIA's key is wrong in the text; the NIR is kept, with a warning.
    ack = feed.one(spec("441-a31-nia-and-nir.hl7"))
    assert warning(ack) == [("102", "PID^1^3")]
    view = feed.show(*selector)
    assert (view["ins"]["value"], view["ins"]["kind"], view["status"]) == (
        "260058815400233",
        "NIR",
        "qualifiee",
    )
    assert view["used_given_name"] == "MARIE-CECILE" and view["used_name"] is None
    # §4.4.2: the new NIR's key is wrong in the text, on a VALI message: refused.
    ack = feed.one(spec("442-a47-new-nir.hl7"))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", ["102"], ["PID^1^3"])
    assert feed.show(*selector)["ins"]["value"] == "260058815400233"
    # §4.4.3: INS deleted; VALI without an INS is validee.
    assert feed.one(spec("443-a47-ins-deleted.hl7")).errs == []
    view = feed.show(*selector)
    assert (view["ins"], view["status"]) == (None, "validee")
    assert "ins-deleted" in findings(feed.history(*selector))
    # Qualified again, then §4.4.4: deleted and downgraded to provisoire.
    assert feed.one(spec("441-a31-nia-and-nir.hl7", "AGAIN")).code == "AA"
    assert feed.show(*selector)["status"] == "qualifiee"
    assert feed.one(spec("444-a47-ins-downgraded-prov.hl7")).errs == []
    view = feed.show(*selector)
    assert (view["ins"], view["status"]) == (None, "provisoire")
    # The same A47 again: no patient holds that INS any more; AA with a warning, nothing done.
    ack = feed.one(spec("444-a47-ins-downgraded-prov.hl7", "LATE"))
    assert warning(ack) == [("204", "MRG^1^1")]


def test_l1_a47_new_nir_replaces_the_previous_one(feed):
    old, new = nir_with_key("2790351215189"), nir_with_key("2790351215190")
    pid3 = f"L1^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{ins_rep(old, NIR_OID)}"
    assert feed.one(production(with_pid(msg("A31", Person("L1")), f3=pid3))).errs == []
    change = a47_ins("L1", ins_rep(old, NIR_OID), ins_rep(new, NIR_OID))
    assert feed.one(production(change)).errs == []
    view = feed.show(*ipp("L1"))
    assert (view["ins"]["value"], view["status"], view["ins_usable"]) == (new, "qualifiee", True)
    last = feed.history(*ipp("L1"))[-1]
    assert last["operation"] == "change_ins" and last["changes"]["ins_value"] == [old, new]


def test_l1_an_a47_naming_a_merged_away_ipp_changes_its_survivor(feed):
    """§4.4.3 through the IPP of a record merged into the INS holder: the deletion reaches the
    survivor (as an A40 or an A24 naming that IPP does), not an AE that leaves the INS on it."""
    feed.ok(
        msg("A28", Person("L1OLD", pid32=("PROV",))),
        msg("A28", Person("L1SURV", ins=INS)),
        msg("A40", Person("L1SURV"), prior_ipp="L1OLD"),
    )
    deleted = a47_ins("L1OLD", ins_rep(INS), f'""^^^ASIP-SANTE-INS-NIR&{TEST_OID}&ISO^INS')
    assert warning(feed.one(deleted)) == [("0", "PID^1^3")]
    survivor = feed.show(*ipp("L1SURV"))
    assert (survivor["ins"], survivor["ins_usable"]) == (None, False)
    assert feed.show(*ipp("L1OLD"))["active"] is False


# -- E: events ------------------------------------------------------------------------------------


def test_e3_a40_and_a47_do_not_downgrade_a_qualified_survivor(feed):
    assert feed.one(msg("A28", Person("E3S", ins=INS, pid32=("VALI", "HOMA")))).errs == []
    assert feed.one(msg("A28", Person("E3M"))).code == "AA"
    bare = "E3S^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"
    merge = with_pid(
        msg("A40", Person("E3S"), prior_ipp="E3M"), f3=bare, f7="", f8="", f11="", f32=""
    )
    merge = with_pid(merge, f5="E3S^^^^^^L")
    assert feed.one(merge).code == "AA"
    view = feed.show(*ipp("E3S"))
    assert (view["status"], view["attributes"], view["ins_usable"]) == (
        "qualifiee",
        ["homonyme"],
        True,
    )
    assert view["first_given_name"] == "DOMINIQUE" and view["birth_place_insee"] == "63220"
    # An A47 (MRG-1 the old IPP) whose PID has only PID-3 and PID-5: a new IPP, nothing else.
    before = feed.show(*ipp("E3S"))
    change = with_pid(msg("A47", Person("E3T"), prior_ipp="E3S"), f7="", f8="", f11="", f32="")
    assert feed.one(with_pid(change, f5="AUTRE^^^^^^L")).errs == []
    after = feed.show(*ipp("E3T"))
    assert after["id"] == before["id"] and feed.exit_code(*ipp("E3S")) == 1
    for key in ("status", "attributes", "ins", "ins_usable", "birth_name", "first_given_name"):
        assert after[key] == before[key], key
    for key in ("birth_given_names", "birth_date", "sex", "birth_place_insee"):
        assert after[key] == before[key], key
    assert feed.history(*ipp("E3T"))[-1]["changes"] == {
        "identifiers": [["E3S^PI^1.2.250.1.999.1.1"], ["E3T^PI^1.2.250.1.999.1.1"]]
    }


BIRTH_PLACE_EMPTY = "28 Av de Breteuil^^PARIS^^75007^FRA^H~^^^^^^BDL^^"  # XAD-9 empty


def test_e4_empty_given_names_or_birth_place_keep_the_stored_traits(feed, db_url):
    person = Person("E4", ins=INS, given_names=("DOMINIQUE", "ANNE"))
    assert feed.one(msg("A28", person)).errs == []
    before = feed.show(*ipp("E4"))
    assert (before["birth_given_names"], before["birth_place_insee"]) == (
        ["DOMINIQUE", "ANNE"],
        "63220",
    )
    traits = ("first_given_name", "birth_given_names", "birth_place_insee", "status", "ins")

    def blank(text: str, used_name: str = "") -> str:  # XPN-3 and the birth XAD-9 left empty
        used = f"{used_name}^^^^^^D~" if used_name else ""
        return with_pid(text, f5=f"{used}PAT-TEST^DOMINIQUE^^^^^L", f11=BIRTH_PLACE_EMPTY)

    # An A44 agrees with the store under the null semantics: nothing to warn about.
    assert feed.one(blank(msg("A44", person))).errs == []
    assert feed.one(msg("A28", Person("E4M"))).code == "AA"
    assert feed.one(blank(msg("A40", person, prior_ipp="E4M"))).errs == []
    assert feed.one(blank(msg("A31", person), "DURAND")).errs == []
    view = feed.show(*ipp("E4"))
    assert view["used_name"] == "DURAND"
    assert {k: view[k] for k in traits} == {k: before[k] for k in traits}
    # With the operator's switch an A44 does update the identity, and still keeps them.
    with pamfr_server(db_url, iti31_updates_identity=True) as server:
        switched = Feed(server.port, db_url)
        assert switched.one(blank(msg("A44", person), "MARTIN")).errs == []
    view = feed.show(*ipp("E4"))
    assert view["used_name"] == "MARTIN"
    assert {k: view[k] for k in traits} == {k: before[k] for k in traits}


def test_e5_a_zfd1_null_with_pid7_empty_keeps_the_birth_date_and_the_ins(feed):
    assert feed.one(msg("A28", Person("E5Z", ins=INS))).errs == []
    # PID-7 empty (keep) and ZFD-1 `""` (no date lunaire): nothing says the birth date goes.
    update = with_pid(msg("A31", Person("E5Z", ins=INS)), f7="")
    update = update.replace("ZFD|||Y|N|INSI", 'ZFD|""||Y|N|INSI')
    assert warning(feed.one(update)) == [("0", "PID^1")]  # E6: nothing kept changed
    view = feed.show(*ipp("E5Z"))
    assert (view["birth_date"], view["status"]) == ("1979-03-28", "qualifiee")
    assert view["ins"]["value"] == INS


def test_e6_an_a31_changing_only_what_is_not_kept_says_so(feed):
    assert feed.one(msg("A31", Person("E6"))).errs == []
    moved = msg("A31", Person("E6")).replace(
        "28 Av de Breteuil^^PARIS^^75007", "1 Rue Neuve^^LYON^^69001"
    )
    ack = feed.one(moved)
    assert warning(ack) == [("0", "PID^1")]
    assert "addresses, phones" in ack.errs[0][8]
    rows = feed.history(*ipp("E6"))
    assert [(r["event"], r["changes"]) for r in rows][-1] == ("A31", {})
    assert findings(rows[-1:]) == ["nothing-kept-changed"]
    # An encounter event that changes nothing is the everyday case: nothing said.
    assert feed.one(msg("A01", Person("E6"))).errs == []


def test_e5_a15_pending_transfer_is_accepted(feed):
    ack = feed.one(msg("A15", Person("E5")))
    assert (ack.code, ack.errs) == ("AA", [])
    assert feed.one(msg("A26", Person("E5"))).code == "AA"


# -- M: merges and the survivor -------------------------------------------------------------------


def test_m1_a_merge_chain_points_at_the_final_survivor(feed):
    for who in ("MA", "MB", "MC"):
        assert feed.one(msg("A28", Person(who, ins=INS if who != "MC" else None))).code == "AA"
    assert feed.one(msg("A24", Person("MA"), other=Person("LINKED"))).code == "AA"
    assert feed.one(msg("A40", Person("MB"), prior_ipp="MA")).code == "AA"
    assert feed.one(msg("A40", Person("MC"), prior_ipp="MB")).code == "AA"
    c = feed.show(*ipp("MC"))
    for who in ("MA", "MB"):
        view = feed.show(*ipp(who))
        assert (view["active"], view["merged_into"], view["ins_usable"]) == (False, c["id"], False)
    # The INS shared by the merged records finds the survivor, not "ambiguous".
    assert feed.show("--ins", INS)["id"] == c["id"]
    found = feed.cli("patient", "find", "--ins", INS, "--json")
    assert [v["id"] for v in json.loads(found.stdout)] == [c["id"]]
    # The link recorded on MA's IPP belongs to the survivor now.
    assert feed.one(msg("A28", Person("LINKED"))).code == "AA"
    assert c["links"] == [] and feed.show(*ipp("MC"))["links"] == [feed.show(*ipp("LINKED"))["id"]]
    # An A47 on a merged-away IPP is not applied to the inactive record.
    ack = feed.one(msg("A47", Person("MNEW"), prior_ipp="MA"))
    assert warning(ack) == [("204", "PID^1^3")]
    assert feed.show(*ipp("MA"))["id"] != c["id"]
    assert feed.cli("patient", "show", "--ipp", "MNEW").exit_code == 1


def test_m1_an_a40_whose_pid3_names_two_patients_is_refused(feed):
    clinic = "CLIN-Y&1.2.250.1.999.2.2&ISO"
    feed.ok(
        msg("A28", Person("M1T1")),
        with_pid(msg("A28", Person("M1T2")), f3=f"M1T2^^^{clinic}^PI"),
        msg("A28", Person("M1S")),
    )
    # PID-3 holds an IPP of each of two patients: which one the record is merged into is
    # not for pamfr to guess.
    both = f"M1T1^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~M1T2^^^{clinic}^PI"
    ack = feed.one(with_pid(msg("A40", Person("M1T1"), prior_ipp="M1S"), f3=both))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", ["205"], ["PID^1^3"])
    assert feed.show(*ipp("M1S"))["active"] is True
    # An IPP of a record already merged into the target stands for the target.
    merged_ipp = f"M1O^^^{clinic}^PI"
    first_merge = msg("A40", Person("M1T1"), prior_ipp="M1O")
    first_merge = first_merge.replace(
        "MRG|M1O^^^CHU-X&1.2.250.1.999.1.1&ISO^PI", f"MRG|{merged_ipp}"
    )
    feed.ok(with_pid(msg("A28", Person("M1O")), f3=merged_ipp), first_merge)
    with_old = f"M1T1^^^CHU-X&1.2.250.1.999.1.1&ISO^PI~{merged_ipp}"
    feed.ok(with_pid(msg("A40", Person("M1T1"), prior_ipp="M1S"), f3=with_old))
    target = feed.show(*ipp("M1T1"))["id"]
    assert [feed.show(*ipp(w))["merged_into"] for w in ("M1O", "M1S")] == [target, target]


def test_m1_an_a40_merges_the_record_any_of_mrg1s_ipps_designates(feed):
    clinic = "CLIN-Y&1.2.250.1.999.2.2&ISO"
    feed.ok(
        msg("A28", Person("M1PT")),
        with_pid(msg("A28", Person("M1PS")), f3=f"M1PS^^^{clinic}^PI"),
        with_pid(msg("A28", Person("M1PO")), f3=f"M1PO^^^{clinic}^PI"),
        msg("A28", Person("M1PQ")),
    )
    # MRG-1 names the record by two facilities' IPPs; only the second one is known here.
    a40 = msg("A40", Person("M1PT"), prior_ipp="M1PX")
    mrg = "MRG|M1PX^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"
    assert mrg in a40
    assert feed.one(a40.replace(mrg, f"{mrg}~M1PS^^^{clinic}^PI")).code == "AA"
    target = feed.show(*ipp("M1PT"))["id"]
    assert feed.show(*ipp("M1PS"))["merged_into"] == target
    # Known IPPs of two different records in one MRG-1: refused, nothing merged.
    a40 = msg("A40", Person("M1PT"), prior_ipp="M1PQ")
    mrg = "MRG|M1PQ^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"
    ack = feed.one(a40.replace(mrg, f"{mrg}~M1PO^^^{clinic}^PI"))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", ["205"], ["MRG^1^1"])
    assert [feed.show(*ipp(w))["active"] for w in ("M1PQ", "M1PO")] == [True, True]


def test_m1_an_a24_on_a_merged_away_ipp_goes_to_the_survivor(feed):
    for who in ("M24A", "M24S", "M24L", "M24K"):
        assert feed.one(msg("A28", Person(who))).code == "AA"
    assert feed.one(msg("A40", Person("M24S"), prior_ipp="M24A")).errs == []
    merged, survivor = feed.show(*ipp("M24A")), feed.show(*ipp("M24S"))
    merged_rows = len(feed.history(*ipp("M24A")))
    linked, other = feed.show(*ipp("M24L"))["id"], feed.show(*ipp("M24K"))["id"]
    # PID-3 of the A24 is the merged-away IPP; then the linked identifier (PID-2 segment) is:
    # each warns as an A40 into a merged-away patient does.
    ack = feed.one(msg("A24", Person("M24A"), other=Person("M24L")))
    assert warning(ack) == [("0", "PID^1^3")] and "merged into another" in ack.errs[0][8]
    ack = feed.one(msg("A24", Person("M24K"), other=Person("M24A")))
    assert warning(ack) == [("0", "PID^2^3")]
    assert len(feed.history(*ipp("M24A"))) == merged_rows  # the inactive record: untouched
    rows = feed.history(*ipp("M24S"))[-2:]
    assert [(r["event"], r["operation"]) for r in rows] == [("A24", "link"), ("A24", "link")]
    assert findings(rows) == ["merge-target-redirected"] * 2
    # The same A24 again: the link is there, the warning still says where it went.
    again = feed.one(msg("A24", Person("M24A"), other=Person("M24L")))
    assert warning(again) == [("0", "PID^1^3")]
    assert feed.show(*ipp("M24S"))["links"] == sorted([linked, other])
    for who in ("M24L", "M24K"):
        assert feed.show(*ipp(who))["links"] == [survivor["id"]], who
    assert feed.show(*ipp("M24A"))["active"] is False and merged["merged_into"] == survivor["id"]


# -- I: identifiers and authorities ---------------------------------------------------------------


def test_i1_one_authority_whether_named_by_namespace_or_oid(feed):
    assert feed.one(msg("A28", Person("I1", authority="HOP&1.2.3&ISO"))).code == "AA"
    assert feed.one(msg("A31", Person("I1", authority="HOP", used_name="X"))).code == "AA"
    view = feed.show(*ipp("I1"))
    assert view["used_name"] == "X"
    assert feed.cli("patient", "find", "--name", "PAT-TEST", "--json").stdout.count('"id"') == 1
    # MRG-1 naming the authority by namespace only finds the patient.
    assert feed.one(msg("A28", Person("I2", authority="HOP&1.2.3&ISO"))).code == "AA"
    merge = msg("A40", Person("I1", authority="HOP&1.2.3&ISO"), prior_ipp="I2")
    merge = merge.replace("MRG|I2^^^HOP&1.2.3&ISO^PI", "MRG|I2^^^HOP^PI")
    assert feed.one(merge).errs == []
    assert feed.show(*ipp("I2"))["merged_into"] == view["id"]


def test_i1_identifiers_learnt_under_the_namespace_are_rekeyed(feed):
    assert feed.one(msg("A28", Person("I3", authority="CLINIQUE"))).code == "AA"
    assert feed.one(msg("A31", Person("I3", authority="CLINIQUE&1.2.9&ISO"))).code == "AA"
    view = feed.show(*ipp("I3"))
    assert [(i["value"], i["oid"]) for i in view["identifiers"] if i["type"] == "PI"] == [
        ("I3", "1.2.9")
    ]


def test_i1_a_second_ipp_of_the_same_authority_is_refused(feed):
    assert feed.one(msg("A28", Person("I4"))).code == "AA"
    second = ("I5^^^CHU-X&1.2.250.1.999.1.1&ISO^PI",)
    ack = feed.one(msg("A31", Person("I4", extra_ids=second)))
    assert (ack.code, ack.err_codes, ack.err_locations) == ("AE", ["205"], ["PID^1^3"])
    assert feed.cli("patient", "show", "--ipp", "I5").exit_code == 1


# -- T: transport and control ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2.5^FRA^2.11", "2.5", "2.5.1", "2.3.1"])
def test_t1_msh12_2_5_with_any_12_2_and_other_2_x_versions_are_accepted(feed, version):
    text = msg("A28", Person("T1", ins=INS)).replace("|2.5^FRA^2.11|", f"|{version}|", 1)
    assert f"|{version}|" in text
    ack = feed.one(text)
    assert (ack.code, ack.errs) == ("AA", [])
    view = feed.show(*ipp("T1"))
    assert (view["status"], view["ins"]["value"]) == ("qualifiee", INS)


def test_t2_empty_msh18_with_8bit_bytes_uses_the_default_charset(feed):
    text = msg("A28", Person("T2", birth_name="MÉNARD")).replace("|UNICODE UTF-8|", "||")
    ack = feed.one(text.encode("iso-8859-15"))
    assert warning(ack) == [("103", "MSH^1^18")]
    assert feed.show(*ipp("T2"))["birth_name"] == "MÉNARD"
    logged = feed.last_logged()
    assert logged["err_codes"] == "103" and logged["warnings"].startswith("103 MSH^1^18")


def test_t3_hex_escapes_are_decoded(feed):
    text = msg("A28", Person("T3", birth_name="L\\XC389\\ON"))
    assert feed.one(text).errs == []
    assert feed.show(*ipp("T3"))["birth_name"] == "LÉON"


def test_the_messages_command_lists_warnings_from_the_log(feed):
    assert feed.one(msg("A28", Person("W0", ins=INS))).errs == []
    feed.one(msg("A28", Person("W1", ins=INS, pid32=("PROV",))))
    logged = feed.last_logged()
    assert (logged["outcome"], logged["err_codes"]) == ("AA", "103")
    assert "INS not kept" in logged["warnings"] and INS not in logged["warnings"]
    listed = feed.cli("messages", "--outcome", "AA", "--warnings", "--json")
    assert listed.exit_code == 0, listed.output
    (only,) = json.loads(listed.stdout)
    assert (only["id"], only["outcome"]) == (logged["id"], "AA")
    assert only["warnings"].startswith("103 PID^1^32: INS not kept")
    text = feed.cli("messages", "--outcome", "AA", "--warnings")
    assert "warnings: 103 PID^1^32" in text.stdout and text.stdout.count("\n") == 2  # header, row


def test_a_warning_is_logged_at_info_with_its_code_and_no_patient_data(db_url, tmp_path):
    person = Person(
        "LOGW", birth_name="ZORGLUBIAN", given_names=("PERCEVALINE",), ins=INS, pid32=("PROV",)
    )
    daemon = start_daemon(db_url, tmp_path / "serve.log", "--log-level", "info")
    try:
        (ack,) = send(daemon.port, [message("A28", person, "LOGW-1")])
        assert warning(ack) == [("103", "PID^1^32")]
        deadline = time.monotonic() + 20
        while "control_id=LOGW-1 " not in daemon.log():
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.05)
    finally:
        exit_code = daemon.stop()
    assert exit_code == 0
    log = daemon.log()
    (line,) = [x for x in log.splitlines() if "control_id=LOGW-1 " in x]
    assert " INFO " in line
    assert "event=A28 outcome=AA warnings=103@PID^1^32 " in line
    for needle in (INS, INS[:13], "ZORGLUBIAN", "PERCEVALINE", "19790328", "1979-03-28"):
        assert needle not in log, needle
