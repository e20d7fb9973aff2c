"""Coverage-guided fuzzing (atheris / libFuzzer) of the MLLP codec and of the parser and ACK
builder behind it. Run by tests/fuzz/test_hostile_streams.py for ~20 s, or by hand:

    .venv/bin/python tests/fuzz/atheris_fuzz.py CORPUS_DIR -max_total_time=600

Input layout: byte 0 selects the target (even: one message straight to the parser; odd: an
MLLP stream), byte 1 the read size the stream is cut in and the frame size limit.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["pamfr"]):
    from pamfr.hl7.ack import build_ack, encode_ack
    from pamfr.hl7.frame import Inbound
    from pamfr.hl7.prepare import prepare
    from pamfr.transport.codec import HEAD_KEPT, DiscardedBytes, Frame, MLLPDecoder

from tests.fuzz.mllp_reference import read_stream

LIMITS = (16, 1000, 1024 * 1024)


def check_message(raw: bytes) -> None:
    prepared = prepare(Inbound(raw))
    assert prepared.code in ("AA", "AE", "AR"), prepared.code
    if prepared.code != "AA":
        assert prepared.problems, "a refusal always says why"
    ack = encode_ack(build_ack(prepared.header, prepared.code, prepared.problems), prepared.header)
    assert ack.startswith(b"MSH") and b"\rMSA" in ack, ack  # with the message's separators


def check_stream(stream: bytes, read_size: int, limit: int) -> None:
    decoder = MLLPDecoder(limit)
    frames, discarded = [], 0
    for i in range(0, len(stream), read_size):
        for event in decoder.feed(stream[i : i + read_size]):
            if isinstance(event, DiscardedBytes):
                discarded += event.count
            elif isinstance(event, Frame):
                frames.append((event.payload, len(event.payload)))
                check_message(event.payload)
            else:
                frames.append((event.head, event.size))
        assert decoder.buffered <= max(limit, HEAD_KEPT)
    expected = read_stream(stream, limit)
    assert frames == expected.frames, (frames, expected.frames)
    assert discarded == expected.discarded


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    if data[0] % 2 == 0:
        check_message(data[1:])
    else:
        check_stream(data[2:], 1 + data[1] % 64, LIMITS[data[1] % len(LIMITS)])


def main() -> None:
    prepare(Inbound(b"MSH|^~\\&|A|B|C|D|||ADT^A28|1|P|2.5\r"))  # load hl7apy's tables once
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
