"""Coverage-guided fuzzing (atheris / libFuzzer) of every door's first reader: the MLLP codec,
the ER7 header reader, the parser and ACK builder behind them, the file door's splitter and
the FHIR search parser with the query it runs. Run by tests/fuzz/test_hostile_streams.py for
a short while, or by hand (docs/security.md gives the long runs' figures):

    .venv/bin/python tests/fuzz/atheris_fuzz.py CORPUS_DIR -max_total_time=600
    PAMFR_FUZZ_TARGET=splitter .venv/bin/python tests/fuzz/atheris_fuzz.py CORPUS -runs=100000

Input layout: with PAMFR_FUZZ_TARGET unset, byte 0 selects the target (TARGETS, in order);
the message and stream targets then read as before: byte 1 of a stream is the read size it
is cut in and the frame size limit.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports(include=["pamfr"]):
    from starlette.requests import Request

    from pamfr.hl7.ack import build_ack, encode_ack
    from pamfr.hl7.er7 import read_header
    from pamfr.hl7.errors import MessageRejected
    from pamfr.hl7.frame import Inbound
    from pamfr.hl7.prepare import prepare
    from pamfr.http.fhir import BadRequest, _count, _criteria, _cursor
    from pamfr.ingest.files import (
        UnreadableFile,
        file_messages,
        incomplete_reason,
        not_hl7_reason,
    )
    from pamfr.store.fhirquery import count_patients, search_patients
    from pamfr.transport.codec import HEAD_KEPT, DiscardedBytes, Frame, MLLPDecoder

from tests.fuzz.mllp_reference import read_stream

LIMITS = (16, 1000, 1024 * 1024)
_store = None  # the FHIR target's SQLite store, made once per process


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


def check_header(raw: bytes) -> None:
    try:
        header = read_header(raw)
    except MessageRejected as refused:
        assert refused.problems, "a refusal always says why"
        return
    assert len(header.field_sep) == 1 and len(header.encoding_chars) == 4
    assert header.field_sep not in header.control_id


def check_file(data: bytes) -> None:
    """The file door's splitter: messages cut from the file, or one clear refusal."""
    for reason in (not_hl7_reason(data), incomplete_reason(data)):
        assert reason is None or (isinstance(reason, str) and reason)
    try:
        messages = file_messages(data)
    except UnreadableFile as refused:
        assert str(refused)
        return
    assert messages
    for message in messages:
        assert message in data  # a message is bytes of the file, never made up


def check_fhir_query(query: bytes) -> None:
    """A /fhir/Patient search's query string: a 400 that says why, or a query that runs."""
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/fhir/Patient",
            "query_string": query,
            "headers": [],
        }
    )
    try:
        criteria, count, after = _criteria(request), _count(request), _cursor(request)
    except BadRequest as refused:
        assert str(refused)
        return
    with _fhir_store().connect() as conn:
        ids = search_patients(conn, criteria, after=after, limit=count + 1)
        assert len(ids) <= count + 1 and ids == sorted(ids)
        if after is None:
            assert count_patients(conn, criteria) >= min(len(ids), count)


def _fhir_store():
    """A real SQLite store holding a few patients, for the FHIR target."""
    global _store
    if _store is None:
        from pamfr.hl7.samples import Person, message
        from pamfr.path.receiver import Receiver
        from pamfr.store.db import make_engine, upgrade

        url = f"sqlite:///{tempfile.mkdtemp(prefix='pamfr-fuzz-')}/pamfr.db"
        upgrade(url)
        _store = make_engine(url)
        receiver = Receiver(_store)
        for n, name in enumerate(("DUPONT", "MARTIN", "D'ARC", "ÉLOÏSE_%")):
            receiver.handle(message("A28", Person(f"FZ{n}", birth_name=name), f"FZ{n}").encode())
    return _store


def _message(data: bytes) -> None:
    check_message(data)


def _stream(data: bytes) -> None:
    if data:
        check_stream(data[1:], 1 + data[0] % 64, LIMITS[data[0] % len(LIMITS)])


TARGETS = {
    "message": _message,
    "stream": _stream,
    "header": check_header,
    "splitter": check_file,
    "fhir": check_fhir_query,
}


def test_one_input(data: bytes) -> None:
    fixed = os.environ.get("PAMFR_FUZZ_TARGET")
    if fixed:
        TARGETS[fixed](data)
    elif data:
        list(TARGETS.values())[data[0] % len(TARGETS)](data[1:])


def main() -> None:
    prepare(Inbound(b"MSH|^~\\&|A|B|C|D|||ADT^A28|1|P|2.5\r"))  # load hl7apy's tables once
    _fhir_store()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
