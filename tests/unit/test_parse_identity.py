"""PID / ZFD / MRG -> domain values: each INS trait, the status from PID-32 + PID-3 + ZFD-5,
explicit null against empty, and every AE rule of issue 3 with its ERR code and place."""

from __future__ import annotations

import pytest

from pamfr.hl7.er7 import read_header
from pamfr.hl7.events import Operation
from pamfr.hl7.parse import AdtMessage, decode, parse_adt
from pamfr.identity.errors import MessageRejected
from pamfr.identity.ins import InsKind
from pamfr.identity.model import KEEP, Attribute, BirthDate, Identifier, Status
from pamfr.samples import STRUCTURES, msh, nir_with_key

IPP = "IPP1^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"
INS = nir_with_key("2790351215189")  # the ANS test identity, key 89
INS_REP = f"{INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS^^20101207"
DEFAULT_PID = {
    3: IPP,
    5: "PAT-TROIS^DOMINIQUE^DOMINIQUE^^^^L",
    7: "19790328",
    8: "F",
    11: "28 Av de Breteuil^^PARIS^^75007^FRA^H~^^^^^^BDL^^63220",
    32: "VALI",
}


def pid(set_id: int = 1, **fields: str) -> str:
    values = {**DEFAULT_PID, **{int(k.lstrip("f")): v for k, v in fields.items()}}
    out = ["PID", str(set_id)] + [""] * 32
    for n, v in values.items():
        out[n] = v
    return "|".join(out).rstrip("|")


def parse(*segments: str, event: str = "A28") -> AdtMessage:
    structure = STRUCTURES.get(event, "ADT_A01")
    text = "\r".join([msh(event, structure, "C1"), "EVN||20240306111154", *segments]) + "\r"
    raw = text.encode("utf-8")
    header = read_header(raw)
    return parse_adt(decode(raw, header), header)


def identity(zfd: str | None = None, **fields: str):
    segments = [pid(**fields), "PV1||N"] + ([zfd] if zfd else [])
    return parse(*segments).patients[0]


def rejected(*segments: str, event: str = "A28") -> tuple[str, int, str]:
    with pytest.raises(MessageRejected) as caught:
        parse(*segments, event=event)
    problem = caught.value.problems[0]
    return caught.value.ack_code, problem.code, problem.location


# -- identifiers --------------------------------------------------------------------------------


def test_identifiers_of_pid3():
    got = identity(f3=f"{IPP}~24000006^^^CHU-X&000897406&M^AN~{INS_REP}")
    assert got.identifiers == (
        Identifier("IPP1", "PI", "CHU-X", "1.2.250.1.999.1.1"),
        Identifier("24000006", "AN", "CHU-X", "000897406"),
        Identifier(INS, "INS", "ASIP-SANTE-INS-NIR", "1.2.250.1.213.1.4.10"),
    )
    assert got.ipp == Identifier("IPP1", "PI", "CHU-X", "1.2.250.1.999.1.1")
    assert got.ins.value == INS and got.ins.kind is InsKind.NIR_TEST


def test_authority_key_is_the_oid_else_the_namespace():
    got = identity(f3="A^^^CHU-X&1.2.3&ISO^PI~B^^^CHU-Y^PI")
    assert [i.authority_key for i in got.ipps] == ["1.2.3", "CHU-Y"]


def test_ins_explicit_null_clears_and_absent_keeps():
    cleared = identity(f3=f'{IPP}~""^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS', f32="PROV")
    assert cleared.ins is None
    assert [i.type for i in cleared.identifiers] == ["PI"]
    assert identity(f32="PROV").ins is KEEP


# -- the five traits and the used names ------------------------------------------------------


def test_birth_name_and_given_names_in_order():
    got = identity(f5="DUPONT^MARIE^MARIE CLAIRE ANNE^^^^L")
    assert got.birth_name == "DUPONT"
    assert got.first_given_name == "MARIE"
    assert got.birth_given_names == ("MARIE", "CLAIRE", "ANNE")
    assert got.used_name is KEEP and got.used_given_name is KEEP


def test_given_names_order_is_kept_not_sorted():
    assert identity(f5="X^ZOE^ZOE ANNE BERTHE^^^^L").birth_given_names == ("ZOE", "ANNE", "BERTHE")


@pytest.mark.parametrize(
    "pid5",
    [
        "MARTIN^Julie^^^^^D~DUPONT^MARIE^MARIE CLAIRE^^^^L",
        "DUPONT^MARIE^MARIE CLAIRE^^^^L~MARTIN^Julie^^^^^D",
        "MARTIN^Julie^^^MME^^D^A~DUPONT^MARIE^MARIE CLAIRE^^^^L",
    ],
)
def test_l_and_d_names_in_either_order(pid5):
    got = identity(f5=pid5)
    assert (got.birth_name, got.first_given_name, got.birth_given_names) == (
        "DUPONT",
        "MARIE",
        ("MARIE", "CLAIRE"),
    )
    assert (got.used_name, got.used_given_name) == ("MARTIN", "Julie")


def test_used_name_only_keeps_the_birth_name():
    got = identity(f5="MARTIN^Julie^^^^^D")
    assert (got.used_name, got.used_given_name) == ("MARTIN", "Julie")
    assert got.birth_name is KEEP and got.birth_given_names is KEEP


def test_names_are_unescaped_and_kept_as_received():
    got = identity(f5="O\\T\\BRIEN-D'ARC^Hélène^Hélène Noël^^^^L")
    assert got.birth_name == "O&BRIEN-D'ARC"
    assert got.birth_given_names == ("Hélène", "Noël")


def test_pid5_explicit_null_clears_every_name_and_empty_keeps():
    cleared = identity(f5='""')
    assert [
        cleared.birth_name,
        cleared.first_given_name,
        cleared.birth_given_names,
        cleared.used_name,
        cleared.used_given_name,
    ] == [None] * 5
    kept = identity(f5="")
    assert kept.birth_name is KEEP and kept.birth_given_names is KEEP and kept.used_name is KEEP


@pytest.mark.parametrize(
    ("pid7", "expected", "iso"),
    [
        ("1979", BirthDate(1979), "1979"),
        ("197903", BirthDate(1979, 3), "1979-03"),
        ("19790328", BirthDate(1979, 3, 28), "1979-03-28"),
        ("197903281530", BirthDate(1979, 3, 28), "1979-03-28"),
        ("19790328153000.5+0100", BirthDate(1979, 3, 28), "1979-03-28"),
        ("20000229", BirthDate(2000, 2, 29), "2000-02-29"),
    ],
)
def test_birth_date_with_its_precision(pid7, expected, iso):
    got = identity(f7=pid7).birth_date
    assert got == expected and got.iso() == iso
    assert BirthDate.from_iso(iso) == expected


def test_birth_date_null_and_empty():
    assert identity(f7='""').birth_date is None
    assert identity(f7="").birth_date is KEEP


@pytest.mark.parametrize(
    "pid7", ["19790230", "19791301", "197900", "1979032", "197903281", "79", "1979-03-28", "ABCD"]
)
def test_invalid_birth_date_is_ae_102_at_pid7(pid7):
    assert rejected(pid(f7=pid7)) == ("AE", 102, "PID^1^7")


@pytest.mark.parametrize("sex", ["F", "M", "U"])
def test_sex(sex):
    message = parse(pid(f8=sex), "PV1||N")
    assert message.patients[0].sex == sex and message.warnings == ()


@pytest.mark.parametrize("sex", ["O", "A"])
def test_sex_o_and_a_become_u_with_a_warning(sex):
    message = parse(pid(f8=sex), "PV1||N")
    assert message.patients[0].sex == "U"
    (warning,) = message.warnings
    assert (warning.severity, warning.code, warning.location) == ("W", 103, "PID^1^8")


@pytest.mark.parametrize("sex", ["X", "N", "FEMME", "1"])
def test_other_sex_is_ae_103_at_pid8(sex):
    assert rejected(pid(f8=sex)) == ("AE", 103, "PID^1^8")


def test_sex_null_and_empty():
    assert identity(f8='""').sex is None
    assert identity(f8="").sex is KEEP


@pytest.mark.parametrize(
    ("pid11", "insee"),
    [
        ("^^^^^^BDL^^63220", "63220"),
        ("28 Av de Breteuil^^PARIS^^75007^FRA^H~^^^^^^BDL^^63220", "63220"),
        ("^^^^^^BDL^^2A004~28 Av de Breteuil^^PARIS^^75007^FRA^H", "2A004"),
        ("^^AJACCIO^^20000^FRA^BDL^^2b033", "2B033"),
        ("^^MADRID^^^ESP^BDL^^99134", "99134"),
        ("^^PARIS 01^75101^75001^FRA^BDL^^75101", "75101"),
    ],
)
def test_birth_place_insee_from_the_bdl_address(pid11, insee):
    assert identity(f11=pid11).birth_place_insee == insee


def test_birth_place_without_bdl_keeps_and_null_clears():
    assert identity(f11="28 Av de Breteuil^^PARIS^^75007^FRA^H").birth_place_insee is KEEP
    assert identity(f11="").birth_place_insee is KEEP
    assert identity(f11='""').birth_place_insee is None
    assert identity(f11='^^^^^^BDL^^""').birth_place_insee is None


@pytest.mark.parametrize("code", ["6322", "632201", "2C004", "ABCDE", "2A0X4", "A2004"])
def test_bad_insee_code_is_ae_102_at_pid11(code):
    assert rejected(pid(f11=f"^^^^^^BDL^^{code}")) == ("AE", 102, "PID^1^11")


# -- ZFD --------------------------------------------------------------------------------------


def test_zfd_5_6_7():
    got = identity("ZFD|||Y|N|INSI|20211201|CN|20300101", f3=f"{IPP}~{INS_REP}")
    assert (got.identity_mode, got.insi_query_date, got.identity_document) == (
        "INSI",
        "20211201",
        "CN",
    )


def test_zfd_empty_field_keeps_and_null_clears():
    got = identity('ZFD|||Y|N||""|PA')
    assert got.identity_mode is KEEP
    assert got.insi_query_date is None
    assert got.identity_document == "PA"
    no_zfd = identity()
    assert (no_zfd.identity_mode, no_zfd.insi_query_date, no_zfd.identity_document) == (KEEP,) * 3


# -- status through the whole PID -------------------------------------------------------------

P, R, V, Q = Status.PROVISOIRE, Status.RECUPEREE, Status.VALIDEE, Status.QUALIFIEE


@pytest.mark.parametrize(
    ("pid32", "with_ins", "zfd5", "status"),
    [
        ("QUAL", True, None, Q),
        ("VALI", True, "INSI", Q),
        ("VALI", False, None, V),
        ("RECUP", False, None, R),
        ("RECUP", True, None, R),
        ("PROV", False, "INSI", R),
        ("PROV", True, None, R),
        ("PROV", False, "CV", P),
        ("VIDE", False, None, P),
        ('""', False, None, P),
        ("", False, None, P),
    ],
)
def test_status_from_pid32_pid3_and_zfd5(pid32, with_ins, zfd5, status):
    zfd = f"ZFD|||Y|N|{zfd5}|20211201||" if zfd5 else None
    pid3 = f"{IPP}~{INS_REP}" if with_ins else IPP
    got = identity(zfd, f3=pid3, f32=pid32)
    assert got.status.status is status
    assert (got.ins.value == INS) if with_ins else got.ins is KEEP


def test_status_with_repeated_pid32_and_attributes():
    got = identity(f3=f"{IPP}~{INS_REP}", f32="VALI~FICT~DOUB~HOMA")
    assert got.status.status is P  # fictive forces provisoire; the INS is still read
    assert got.status.attributes == (Attribute.FICTIVE, Attribute.HOMONYME)
    assert got.status.other_codes == ("DOUB",)
    assert got.ins.value == INS


def test_nh_does_not_make_the_status_qualifiee():
    nh = f"{INS}^^^ASIP-SANTE-NIR&1.2.250.1.213.1.4.8&ISO^NH"
    assert identity(f3=f"{IPP}~{nh}", f32="VALI").status.status is V


def test_zfd_of_an_a01_is_read():
    segments = [pid(f3=f"{IPP}~{INS_REP}", f32="PROV"), "PV1|1|I", "ZBE|1|20240306||INSERT|N"]
    message = parse(*segments, "ZFD|||Y|N|INSI|20211201||", event="A01")
    assert message.operation is Operation.UPDATE
    assert message.patients[0].identity_mode == "INSI"
    assert message.patients[0].status.status is R


# -- AE rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ins_rep",
    [
        f"{INS[:13]}00^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS",
        f"{INS[:14]}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS",
        f"{INS}^^^ASIP-SANTE-INS-C&1.2.250.1.213.1.4.2&ISO^INS",
    ],
    ids=["key", "length", "oid"],
)
def test_ae_102_bad_ins(ins_rep):
    assert rejected(pid(f3=f"{IPP}~{ins_rep}")) == ("AE", 102, "PID^1^3")


def test_ae_101_qual_without_ins():
    assert rejected(pid(f32="QUAL")) == ("AE", 101, "PID^1^3")


def test_ae_205_two_ins_of_one_kind_that_disagree():
    other = nir_with_key("1850775123456")
    second = f"{other}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    assert rejected(pid(f3=f"{IPP}~{INS_REP}~{second}")) == ("AE", 205, "PID^1^3")


def test_the_same_ins_twice_is_fine():
    assert identity(f3=f"{IPP}~{INS_REP}~{INS_REP}").ins.value == INS


@pytest.mark.parametrize(
    "pid3",
    [
        f"24000006^^^CHU-X&000897406&M^AN~{INS_REP}",
        '""^^^CHU-X&1.2.250.1.999.1.1&ISO^PI',
        "^^^CHU-X&1.2.250.1.999.1.1&ISO^PI",
        "",
    ],
)
def test_ae_101_pid3_without_ipp(pid3):
    assert rejected(pid(f3=pid3)) == ("AE", 101, "PID^1^3")


def test_ae_101_second_pid_of_a24_without_ipp():
    assert rejected(pid(), pid(2, f3="X^^^CHU-X^AN"), event="A24") == ("AE", 101, "PID^2^3")


@pytest.mark.parametrize("event", ["A40", "A47"])
def test_ae_100_merge_or_change_without_mrg(event):
    assert rejected(pid(), event=event) == ("AE", 100, "MRG^1^1")


@pytest.mark.parametrize("event", ["A40", "A47"])
@pytest.mark.parametrize("mrg", ["MRG|", "MRG|^^^CHU-X&1.2.250.1.999.1.1&ISO^PI", 'MRG|""'])
def test_ae_101_mrg1_empty(event, mrg):
    assert rejected(pid(), mrg, event=event) == ("AE", 101, "MRG^1^1")


def test_mrg_prior_identifiers():
    message = parse(pid(), "MRG|OLD7^^^CHU-X&1.2.250.1.999.1.1&ISO^PI", event="A40")
    assert message.operation is Operation.MERGE
    assert message.prior_identifiers == (Identifier("OLD7", "PI", "CHU-X", "1.2.250.1.999.1.1"),)


def test_a24_reads_two_patients():
    message = parse(pid(), pid(2, f3="IPP2^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"), event="A24")
    assert message.operation is Operation.LINK
    assert [p.ipp.value for p in message.patients] == ["IPP1", "IPP2"]


def test_too_many_repetitions_are_refused_before_hl7apy():
    many = "~".join(f"ID{n}^^^CHU-X&1.2.250.1.999.1.1&ISO^PI" for n in range(51))
    with pytest.raises(MessageRejected) as caught:
        parse(pid(f3=many))
    (problem,) = caught.value.problems
    assert (problem.code, problem.location) == (102, "PID^1^3")
    assert "51 repetitions" in problem.text
    fifty = "~".join(f"ID{n}^^^CHU-X&1.2.250.1.999.1.1&ISO^PI" for n in range(50))
    assert len(parse(pid(f3=fifty)).patients[0].identifiers) == 50
