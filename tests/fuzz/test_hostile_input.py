"""Hostile input: random and mutated frames never crash the parser or the receiver, every one
gets a well-formed ACK, and the raw bytes are logged."""

from __future__ import annotations

import asyncio
import resource

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from pamfr.hl7.frame import Inbound
from pamfr.hl7.prepare import prepare
from pamfr.hl7.samples import Person, message
from pamfr.path.receiver import Receiver
from pamfr.store.schema import message as message_table
from pamfr.transport.client import MLLPClient
from tests.helpers import pamfr_server, parse_ack

SEED_MESSAGES = [
    message("A28", Person(ipp="FZ1", used_name="Hélène"), "FZ-1").encode(),
    message("A01", Person(ipp="FZ2"), "FZ-2").encode(),
    message("A40", Person(ipp="FZ3"), "FZ-3", prior_ipp="FZ1").encode(),
    message("A24", Person(ipp="FZ4"), "FZ-4", other=Person(ipp="FZ5")).encode(),
]
TRIED = {"parser": 0, "receiver": 0, "socket": 0}
# Original mode, and the commit ACK codes of enhanced mode (a mutated MSH-15/16 turns it on).
ORIGINAL = {"AA": "AA", "AE": "AE", "AR": "AR", "CA": "AA", "CE": "AE", "CR": "AR"}


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEED_MESSAGES)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup", "huge", "charset"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [b"|", b"^", b"~", b"&", b"\\", b"\r", b"\n", b'""', b"\\X1\\", b"\\Zq\\"]
                )
            ) * draw(st.integers(1, 50))
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 200))] * draw(st.integers(1, 30))
        elif op == "huge":
            data[pos:pos] = b"A" * draw(st.integers(1000, 200_000))
        elif op == "charset":
            data = bytearray(
                bytes(data).replace(
                    b"UNICODE UTF-8",
                    draw(st.sampled_from([b"8859/1", b"", b"ISO-IR 87", b"\xff\xfe"])),
                )
            )
    return bytes(data)


any_input = st.one_of(mutated(), st.binary(max_size=2000))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(any_input)
def test_parser_never_raises(raw):
    TRIED["parser"] += 1
    prepared = prepare(Inbound(raw))
    assert prepared.code in ("AA", "AE", "AR")
    if prepared.code != "AA":
        assert prepared.problems, "a refusal always says why"


def test_receiver_answers_and_logs_every_input(sqlite_url, engine):
    receiver = Receiver(engine)
    sent: list[bytes] = []

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(any_input)
    def run(raw):
        TRIED["receiver"] += 1
        outcome = receiver.handle(raw, door="fuzz")
        ack = parse_ack(outcome.ack, "latin-1")
        assert ORIGINAL[ack.code] == outcome.code
        if outcome.code != "AA":
            assert ack.errs and all(e[3] and e[4] in ("E", "W", "I") for e in ack.errs)
        sent.append(raw)

    run()
    with engine.connect() as conn:
        logged = conn.execute(select(func.count()).select_from(message_table)).scalar()
    engine.dispose()
    assert logged == len(sent)  # nothing lost, not even garbage


def test_socket_every_frame_answered_and_memory_bounded(sqlite_url):
    frames: list[bytes] = []

    @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
    @given(any_input)
    def collect(raw):
        frames.append(raw.replace(b"\x0b", b"").replace(b"\x1c", b""))

    collect()

    async def scenario(port):
        answers = []
        async with await MLLPClient.connect("127.0.0.1", port) as client:
            for frame in frames:
                answers.append(parse_ack(await client.send(frame, timeout=60), "latin-1"))
        return answers

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pamfr_server(sqlite_url) as server:
        answers = asyncio.run(scenario(server.port))
        TRIED["socket"] += len(frames)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(answers) == len(frames)
    assert all(a.code in ORIGINAL for a in answers)
    assert grown_mb < 200
    print(f"\nfuzz inputs tried: {TRIED}")
