"""PID / ZFD / MRG -> what the message states: each INS trait, the INS and PID-32 as sent,
explicit null against empty at the field and component level, and every refusal the message
alone earns, with its ERR code and place. What the identity becomes is tests/unit/test_rules.py."""

from __future__ import annotations

import pytest

from pamfr.hl7.er7 import read_header
from pamfr.hl7.errors import MessageRejected
from pamfr.hl7.events import Operation
from pamfr.hl7.parse import AdtMessage, decode, parse_adt
from pamfr.hl7.problems import warning_problems
from pamfr.hl7.samples import STRUCTURES, msh, nir_with_key
from pamfr.identity.model import KEEP, BirthDate, Identifier, StatedIns
from pamfr.identity.rules import Policy, choose_ins, decide_identity
from pamfr.identity.status import read_status

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


def identity(zfd: str | None = None, event: str = "A01", **fields: str):
    """The PID as an encounter event states it (A28/A31 also require the birth name)."""
    segments = [pid(**fields), "PV1||N"] + ([zfd] if zfd else [])
    return parse(*segments, event=event).patients[0]


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
    )
    assert got.ipp == Identifier("IPP1", "PI", "CHU-X", "1.2.250.1.999.1.1")
    assert got.ins == (StatedIns(INS, "1.2.250.1.213.1.4.10", "ASIP-SANTE-INS-NIR"),)
    assert got.ins_cleared is False


def test_authority_key_is_the_oid_else_the_namespace():
    got = identity(f3="A^^^CHU-X&1.2.3&ISO^PI~B^^^CHU-Y^PI")
    assert [i.authority_key for i in got.ipps] == ["1.2.3", "CHU-Y"]


def test_ins_explicit_null_clears_and_absent_keeps():
    cleared = identity(f3=f'{IPP}~""^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS', f32="PROV")
    assert cleared.ins == () and cleared.ins_cleared is True
    assert [i.type for i in cleared.identifiers] == ["PI"]
    absent = identity(f32="PROV")
    assert absent.ins == () and absent.ins_cleared is False


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


def test_used_name_only_keeps_the_birth_name():  # an encounter event: no birth name needed
    got = identity(f5="MARTIN^Julie^^^^^D")
    assert (got.used_name, got.used_given_name) == ("MARTIN", "Julie")
    assert got.birth_name is KEEP and got.birth_given_names is KEEP


def test_empty_components_keep_and_null_components_clear():
    """An A40 or A44 whose PID leaves XPN-3 or the birth place empty erased two INS traits."""
    got = identity(f5="DUPONT^MARIE^^^^^L", f11="^^^^^^BDL^^")
    assert (got.birth_name, got.first_given_name) == ("DUPONT", "MARIE")
    assert got.birth_given_names is KEEP and got.birth_place_insee is KEEP
    cleared = identity(f5='DUPONT^""^""^^^^L')
    assert cleared.first_given_name is None and cleared.birth_given_names is None


def test_used_name_is_cleared_only_by_a_d_repetition_holding_null():
    got = identity(f5='""^Orianne^^^^^D~DES LAUMES^Orianne^^^^^L')
    assert (got.used_name, got.used_given_name) == (None, "Orianne")
    assert got.birth_name == "DES LAUMES"
    assert identity(f5="DES LAUMES^Orianne^^^^^L").used_name is KEEP


@pytest.mark.parametrize(
    ("charset", "raw_name", "name"),
    [
        ("8859/15", "L\\XC9\\ON", "LÉON"),
        ("8859/1", "L\\XC9\\ON", "LÉON"),
        ("UNICODE UTF-8", "L\\XC389\\ON", "LÉON"),
        ("UNICODE UTF-8", "A\\H\\B\\N\\C", "ABC"),
    ],
)
def test_hex_escapes_decode_in_the_message_charset(charset, raw_name, name):
    text = "\r".join(
        [
            msh("A01", "ADT_A01", "C1").replace("UNICODE UTF-8", charset),
            pid(f5=f"{raw_name}^JEAN^JEAN^^^^L"),
        ]
    )
    header = read_header(text.encode("latin-1"))
    got = parse_adt(decode(text.encode("latin-1"), header), header).patients[0]
    assert got.birth_name == name


@pytest.mark.parametrize("charset", ["8859/15", "8859/1"])
def test_every_name_component_is_unescaped_the_same_way(charset):
    names = "L\\XC9\\ON^ZO\\XCB\\^ZO\\XCB\\ ANA\\XCF\\S^^^^L~MART\\XC9\\^ZO\\XCB\\^^^^^D"
    text = "\r".join(
        [
            msh("A01", "ADT_A01", "C1").replace("UNICODE UTF-8", charset),
            pid(f3="IPP\\T\\1^^^CHU-X&1.2.250.1.999.1.1&ISO^PI", f5=names),
        ]
    )
    header = read_header(text.encode("latin-1"))
    got = parse_adt(decode(text.encode("latin-1"), header), header).patients[0]
    assert (got.birth_name, got.first_given_name) == ("LÉON", "ZOË")
    assert got.birth_given_names == ("ZOË", "ANAÏS")
    assert (got.used_name, got.used_given_name) == ("MARTÉ", "ZOË")
    assert got.ipp is not None and got.ipp.value == "IPP&1"


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


# -- PID-32 as sent ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pid32", "codes"),
    [
        ("VALI", ("VALI",)),
        ("PROV~FICT", ("PROV", "FICT")),
        ("VALI~FICT~DOUB~HOMA", ("VALI", "FICT", "DOUB", "HOMA")),
        ("", None),
        ('""', ()),  # cleared by the sender: no status code (G2), not an empty field (G3)
    ],
)
def test_pid32_codes_as_sent_none_when_empty(pid32, codes):
    assert identity(f32=pid32).status_codes == codes


def test_status_codes_read_as_the_rnivs_say():
    reading = read_status(identity(f32="VALI~FICT~DOUB~HOMA").status_codes)
    assert reading.status.value == "provisoire" and reading.barring == ("FICT",)
    assert [a.value for a in reading.attributes] == ["fictive", "homonyme"]
    assert reading.other_codes == ("DOUB",)


def test_nh_is_not_an_ins():
    nh = f"{INS}^^^ASIP-SANTE-NIR&1.2.250.1.213.1.4.8&ISO^NH"
    got = identity(f3=f"{IPP}~{nh}", f32="VALI")
    assert got.ins == () and [i.type for i in got.identifiers] == ["PI", "NH"]


def test_zfd_of_an_a01_is_read():
    segments = [pid(f3=f"{IPP}~{INS_REP}", f32="PROV"), "PV1|1|I", "ZBE|1|20240306||INSERT|N"]
    message = parse(*segments, "ZFD|||Y|N|INSI|20211201||", event="A01")
    assert message.operation is Operation.UPDATE
    assert message.patients[0].identity_mode == "INSI"
    assert message.patients[0].status_codes == ("PROV",)


# -- refusals on the message alone ----------------------------------------------------------------


@pytest.mark.parametrize(
    "ins_rep",
    [
        f"{INS[:13]}00^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS",
        f"{INS[:14]}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS",
        f"{INS}^^^ASIP-SANTE-INS-C&1.2.250.1.213.1.4.2&ISO^INS",
    ],
    ids=["key", "length", "oid"],
)
def test_ae_102_bad_ins_on_a_vali_message(ins_rep):
    assert rejected(pid(f3=f"{IPP}~{ins_rep}")) == ("AE", 102, "PID^1^3")


def test_a_bad_ins_on_a_prov_message_is_accepted():
    bad = f"{INS[:13]}00^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    got = identity(f3=f"{IPP}~{bad}", f32="PROV")
    assert got.ins == (StatedIns(f"{INS[:13]}00", "1.2.250.1.213.1.4.10", "ASIP-SANTE-INS-NIR"),)


def test_qual_without_ins_is_read_as_vali():
    assert read_status(identity(f32="QUAL").status_codes).validated


def test_ae_205_two_ins_of_one_kind_that_disagree():
    other = nir_with_key("1850775123456")
    second = f"{other}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS"
    assert rejected(pid(f3=f"{IPP}~{INS_REP}~{second}")) == ("AE", 205, "PID^1^3")


def test_the_same_ins_twice_is_fine():
    got = identity(f3=f"{IPP}~{INS_REP}~{INS_REP}")
    chosen, _ = choose_ins(got.ins, read_status(got.status_codes))
    assert chosen is not None and chosen.value == INS


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


def test_ae_101_ipp_without_assigning_authority():
    assert rejected(pid(f3="IPP1^^^^PI")) == ("AE", 101, "PID^1^3")


def test_ae_205_two_ipps_of_one_authority():
    assert rejected(pid(f3=f"{IPP}~IPP2^^^CHU-X&1.2.250.1.999.1.1&ISO^PI")) == (
        "AE",
        205,
        "PID^1^3",
    )


@pytest.mark.parametrize("event", ["A28", "A31"])
@pytest.mark.parametrize("pid5", ["MARTIN^Julie^^^^^D", '""', '""^MARIE^MARIE^^^^L'])
def test_ae_101_a28_a31_without_birth_name(event, pid5):
    assert rejected(pid(f5=pid5), event=event) == ("AE", 101, "PID^1^5")


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


def test_a47_mrg1_may_be_an_ins():
    mrg = f"MRG|{INS}^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS"
    message = parse(pid(), mrg, event="A47")
    assert message.prior_identifiers == ()
    assert message.prior_ins == (StatedIns(INS, "1.2.250.1.213.1.4.8", "ASIP-SANTE-INS-NIR"),)


def test_a24_reads_two_patients():
    message = parse(pid(), pid(2, f3="IPP2^^^CHU-X&1.2.250.1.999.1.1&ISO^PI"), event="A24")
    assert message.operation is Operation.LINK
    assert [p.ipp.value for p in message.patients] == ["IPP1", "IPP2"]


def test_too_many_repetitions_are_refused_before_hl7apy():
    many = "~".join(f"ID{n}^^^CHU-X&1.2.250.1.999.1.1&ISO^AN" for n in range(51))
    with pytest.raises(MessageRejected) as caught:
        parse(pid(f3=f"{IPP}~{many}"))
    (problem,) = caught.value.problems
    assert (problem.code, problem.location) == (102, "PID^1^3")
    assert "52 repetitions" in problem.text
    fifty = "~".join(f"ID{n}^^^CHU-X&1.2.250.1.999.1.1&ISO^AN" for n in range(49))
    assert len(parse(pid(f3=f"{IPP}~{fifty}")).patients[0].identifiers) == 50


def test_empty_msh18_with_8bit_bytes_is_decoded_in_the_default_charset():
    text = "\r".join(
        [msh("A01", "ADT_A01", "C1").replace("UNICODE UTF-8", ""), pid(f5="MÉNARD^JEAN^^^^^L")]
    )
    raw = text.encode("iso-8859-15")
    header = read_header(raw)
    decoded = decode(raw, header, "8859/15")
    assert (decoded.warning.code, decoded.warning.location, decoded.warning.severity) == (
        103,
        "MSH^1^18",
        "W",
    )
    message = parse_adt(decoded, header)
    assert message.patients[0].birth_name == "MÉNARD"
    assert message.warnings == (decoded.warning,)
    assert decode(raw.replace("É".encode("iso-8859-15"), b"E"), header).warning is None


def test_the_parse_workers_warm_up_message_reads_every_field_the_rules_read():
    from pamfr.hl7.frame import Inbound
    from pamfr.hl7.prepare import prepare
    from pamfr.hl7.warmup import WARM_UP_MESSAGE

    prepared = prepare(Inbound(WARM_UP_MESSAGE))
    assert (prepared.code, prepared.problems) == ("AA", ())
    got = prepared.message.patients[0]
    assert got.status_codes == ("VALI",) and got.birth_place_insee == "63220"
    assert got.ins and got.used_name == "USED" and got.identity_mode == "INSI"


@pytest.mark.parametrize(
    ("zfd1", "iso", "warned"),
    [
        ("00^00^1960", "1960", False),
        ("00^03^1960", "1960-03", False),
        ("14^03^1960", "1960-03-14", False),
        ("30^02^1960", "1960-02", True),
        ("15^00^1960", "1960", True),
        ("00^13^1960", "1960", True),
    ],
)
def test_a_date_lunaire_in_zfd1_is_the_birth_date_with_its_precision(zfd1, iso, warned):
    message = parse(pid(f7=""), "PV1||N", f"ZFD|{zfd1}|||N|INSI|20211201||", event="A28")
    patient = message.patients[0]
    assert patient.birth_date.iso() == iso
    assert [n.finding for n in patient.notes] == (["birth-date-truncated"] if warned else [])
    # the note reaches the ACK (102 W at ZFD-1) and the history through the identity's decision
    notes = decide_identity(patient, None, Policy()).notes
    problems = [(p.code, p.location, p.severity) for p in warning_problems(notes)]
    assert ((102, "ZFD^1^1", "W") in problems) is warned


def test_pid7_wins_over_zfd1_and_a_bad_zfd1_is_refused():
    message = parse(pid(f7="19790328"), "PV1||N", "ZFD|00^00^1960", event="A28")
    assert message.patients[0].birth_date.iso() == "1979-03-28"
    assert rejected(pid(f7=""), "PV1||N", "ZFD|00^00^19X0") == ("AE", 102, "ZFD^1^1")
    assert rejected(pid(f7=""), "PV1||N", "ZFD|1960") == ("AE", 102, "ZFD^1^1")
    # digits outside ASCII ("²" is a digit to str.isdigit, not to int)
    assert rejected(pid(f7=""), "PV1||N", "ZFD|00^00^19²0") == ("AE", 102, "ZFD^1^1")
