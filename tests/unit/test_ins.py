"""The INS matricule: OIDs, length, format, the NIR key (Corsica too); NH is never an INS."""

from __future__ import annotations

import pytest

from pamfr.hl7.er7 import read_header
from pamfr.hl7.errors import MessageRejected
from pamfr.hl7.parse import decode, parse_adt
from pamfr.hl7.samples import msh
from pamfr.identity.authority import canonical
from pamfr.identity.identifiers import sort_identifiers, states_ins
from pamfr.identity.ins import InsKind, InvalidIns, check_ins, nir_key
from pamfr.identity.model import Identifier, Status
from pamfr.identity.rules import Decision, Policy, decide_identity

NIR_OID = "1.2.250.1.213.1.4.8"
NIA_OID = "1.2.250.1.213.1.4.9"
TEST_OID = "1.2.250.1.213.1.4.10"
DEMO_OID = "1.2.250.1.213.1.4.11"
INS_C_OID = "1.2.250.1.213.1.4.2"  # the obsolete INS-C: not an INS any more


def expected_key(body: str) -> int:
    """INSEE's own statement of the key, written apart from pamfr's: for Corsica the department
    is read as 20 and 1 000 000 (2A) or 2 000 000 (2B) is taken off the 13-digit number."""
    department = body[5:7].upper()
    if department in ("2A", "2B"):
        number = int(body[:5] + "20" + body[7:]) - (1_000_000 if department == "2A" else 2_000_000)
    else:
        number = int(body)
    return 97 - number % 97


def with_key(body: str) -> str:
    return f"{body}{expected_key(body):02d}"


def test_ans_test_identity_key_is_valid():
    # The ANS test identity of the public examples: key 89, known beforehand.
    assert expected_key("2790351215189") == 89
    ins = check_ins("279035121518989", TEST_OID)
    assert (ins.value, ins.oid, ins.kind) == ("279035121518989", TEST_OID, InsKind.NIR_TEST)


@pytest.mark.parametrize(
    "body", ["1850775123456", "2010163220001", "1991299134002", "2550597209123"]
)
def test_valid_nir(body):
    value = with_key(body)
    assert nir_key(body) == expected_key(body)
    ins = check_ins(value, NIR_OID)
    assert ins.value == value and ins.kind is InsKind.NIR


def test_key_97_when_the_body_is_a_multiple_of_97():
    body = next(str(n) for n in range(1850775123456, 1850775123456 + 97) if n % 97 == 0)
    assert expected_key(body) == 97
    assert check_ins(body + "97", NIR_OID).value == body + "97"
    with pytest.raises(InvalidIns):
        check_ins(body + "00", NIR_OID)


@pytest.mark.parametrize("delta", [1, -1, 10, 50])
def test_wrong_key(delta):
    body = "1850775123456"
    wrong = (expected_key(body) - 1 + delta) % 97 + 1  # another key in 01..97
    with pytest.raises(InvalidIns, match="key"):
        check_ins(f"{body}{wrong:02d}", NIR_OID)


@pytest.mark.parametrize("value", ["18507751234567", "1850775123456789", "", "1850775"])
def test_wrong_length(value):
    with pytest.raises(InvalidIns, match="15 characters"):
        check_ins(value, NIR_OID)


@pytest.mark.parametrize(
    "value",
    # a letter, a blank, 2A as the sex and year, 0A where the department is not
    ["1850775X2345678", "185077512345 67", "2A5077512345678", "1680220A0041200"],
)
def test_characters_outside_the_format(value):
    with pytest.raises(InvalidIns):
        check_ins(value, NIR_OID)


@pytest.mark.parametrize(("body", "department"), [("185072A004123", "2A"), ("292052B033045", "2B")])
def test_corsica(body, department):
    value = with_key(body)
    assert check_ins(value, NIR_OID).value == value
    # Lower case is accepted and stored in upper case.
    assert check_ins(value.lower(), NIR_OID).value == value
    # The key of the body with the department read as plain 20, or corrected twice, is wrong.
    plain = 97 - int(body.replace(department, "20")) % 97
    corrected = int(body.replace(department, "19" if department == "2A" else "18"))
    twice = 97 - (corrected - 1_000_000) % 97
    for bad in {plain, twice} - {expected_key(body)}:
        with pytest.raises(InvalidIns):
            check_ins(f"{body}{bad:02d}", NIR_OID)


def test_corsica_keys_differ_from_each_other():
    # Same digits elsewhere: 2A and 2B give different keys, both valid for their own body.
    a, b = with_key("185072A004123"), with_key("185072B004123")
    assert a[-2:] != b[-2:]
    assert check_ins(a, NIR_OID) and check_ins(b, NIR_OID)
    with pytest.raises(InvalidIns):
        check_ins(a[:13].replace("2A", "2B") + a[-2:], NIR_OID)


@pytest.mark.parametrize(
    ("oid", "kind"),
    [
        (NIR_OID, InsKind.NIR),
        (NIA_OID, InsKind.NIA),
        (TEST_OID, InsKind.NIR_TEST),
        (DEMO_OID, InsKind.NIR_DEMO),
    ],
)
def test_kind_comes_from_the_oid(oid, kind):
    # An NIA is built like an NIR, key included: only the OID tells them apart.
    ins = check_ins(with_key("1850775123456"), oid)
    assert ins.kind is kind and ins.oid == oid


def test_nia_key_is_checked():
    with pytest.raises(InvalidIns, match="key"):
        check_ins("185077512345600", NIA_OID)


@pytest.mark.parametrize("oid", [INS_C_OID, "", "1.2.250.1.213.1.4.12", "2.16.840.1"])
def test_unknown_oid(oid):
    with pytest.raises(InvalidIns, match="OID"):
        check_ins(with_key("1850775123456"), oid)


# -- through the PID ----------------------------------------------------------------------------


def parse_pid3(pid3: str, pid32: str = "VALI") -> Decision:
    """What a new identity becomes from an A28 with this PID-3 (and the five traits)."""
    pid = f"PID|1||{pid3}||DOE^JEAN^JEAN^^^^L||19850701|M|||^^^^^^BDL^^75056" + "|" * 21 + pid32
    text = "\r".join([msh("A28", "ADT_A05", "C1"), "EVN||20240306111154", pid, "PV1||N"])
    raw = (text + "\r").encode()
    header = read_header(raw)
    identity = parse_adt(decode(raw, header), header).patients[0]
    return decide_identity(identity, None, Policy())


IPP = "IPP1^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"


def test_nh_is_never_the_ins():
    nss = with_key("1850775123456")
    decided = parse_pid3(f"{IPP}~{nss}^^^ASIP-SANTE-NIR&{NIR_OID}&ISO^NH")
    assert decided.ins is None
    assert decided.values.status == Status.VALIDEE  # VALI without an INS


def test_nh_with_a_bad_key_is_not_checked_as_an_ins():
    decided = parse_pid3(f"{IPP}~185077512345600^^^ASIP-SANTE-NIR&{NIR_OID}&ISO^NH")
    assert decided.ins is None and decided.notes == []


def test_ins_next_to_an_nh_of_the_parent():
    child, parent = with_key("2200175123456"), with_key("1850775123456")
    decided = parse_pid3(
        f"{IPP}~{parent}^^^ASIP-SANTE-NIR&{NIR_OID}&ISO^NH"
        f"~{child}^^^ASIP-SANTE-INS-NIR&{NIR_OID}&ISO^INS^^20101207"
    )
    assert decided.ins.value == child and decided.ins.kind is InsKind.NIR
    assert decided.values.status == Status.QUALIFIEE


def test_nia_with_nir_namespace_is_keyed_on_the_oid():
    nia = with_key("1850775123456")
    decided = parse_pid3(f"{IPP}~{nia}^^^ASIP-SANTE-INS-NIR&{NIA_OID}&ISO^INS")
    assert decided.ins.kind is InsKind.NIA


def test_nir_preferred_over_nia_when_both_are_sent():
    nir, nia = with_key("1850775123456"), with_key("1850775123457")
    decided = parse_pid3(
        f"{IPP}~{nia}^^^ASIP-SANTE-INS-NIA&{NIA_OID}&ISO^INS"
        f"~{nir}^^^ASIP-SANTE-INS-NIR&{NIR_OID}&ISO^INS"
    )
    assert (decided.ins.value, decided.ins.kind) == (nir, InsKind.NIR)


@pytest.mark.parametrize(
    "ins",
    [
        "185077512345600^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS",  # key
        "18507751234^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS",  # length
        f"{with_key('1850775123456')}^^^INS-C&{INS_C_OID}&ISO^INS",  # OID
        f"{with_key('1850775123456')}^^^ASIP-SANTE-INS-NIR^INS",  # no OID at all
    ],
)
def test_bad_ins_in_pid3_is_ae_102(ins):
    with pytest.raises(MessageRejected) as caught:
        parse_pid3(f"{IPP}~{ins}")
    (problem,) = caught.value.problems
    assert (caught.value.ack_code, problem.code, problem.location) == ("AE", 102, "PID^1^3")


# -- G8: which identifiers state an INS ----------------------------------------------------------


def test_g8_ins_typed_identifiers_are_ins_statements_never_identifiers():
    ipp = Identifier("IPP1", "PI", "CHU-X", "1.2.250.1.999.1.1")
    nir = with_key("1850775123456")
    stated = [
        ipp,
        Identifier(nir, "INS-NIR", "ASIP-SANTE-INS-NIR", NIR_OID),
        Identifier(nir, "INS-NIA", "ASIP-SANTE-INS-NIA", "1.2.250.1.213.1.4.9"),
        Identifier(nir, "", "ASIP-SANTE-INS-NIR", NIR_OID),
        Identifier(nir, "PI", "ASIP-SANTE-INS-NIR", NIR_OID),
        Identifier(nir, "NH", "ASIP-SANTE-NIR", NIR_OID),  # the billing NIR, never the INS
        Identifier('""', "INS", "ASIP-SANTE-INS-NIR", NIR_OID),
    ]
    got = sort_identifiers(stated)
    assert got.identifiers == (ipp, stated[5])
    assert [s.oid for s in got.ins] == [NIR_OID, "1.2.250.1.213.1.4.9", NIR_OID, NIR_OID]
    assert got.ins_cleared is True
    assert not states_ins(ipp) and states_ins(stated[1]) and not states_ins(stated[5])


def test_g8_an_ins_authority_named_by_namespace_alone_states_an_ins():
    nir = with_key("1850775123456")
    assert states_ins(Identifier(nir, "", "ASIP-SANTE-INS-NIR"))
    assert states_ins(Identifier(nir, "NI", "asip-sante-ins-nia"))
    assert not states_ins(Identifier(nir, "NH", "ASIP-SANTE-INS-NIR"))
    # A namespace learnt with an INS OID keys only the billing NIR on it.
    pairs = {"ASIP-SANTE-NIR": NIR_OID}
    assert canonical(Identifier(nir, "NH", "ASIP-SANTE-NIR"), pairs).oid == NIR_OID
    assert canonical(Identifier(nir, "", "ASIP-SANTE-NIR"), pairs).oid == ""
    assert canonical(Identifier("1", "PI", "HOP"), {"HOP": "1.2.3"}).oid == "1.2.3"
