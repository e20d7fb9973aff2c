"""The ACK pamfr builds (hl7/ack.build_ack, encode_ack): MSH echoing the message's
separators, applications, processing id, version and character set; MSA with the code and the
message's control id; one ERR per problem; the ACK MSH-15/16 ask for (HL7 table 0155)."""

from __future__ import annotations

import re

import pytest

from pamfr.hl7.ack import build_ack, encode_ack
from pamfr.hl7.ackmode import AckChoice, EnhancedAck, choose_ack
from pamfr.hl7.er7 import Header, read_header
from pamfr.hl7.errors import Problem

MSH = (
    "MSH{f}{enc}{f}GAM{f}CHU-X{f}PAMFR{f}DPI{f}20240101120000{f}{f}ADT{c}A28{c}ADT_A05{f}C1{f}"
    "{pid}{f}{ver}{f}{f}{f}{acc}{f}{app}{f}FRA{f}{cs}\r"
)


def header(
    f: str = "|",
    enc: str = "^~\\&",
    *,
    pid: str = "P",
    ver: str = "2.5^FRA^2.11",
    acc: str = "",
    app: str = "",
    cs: str = "",
) -> Header:
    text = MSH.format(f=f, enc=enc, c=enc[0], pid=pid, ver=ver, acc=acc, app=app, cs=cs)
    return read_header(text.encode("latin-1"))


def segments(ack: str, f: str = "|") -> list[list[str]]:
    assert ack.endswith("\r")
    return [s.split(f) for s in ack[:-1].split("\r")]


def test_msh_echoes_the_message_and_msa_names_it():
    msh, msa = segments(build_ack(header(), "AA"))
    assert msh[:6] == ["MSH", "^~\\&", "PAMFR", "DPI", "GAM", "CHU-X"]
    assert re.fullmatch(r"\d{14}", msh[6])
    assert msh[8] == "ACK^A28^ACK"
    assert msh[9] and msh[9] != "C1"
    assert msh[10:12] == ["P", "2.5^FRA^2.11"]
    assert len(msh) == 12  # no MSH-18 when the message had none
    assert msa == ["MSA", "AA", "C1"]


def test_every_ack_has_its_own_control_id():
    ids = {segments(build_ack(header(), "AA"))[0][9] for _ in range(50)}
    assert len(ids) == 50


def test_processing_id_and_charset_are_echoed_and_defaults_filled():
    msh = segments(build_ack(header(pid="T", cs="8859/1"), "AA"))[0]
    assert msh[10] == "T" and msh[17] == "8859/1"
    msh = segments(build_ack(header(pid="", ver=""), "AA"))[0]
    assert msh[10:12] == ["P", "2.5"]


def test_one_err_per_problem_with_code_place_severity_and_text():
    problems = [
        Problem(102, "PID^1^7", "PID-7 is not a valid date"),
        Problem(103, "PID^1^32", "status code unknown, kept as sent", severity="W"),
    ]
    _, msa, err1, err2 = segments(build_ack(header(), "AE", problems))
    assert msa == ["MSA", "AE", "C1"]
    assert err1 == ["ERR", "", "PID^1^7", "102^Data type error^HL70357", "E", "", "", ""] + [
        "PID-7 is not a valid date"
    ]
    assert err2[2:5] == ["PID^1^32", "103^Table value not found^HL70357", "W"]
    assert err2[8] == "status code unknown, kept as sent"


def test_a_code_outside_table_0357_is_still_sent():
    err = segments(build_ack(header(), "AE", [Problem(999, "", "odd")]))[2]
    assert err[2:4] == ["", "999^Unknown error^HL70357"]


@pytest.mark.parametrize(("f", "enc"), [("#", "^~\\&"), ("|", "$!/%"), ("!", "@~\\&")])
def test_the_messages_own_separators_are_used_throughout(f, enc):
    comp, rep, esc, sub = enc
    text = f"a{f}b{comp}c{rep}d{sub}e{esc}g\rh\ni"
    ack = build_ack(header(f, enc), "AE", [Problem(102, "PID^1^7", text)])
    msh, _, err = segments(ack, f)
    assert msh[0] == "MSH" and msh[1] == enc
    assert msh[8] == f"ACK{comp}A28{comp}ACK"
    assert err[2] == f"PID{comp}1{comp}7"
    assert err[3] == f"102{comp}Data type error{comp}HL70357"
    # every separator in the text escaped; line ends become spaces (one segment stays one)
    assert err[8] == (f"a{esc}F{esc}b{esc}S{esc}c{esc}R{esc}d{esc}T{esc}e{esc}E{esc}g h i")


# HL7 table 0155 in MSH-15 (accept: commit ACK) and MSH-16 (application ACK): AL always, NE
# never, ER on error or reject only, SU on success only, empty asks nothing of its kind (both
# empty: original mode). One answer a message: when both kinds ask, the application ACK.
CONDITIONS = ["", "AL", "NE", "ER", "SU"]


def _asked(condition: str, success: bool) -> bool:
    return {"": False, "AL": True, "NE": False, "ER": not success, "SU": success}[condition]


def _expected(acc: str, app: str, code: str, mode: EnhancedAck) -> str | None:
    """The table, spelled out independently of hl7/ackmode: MSA-1 sent, None for no answer."""
    commit_code = {"AA": "CA", "AE": "CE", "AR": "CR"}[code]
    if (acc, app) == ("", "") or mode is EnhancedAck.ORIGINAL:
        return code
    application, commit = _asked(app, code == "AA"), _asked(acc, code == "AA")
    if application and commit:
        return commit_code if mode is EnhancedAck.COMMIT else code
    if application:
        return code
    return commit_code if commit else None


@pytest.mark.parametrize("mode", list(EnhancedAck))
@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
@pytest.mark.parametrize("app", CONDITIONS)
@pytest.mark.parametrize("acc", CONDITIONS)
def test_every_msh15_msh16_combination_is_answered_as_table_0155_says(acc, app, code, mode):
    h = header(acc=acc, app=app)
    choice = choose_ack(h, code, mode)
    expected = _expected(acc, app, code, mode)
    assert (choice.msa_code if choice.sent else None) == expected
    msa = segments(build_ack(h, code, (), mode))[1]
    assert msa == ["MSA", choice.msa_code, "C1"]


@pytest.mark.parametrize(
    ("acc", "app", "code", "answered"),
    [
        ("", "AL", "AA", "AA"),  # Softway Hôpital Manager: the application ACK
        ("AL", "", "AE", "CE"),
        ("AL", "NE", "AA", "CA"),
        ("NE", "AL", "AR", "AR"),
        ("AL", "AL", "AA", "AA"),
    ],
)
def test_the_ack_a_gam_asks_for(acc, app, code, answered):
    msa = segments(build_ack(header(acc=acc, app=app), code))[1]
    assert msa == ["MSA", answered, "C1"]


def test_nothing_is_sent_when_no_ack_is_asked_for():
    assert choose_ack(header(acc="NE", app="NE"), "AA").sent is False
    assert choose_ack(header(acc="", app="ER"), "AA").sent is False
    assert choose_ack(header(acc="", app="ER"), "AE") == AckChoice("AE", True)
    assert choose_ack(header(acc="SU", app=""), "AR").sent is False
    assert choose_ack(None, "AR") == AckChoice("AR", True)  # no header read: original mode


def test_without_a_readable_header_the_ack_uses_the_defaults():
    msh, msa, err = segments(build_ack(None, "AR", [Problem(100, "MSH^1", "no MSH")]))
    assert msh[:6] == ["MSH", "^~\\&", "PAMFR", "", "", ""]
    assert msh[8] == "ACK^^ACK"
    assert msh[10:] == ["P", "2.5"]
    assert msa == ["MSA", "AR", ""]
    assert err[2:5] == ["MSH^1", "100^Segment sequence error^HL70357", "E"]


def test_the_ack_is_encoded_in_the_messages_character_set():
    text = "nom MÉNARD refusé"
    latin = header(cs="8859/1")
    ack = encode_ack(build_ack(latin, "AE", [Problem(103, "PID^1^5", text)]), latin)
    assert text.encode("latin-1") in ack
    utf8 = header(cs="UNICODE UTF-8")
    ack = encode_ack(build_ack(utf8, "AE", [Problem(103, "PID^1^5", text)]), utf8)
    assert text.encode("utf-8") in ack


def test_what_the_charset_cannot_encode_falls_back_to_utf8():
    ascii_header = header()  # no MSH-18: ASCII
    ack = encode_ack(build_ack(ascii_header, "AE", [Problem(103, "", "é")]), ascii_header)
    assert "é".encode() in ack
    ack = encode_ack("MSH|^~\\&|é\r", None)
    assert ack == "MSH|^~\\&|é\r".encode()
    assert encode_ack("MSH|^~\\&|A\r", None) == b"MSH|^~\\&|A\r"


def test_an_unknown_charset_falls_back_to_utf8():
    odd = header(cs="ISO IR87")
    assert encode_ack("MSH|^~\\&|é\r", odd) == "MSH|^~\\&|é\r".encode()
