"""The messages of a file's content (ingest/files.split_messages), as the file drop and replay
take them: one message or several, any line end, an HL7 batch opened, MLLP frames; and the
segments of one message (hl7/er7.split_segments)."""

from __future__ import annotations

import pytest

from pamfr.hl7.er7 import split_segments
from pamfr.ingest import files
from pamfr.ingest.files import UnreadableFile, split_messages
from pamfr.transport.codec import encode_frame

A = b"MSH|^~\\&|GAM|CHU-X|PAMFR|DPI|20240101||ADT^A28^ADT_A05|C1|P|2.5\rPID|||1^^^H^PI"
B = b"MSH|^~\\&|GAM|CHU-X|PAMFR|DPI|20240101||ADT^A31^ADT_A05|C2|P|2.5\rPID|||2^^^H^PI"


def test_one_message_comes_back_without_its_trailing_line_end_and_padding():
    assert split_messages(A + b"\r\n\x00\x1a \t") == [A]


@pytest.mark.parametrize("eol", [b"\r", b"\n", b"\r\n"])
def test_messages_in_a_row_split_at_each_msh_starting_a_line(eol):
    a, b = A.replace(b"\r", eol), B.replace(b"\r", eol)
    assert split_messages(a + eol + b + eol) == [a, b]


def test_msh_inside_a_line_starts_no_message():
    data = A + b"|NOTE MSH|x\r" + B + b"\r"
    assert split_messages(data) == [A + b"|NOTE MSH|x", B]


def test_an_hl7_batch_gives_its_messages_without_the_batch_segments():
    data = b"FHS|^~\\&|GAM\rBHS|^~\\&|GAM\r" + A + b"\r" + B + b"\rBTS|2\rFTS|1\r"
    assert split_messages(data) == [A, B]


def test_mllp_frames_give_one_message_each_and_a_framed_batch_is_opened():
    batch = b"BHS|^~\\&|GAM\r" + A + b"\r" + B + b"\rBTS|2\r"
    data = encode_frame(A) + b"\n" + encode_frame(batch) + encode_frame(B)
    assert split_messages(data) == [A, A, B, B]


def test_a_frame_that_is_not_hl7_is_kept_whole():
    """The receiver then refuses it and logs its bytes: nothing silently dropped."""
    assert split_messages(encode_frame(b"not hl7") + encode_frame(A)) == [b"not hl7", A]


def test_a_frame_over_the_size_limit_makes_the_file_unreadable(monkeypatch):
    monkeypatch.setattr(files, "MAX_MESSAGE_SIZE", 100)  # instead of writing 64 MiB
    with pytest.raises(UnreadableFile, match="larger than 64 MiB"):
        split_messages(encode_frame(A + b"x" * 100))


def test_content_without_msh_is_unreadable():
    for data in (b"", b"PID|||1\r", b"hello\nworld\n", b"x MSH|not at a line start\r"):
        with pytest.raises(UnreadableFile, match="no MSH segment found"):
            split_messages(data)


def test_segments_of_a_message_split_at_any_line_end_blank_lines_dropped():
    assert split_segments("MSH|a\rEVN|b\nPID|c\r\n\r\n  \rPV1|d\r") == [
        "MSH|a",
        "EVN|b",
        "PID|c",
        "PV1|d",
    ]


def test_a_file_that_begins_with_a_utf8_byte_order_mark_is_read_from_its_msh():
    first = b"MSH|^~\\&|GAM|CHU|||20240101||ADT^A28|1|T|2.5|||||FRA|UNICODE UTF-8\rPID|1\r"
    second = first.replace(b"|1|T|", b"|2|T|")
    assert split_messages(b"\xef\xbb\xbf" + first + second) == [first.rstrip(), second.rstrip()]
