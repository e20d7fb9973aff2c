"""Reading an ACK back (`pamfr send`, the replay report): the ACK's own separators and
character set, since pamfr echoes the sender's."""

from __future__ import annotations

import pytest

from pamfr.hl7.ack import ack_summary, build_ack, encode_ack
from pamfr.hl7.er7 import read_header
from pamfr.hl7.errors import Problem

SENT = (
    "MSH{f}{c}~\\&{f}GAM{f}CHU-X{f}DPI{f}CHU-X{f}2024{f}{f}ADT{c}A28{c}ADT_A05{f}C1{f}P{f}2.5"
    "{f}{f}{f}{f}{f}FRA{f}{cs}\r"
)


@pytest.mark.parametrize(("field", "component"), [("|", "^"), ("#", "^"), ("|", "#"), ("!", "@")])
def test_msa_and_err_read_with_the_acks_separators(field, component):
    header = read_header(SENT.format(f=field, c=component, cs="").encode())
    problem = Problem(102, "PID^1^7", "PID-7 is not a valid date (YYYY[MM[DD]]) | # ^ @")
    ack = encode_ack(build_ack(header, "AE", [problem]), header)
    assert ack_summary(ack) == ("AE", [f"102 PID^1^7 {problem.text}"])


def test_err_text_decoded_in_the_acks_charset():
    header = read_header(SENT.format(f="|", c="^", cs="8859/1").encode())
    ack = encode_ack(
        build_ack(header, "AE", [Problem(103, "PID^1^5", "nom MÉNARD refusé")]), header
    )
    assert ack.count("É".encode("latin-1")) == 1
    assert ack_summary(ack) == ("AE", ["103 PID^1^5 nom MÉNARD refusé"])


@pytest.mark.parametrize("junk", [b"", b"not an ack", b"MSA|AA|1\r"])
def test_what_is_not_an_ack_reads_as_no_answer(junk):
    assert ack_summary(junk) == ("", [])


def test_an_ack_built_elsewhere_read_with_its_separators_and_escapes():
    """Another receiver's ACK: '#' between fields, '$' between components, '/' to escape,
    LF line ends; escape sequences in ERR-8 resolved with those separators."""
    ack = (
        b"MSH#$~/&#RCV#FAC#GAM#CHU-X#20240101##ACK$A28$ACK#A1#P#2.5\n"
        b"MSA#AE#C1\n"
        b"ERR##PID$1$3#101$Required field missing$HL70357#E####a/F/b/S/c/E/d\n"
        b"ERR##PID$1$7$1#102#W\n"
    )
    assert ack_summary(ack) == ("AE", ["101 PID^1^3 a#b$c/d", "102 PID^1^7^1"])


def test_commit_codes_of_enhanced_mode_and_crlf_line_ends_are_read_as_sent():
    ack = b"MSH|^~\\&|RCV|FAC|GAM|CHU-X|20240101||ACK|A1|P|2.5\r\nMSA|CA|C1\r\n"
    assert ack_summary(ack) == ("CA", [])


def test_an_ack_without_msa_has_no_code():
    assert ack_summary(b"MSH|^~\\&|RCV|FAC|GAM|CHU-X|20240101||ACK|A1|P|2.5\r") == ("", [])
