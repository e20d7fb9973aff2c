from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pamfr.transport.codec import (
    HEAD_KEPT,
    DiscardedBytes,
    Event,
    Frame,
    MLLPDecoder,
    OversizedFrame,
    encode_frame,
)

BEFORE_START = "before start block"
ABANDONED = "frame abandoned: new start block before end block"

MSG = b"MSH|^~\\&|SENDER|FAC|PAMFR|FAC|20240101120000||ADT^A28^ADT_A05|MSG0001|P|2.5\rPID|1\r"


def feed_all(decoder: MLLPDecoder, chunks: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def test_encode_frame_adds_start_end_and_cr() -> None:
    assert encode_frame(b"abc") == b"\x0babc\x1c\r"


def test_single_frame_in_one_feed() -> None:
    decoder = MLLPDecoder()
    assert decoder.feed(encode_frame(MSG)) == [Frame(MSG)]
    assert not decoder.in_frame
    assert decoder.buffered == 0


def test_frame_fed_byte_by_byte() -> None:
    decoder = MLLPDecoder()
    wire = encode_frame(MSG)
    events = feed_all(decoder, [wire[i : i + 1] for i in range(len(wire))])
    assert events == [Frame(MSG)]


@pytest.mark.parametrize("cut", range(1, len(encode_frame(b"MSH|abc\rPID|1"))))
def test_frame_split_at_every_point(cut: int) -> None:
    wire = encode_frame(b"MSH|abc\rPID|1") + encode_frame(b"second")
    decoder = MLLPDecoder()
    assert feed_all(decoder, [wire[:cut], wire[cut:]]) == [
        Frame(b"MSH|abc\rPID|1"),
        Frame(b"second"),
    ]


def test_split_between_end_block_and_cr_emits_frame_then_swallows_cr() -> None:
    decoder = MLLPDecoder()
    assert decoder.feed(b"\x0b" + MSG + b"\x1c") == [Frame(MSG)]
    assert not decoder.in_frame
    assert decoder.feed(b"\r") == []
    assert decoder.feed(encode_frame(b"next")) == [Frame(b"next")]


def test_several_frames_in_one_feed() -> None:
    payloads = [b"one", b"two", MSG, b"four"]
    decoder = MLLPDecoder()
    assert decoder.feed(b"".join(encode_frame(p) for p in payloads)) == [Frame(p) for p in payloads]


def test_bytes_before_start_block_are_discarded_and_reported() -> None:
    decoder = MLLPDecoder()
    events = decoder.feed(b"garbage" + encode_frame(MSG))
    assert events == [DiscardedBytes(7, BEFORE_START), Frame(MSG)]


def test_junk_without_any_start_block_is_reported_per_feed() -> None:
    decoder = MLLPDecoder()
    assert decoder.feed(b"abc") == [DiscardedBytes(3, BEFORE_START)]
    assert decoder.feed(b"de\x0bMSH") == [DiscardedBytes(2, BEFORE_START)]
    assert decoder.in_frame
    assert decoder.feed(b"|x\x1c\r") == [Frame(b"MSH|x")]


def test_lone_crlf_between_frames_is_reported_and_harmless() -> None:
    decoder = MLLPDecoder()
    events = decoder.feed(encode_frame(b"a") + b"\r\n" + encode_frame(b"b"))
    assert events == [Frame(b"a"), DiscardedBytes(2, BEFORE_START), Frame(b"b")]


def test_end_block_outside_a_frame_is_junk() -> None:
    decoder = MLLPDecoder()
    assert decoder.feed(b"\x1c\r" + encode_frame(b"a")) == [
        DiscardedBytes(2, BEFORE_START),
        Frame(b"a"),
    ]


def test_missing_cr_after_end_block() -> None:
    decoder = MLLPDecoder()
    assert decoder.feed(b"\x0ba\x1c\x0bb\x1c") == [Frame(b"a"), Frame(b"b")]
    assert decoder.feed(b"\x0bc\x1c\r") == [Frame(b"c")]


@pytest.mark.parametrize("line_end", [b"\r", b"\r\n", b"\n"])
def test_line_end_after_end_block_is_swallowed(line_end: bytes) -> None:
    decoder = MLLPDecoder()
    wire = b"\x0ba\x1c" + line_end + b"\x0bb\x1c" + line_end
    assert decoder.feed(wire) == [Frame(b"a"), Frame(b"b")]


@pytest.mark.parametrize("line_end", [b"\r", b"\r\n", b"\n"])
def test_line_end_after_end_block_is_swallowed_across_feeds(line_end: bytes) -> None:
    decoder = MLLPDecoder()
    chunks = [b"\x0ba\x1c", *(line_end[i : i + 1] for i in range(len(line_end))), b"\x0bb\x1c"]
    assert feed_all(decoder, chunks) == [Frame(b"a"), Frame(b"b")]


def test_only_one_line_end_is_swallowed() -> None:
    decoder = MLLPDecoder()
    assert decoder.feed(b"\x0ba\x1c\r\r") == [Frame(b"a"), DiscardedBytes(1, BEFORE_START)]
    decoder = MLLPDecoder()
    assert decoder.feed(b"\x0ba\x1c\n\n") == [Frame(b"a"), DiscardedBytes(1, BEFORE_START)]


def test_empty_frame() -> None:
    decoder = MLLPDecoder()
    assert decoder.feed(b"\x0b\x1c\r") == [Frame(b"")]


def test_frame_of_exactly_max_size_is_accepted() -> None:
    decoder = MLLPDecoder(max_frame_size=10)
    assert decoder.feed(encode_frame(b"x" * 10)) == [Frame(b"x" * 10)]


def test_frame_one_byte_over_max_size_is_oversized() -> None:
    decoder = MLLPDecoder(max_frame_size=10)
    assert decoder.feed(encode_frame(b"x" * 11)) == [OversizedFrame(head=b"x" * 11, size=11)]


def test_oversized_frame_in_chunks_keeps_memory_bounded_and_resyncs() -> None:
    max_size = 100_000
    payload = bytes(b for b in range(256) if b not in (0x0B, 0x1C)) * 4000
    decoder = MLLPDecoder(max_frame_size=max_size)
    wire = encode_frame(payload) + encode_frame(MSG)
    events: list[Event] = []
    for i in range(0, len(wire), 7_919):
        events.extend(decoder.feed(wire[i : i + 7_919]))
        assert decoder.buffered <= max_size
    assert events == [OversizedFrame(head=payload[:HEAD_KEPT], size=len(payload)), Frame(MSG)]
    assert decoder.buffered == 0


def test_oversized_frame_in_one_feed() -> None:
    payload = b"MSH|" + b"y" * 200_000
    decoder = MLLPDecoder(max_frame_size=1000)
    events = decoder.feed(encode_frame(payload) + encode_frame(b"ok"))
    assert events == [OversizedFrame(head=payload[:HEAD_KEPT], size=len(payload)), Frame(b"ok")]


def test_oversized_state_does_not_leak_into_next_frame() -> None:
    decoder = MLLPDecoder(max_frame_size=5)
    assert decoder.feed(b"\x0b123") == []
    assert decoder.feed(b"456\x1c") == [OversizedFrame(head=b"123456", size=6)]
    assert decoder.feed(b"\x0b12345\x1c") == [Frame(b"12345")]


def test_new_start_block_inside_frame_abandons_it() -> None:
    decoder = MLLPDecoder()
    events = decoder.feed(b"\x0bpartial\x0b" + MSG + b"\x1c\r")
    assert events == [DiscardedBytes(1 + len(b"partial"), ABANDONED), Frame(MSG)]


def test_new_start_block_in_a_later_feed_abandons_buffered_frame() -> None:
    decoder = MLLPDecoder()
    assert decoder.feed(b"\x0bpart") == []
    assert decoder.feed(b"ial") == []
    assert decoder.feed(b"\x0bnew\x1c") == [DiscardedBytes(8, ABANDONED), Frame(b"new")]


def test_in_frame_and_buffered_follow_the_stream() -> None:
    decoder = MLLPDecoder()
    assert not decoder.in_frame
    decoder.feed(b"\x0b")
    assert decoder.in_frame
    assert decoder.buffered == 0
    decoder.feed(b"MSH")
    assert decoder.in_frame
    assert decoder.buffered == 3
    decoder.feed(b"\x1c")
    assert not decoder.in_frame
    assert decoder.buffered == 0


def test_accepts_bytearray_and_memoryview() -> None:
    decoder = MLLPDecoder()
    events = decoder.feed(bytearray(b"\x0bab")) + decoder.feed(memoryview(b"c\x1c\r"))
    assert events == [Frame(b"abc")]
    assert type(events[0].payload) is bytes  # type: ignore[union-attr]


payload_strategy = st.binary(max_size=300).filter(lambda b: b"\x0b" not in b and b"\x1c" not in b)


@given(
    payloads=st.lists(payload_strategy, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=20),
)
def test_any_cutting_of_encoded_payloads_yields_them_in_order(
    payloads: list[bytes], cuts: list[int]
) -> None:
    wire = b"".join(encode_frame(p) for p in payloads)
    bounds = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    decoder = MLLPDecoder()
    events = feed_all(decoder, [wire[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
    assert events == [Frame(p) for p in payloads]
    assert not decoder.in_frame


def test_run_of_start_blocks_is_one_event_and_linear() -> None:
    decoder = MLLPDecoder()
    events = decoder.feed(b"\x0bpartial" + b"\x0b" * 100_000 + MSG + b"\x1c\r")
    assert events == [DiscardedBytes(len(b"\x0bpartial") + 100_000 - 1, ABANDONED), Frame(MSG)]
    events = decoder.feed(b"\x0bx" * 50_000)
    assert events == [DiscardedBytes(100_000 - 2, ABANDONED)]
    assert decoder.in_frame and decoder.buffered == 1
