"""What replay reads of each message: the patients it is about (the order kept per patient
across connections), its control id and event, and MSH-10 rewritten in place."""

from __future__ import annotations

from pamfr.ingest.messagesets import header_facts, patient_keys, rewrite_control_id

A40 = (
    b"MSH|^~\\&|SRC|FAC|PAMFR|HOP|20240101120000||ADT^A40^ADT_A39|C1|P|2.5\r"
    b"EVN||20240101120000\r"
    b"PID|||KEEP^^^HOP&1.2.3&ISO^PI~INS1^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO^INS\r"
    b"MRG|GONE^^^HOP&1.2.3&ISO^PI\r"
)


def test_patient_keys_are_every_pid3_and_mrg1_repetition_with_its_authority():
    assert patient_keys(A40) == {
        b"KEEP^HOP&1.2.3&ISO",
        b"INS1^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO",
        b"GONE^HOP&1.2.3&ISO",
    }


def test_patient_keys_read_the_message_own_separators_and_line_ends():
    other = A40.replace(b"|", b"#").replace(b"^", b"$").replace(b"~", b"!")
    other = other.replace(b"\r", b"\n")
    assert patient_keys(other) == {
        b"KEEP^HOP&1.2.3&ISO",
        b"INS1^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.8&ISO",
        b"GONE^HOP&1.2.3&ISO",
    }


def test_patient_keys_are_empty_without_identifiers_or_without_msh():
    assert patient_keys(b"MSH|^~\\&|A|B|C|D|||ADT^A28|1|P|2.5\rPID|1||\r") == frozenset()
    assert patient_keys(b"PID|||X^^^A^PI\r") == frozenset()


def test_header_facts_reads_control_id_and_event_or_nothing():
    assert header_facts(A40) == ("C1", "A40")
    assert header_facts(b"not a message") == ("", "")


def test_rewrite_control_id_with_another_field_separator_keeps_every_other_byte():
    other = A40.replace(b"|", b"#")
    assert rewrite_control_id(other, "NEW") == other.replace(b"#C1#", b"#NEW#")
