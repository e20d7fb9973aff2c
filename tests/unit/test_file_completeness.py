"""When a dropped file's content is complete enough to be taken, and when it can never become
HL7: binary content (pure)."""

from __future__ import annotations

import pytest

from pamfr.ingest.files import incomplete_reason, not_hl7_reason

MSG = b"MSH|^~\\&|GAM|CHU-X|DPI|CHU-X|2024||ADT^A28^ADT_A05|1|T|2.5\rPID|1||1^^^H&1.2&ISO^PI\r"


@pytest.mark.parametrize(
    "data",
    [
        MSG,
        MSG.replace(b"\r", b"\n"),
        MSG.replace(b"\r", b"\r\n") + b"\r\n\r\n",
        MSG + MSG,
        b"\x0b" + MSG + b"\x1c\r",
        b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + MSG + b"BTS|2\rFTS|1\r",
        b"BHS|^~\\&\r" + MSG + b"BTS|1\r",
        b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + b"BTS|\rFTS|\r",  # counts are optional
        b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r",  # a batch of nothing: nothing will come
    ],
)
def test_complete(data):
    assert incomplete_reason(data) is None


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "the file is empty (0 bytes)"),
        (b"\r\n", "the file is empty (blanks only)"),
        (b"MS", "no MSH segment"),
        (b"\xef\xbb\xbfMSH", "no terminator"),
        (b"FHS|^~\\&\rBHS|^~\\&\r", "no BTS"),
        (b"FHS|^~\\&\rBH", "no MSH segment"),
        (MSG[:-1], "no terminator"),
        (MSG + MSG[:40], "no terminator"),
        (b"\x0b" + MSG, "end marker"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSG, "no BTS"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + b"BTS|1\r", "no FTS"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + b"BTS|2\rFTS|1\r", "BTS-1 says 2"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSG + b"BTS|1\rFTS|3\r", "FTS-1 says 3"),
    ],
)
def test_incomplete(data, why):
    assert why in incomplete_reason(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"M",
        b"MS",
        b"F",
        b"BH",
        b"\x0b",
        b"\xef\xbb\xbf \r\nMSH|",
        b"\n\nFHS",
        MSG,
        b"\x0b" + MSG,
        # text without an MSH so far: a header line, or an upload paused in its first bytes
        b"# export\r",
        b"# export\r" + MSG,
        b"MSX|",
        b"Hello",
        b"# export\r\x00\x00",
        # an MSH segment with an odd byte is for the parser to judge, not binary
        b"MSH|^~\\&|GAM\x01|",
        b"\x0bMSH|\x00",
    ],
)
def test_may_become_hl7(data):
    assert not_hl7_reason(data) is None


@pytest.mark.parametrize(
    ("data", "begins", "control"),
    [
        (b"PK\x03\x04zip", "b'PK\\x03'", "03"),
        (b"\x00\x00\x00", "b'\\x00\\x00\\x00'", "00"),
        (b"\xef\xbb\xbf\x1f\x8b\x08 gzip\r", "b'\\x1f\\x8b\\x08'", "1F"),
        (b"M\x00S\x00H\x00", "b'M\\x00S'", "00"),  # UTF-16
        (b"# export\x7f\r" + MSG, "b'# e'", "7F"),
        (b"\x0b\x00\x01" + MSG + b"\x1c\r", "b'\\x0b\\x00\\x01'", "00"),
    ],
)
def test_never_hl7(data, begins, control):
    assert not_hl7_reason(data) == (
        f"not an HL7 v2 file: it begins with {begins}, binary content "
        f"(control byte 0x{control} in its first line)"
    )
