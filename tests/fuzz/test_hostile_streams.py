"""Hostile MLLP streams: adversarial streams (runs of start blocks, frames past the size
limit, no end block) cut at random places, against a naive reference reading; then the whole
daemon fed hostile streams over sockets (deep repetitions, invalid escapes, wrong charsets,
binary), every complete frame answered, the daemon alive and its memory (with its parse
workers) bounded; then a short atheris run when it is installed."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pamfr.hl7.samples import Person, message
from pamfr.transport.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    HEAD_KEPT,
    DiscardedBytes,
    Frame,
    MLLPDecoder,
    OversizedFrame,
    encode_frame,
)
from tests.fuzz.mllp_reference import read_stream
from tests.helpers import parse_ack, start_daemon
from tests.reliability.common import rss_kb, tree_rss_kb

TRIED: dict[str, int] = {}
HERE = Path(__file__).resolve().parent

VT, FS = b"\x0b", b"\x1c"
SAMPLE = message("A28", Person(ipp="HX1", used_name="Hélène"), "HX-1").encode()

# -- the codec alone ------------------------------------------------------------------------

token = st.one_of(
    st.binary(max_size=40),  # junk, possibly holding framing bytes
    st.sampled_from([VT, FS, b"\r", b"\n", b"\r\n", FS + b"\r", FS + b"\r\n"]),
    st.builds(lambda n: VT * n, st.integers(1, 5000)),  # runs of start blocks
    st.builds(lambda n: FS * n, st.integers(1, 500)),
    st.builds(encode_frame, st.binary(max_size=200).map(lambda b: b.replace(VT, b""))),
    st.builds(lambda n: b"A" * n, st.integers(1, 3 * HEAD_KEPT)),  # huge frame content
    st.just(VT + SAMPLE),  # a frame with no end block
    st.just(encode_frame(SAMPLE)),
)


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    tokens=st.lists(token, max_size=30),
    cuts=st.lists(st.integers(0, 10**6), max_size=40),
    max_frame_size=st.sampled_from([0, 1, 100, 5000, HEAD_KEPT + 10, DEFAULT_MAX_FRAME_SIZE]),
)
def test_codec_adversarial_streams_cut_anywhere(tokens, cuts, max_frame_size):
    TRIED["codec streams (hypothesis)"] = TRIED.get("codec streams (hypothesis)", 0) + 1
    stream = b"".join(tokens)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder = MLLPDecoder(max_frame_size)
    frames, discarded = [], 0
    for a, b in zip(bounds, bounds[1:], strict=False):
        for event in decoder.feed(stream[a:b]):
            if isinstance(event, DiscardedBytes):
                assert event.count > 0
                discarded += event.count
            elif isinstance(event, OversizedFrame):
                assert event.size > max_frame_size and len(event.head) <= HEAD_KEPT
                frames.append((event.head, event.size))
            else:
                assert isinstance(event, Frame) and len(event.payload) <= max_frame_size
                frames.append((event.payload, len(event.payload)))
        # memory bound whatever the stream: the frame in hand, or the head of an oversized one
        assert decoder.buffered <= max(max_frame_size, HEAD_KEPT)
    expected = read_stream(stream, max_frame_size)
    assert frames == expected.frames
    assert discarded == expected.discarded
    assert decoder.in_frame == (expected.pending is not None)
    if expected.pending is not None:
        kept = expected.pending if expected.pending <= max_frame_size else HEAD_KEPT
        assert decoder.buffered == min(expected.pending, kept)


def test_codec_worst_cases_stay_linear_and_bounded():
    """10 MB of start blocks, a 20 MB frame fed in 64 KiB reads, a frame never ended."""
    cases = {
        "start blocks": VT * 10_000_000 + encode_frame(b"ok"),
        "huge frame": VT + b"x" * 20_000_000 + FS + encode_frame(b"ok"),
        "no end block": VT + b"y" * 20_000_000,
        "end blocks only": FS * 10_000_000 + encode_frame(b"ok"),
    }
    for name, stream in cases.items():
        decoder = MLLPDecoder()
        started = time.perf_counter()
        events = []
        for i in range(0, len(stream), 65536):
            events.extend(decoder.feed(stream[i : i + 65536]))
            assert decoder.buffered <= DEFAULT_MAX_FRAME_SIZE
        elapsed = time.perf_counter() - started
        assert elapsed < 5, f"{name}: {elapsed:.1f}s"
        frames = [e for e in events if not isinstance(e, DiscardedBytes)]
        if name == "no end block":
            assert frames == [] and decoder.in_frame
        else:
            assert frames[-1] == Frame(b"ok"), name
        if name == "huge frame":
            assert frames[0] == OversizedFrame(b"x" * HEAD_KEPT, 20_000_000)


# -- the whole daemon over sockets ----------------------------------------------------------


def _with_pid3(reps: int) -> bytes:
    ids = b"~".join(b"ID%d^^^CHU-Y&1.2.3&ISO^PI" % i for i in range(reps))
    return SAMPLE.replace(b"HX1^^^", ids + b"~HX1^^^", 1)


def hostile_frames() -> dict[str, bytes]:
    """Payloads (without framing) a GAM should never send."""
    latin = message("A28", Person(ipp="HX2", used_name="Hélène"), "HX-2").encode("latin-1")
    return {
        "empty": b"",
        "binary": bytes(range(256)).replace(VT, b"").replace(FS, b"") * 4,
        "nul bytes": SAMPLE.replace(b"|", b"\0"),
        "100k empty repetitions in PID-3": SAMPLE.replace(b"HX1^^^", b"~" * 100_000 + b"HX1^^^"),
        "1000 identifiers in PID-3": _with_pid3(1000),
        "3000 components in PID-5": SAMPLE.replace(b"PAT-TEST", b"^&" * 3000, 1),
        "50k subcomponents": SAMPLE.replace(b"CHU-X&", b"&" * 50_000, 1),
        "invalid escapes": SAMPLE.replace(b"PAT-TEST", b"\\X\\\\Z\\\\Xzz\\\\H\\\\", 1),
        "unterminated escape": SAMPLE.replace(b"PAT-TEST", b"\\E", 1),
        "escape char as separator": SAMPLE.replace(b"MSH|^~\\&", b"MSH|\\\\\\\\", 1),
        "latin-1 declared UTF-8": latin,
        "UTF-16": SAMPLE.decode().encode("utf-16"),
        "unknown charset": SAMPLE.replace(b"UNICODE UTF-8", b"ISO-IR 87\xff"),
        "multibyte cut": SAMPLE.replace("é".encode(), "é".encode()[:1]),
        "LF only": SAMPLE.replace(b"\r", b"\n"),
        "no segment separator": SAMPLE.replace(b"\r", b""),
        "huge field 900 kB": SAMPLE.replace(b"PAT-TEST", b"N" * 900_000, 1),
        "MSH only": b"MSH|",
        "wrong field separator": SAMPLE.replace(b"|", b"#"),
        "segment of 60k fields": SAMPLE + b"ZZZ" + b"|" * 60_000 + b"\r",
    }


def random_mutations(seed: int, count: int = 60) -> bytes:
    """Mutated messages in a stream with junk and abandoned frames between them."""
    rng = random.Random(seed)
    parts = []
    for _ in range(count):
        data = bytearray(SAMPLE)
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data) or 1)
            op = rng.choice(["flip", "cut", "insert", "dup"])
            if op == "flip":
                data[pos] = rng.choice([rng.randrange(256), *b"|^~&\\\r\n"])
            elif op == "cut":
                del data[pos:]
            elif op == "insert":
                data[pos:pos] = rng.choice([b"|", b"^", b"~", b"&", b"\\", b"\r"]) * rng.randint(
                    1, 300
                )
            else:
                data[pos:pos] = data[pos : pos + rng.randint(1, 100)] * rng.randint(1, 20)
        payload = bytes(data).replace(VT, b"").replace(FS, b"")
        parts.append(rng.choice([b"", b"\r\n", b"junk", VT + b"abandoned"]) + encode_frame(payload))
    return b"".join(parts)


def hostile_streams() -> dict[str, tuple[bytes, int]]:
    """Whole streams (framing included) and how many answers each must get."""
    frames = hostile_frames()
    ok = encode_frame(SAMPLE)
    streams = {name: encode_frame(payload) for name, payload in frames.items()}
    streams.update(
        {
            "100k start blocks then a frame": VT * 100_000 + ok,
            "frame of 5 MB (over the 1 MB limit) then a frame": encode_frame(b"M" * 5_000_000) + ok,
            "abandoned frames": (VT + SAMPLE[:100]) * 500 + ok,
            "junk between frames": b"junk\r\n" * 1000 + ok + FS * 1000 + ok,
            "all in one write": b"".join(streams.values()),
            "no end block, then the peer closes": VT + SAMPLE,
            "60 random mutations": random_mutations(1),
            "60 other random mutations": random_mutations(2),
        }
    )
    return {
        name: (s, len(read_stream(s, DEFAULT_MAX_FRAME_SIZE).frames)) for name, s in streams.items()
    }


async def _read_answers(reader, count: int, timeout: float) -> list[bytes]:
    decoder = MLLPDecoder(16 * 1024 * 1024)
    answers: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(answers) < count:
            data = await reader.read(65536)
            assert data, f"connection closed after {len(answers)} of {count} answers"
            answers += [e.payload for e in decoder.feed(data) if isinstance(e, Frame)]
    return answers


async def _send_stream(port: int, stream: bytes, count: int, rng: random.Random, timeout=120):
    """Write the stream cut at random places, while reading the answers (a server that
    answers before reading on must not deadlock us)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reading = asyncio.create_task(_read_answers(reader, count, timeout))
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 7, 100, 4096, 65536, 1 << 20])
        writer.write(stream[pos : pos + step])
        pos += step
        await writer.drain()
    try:
        answers = await reading
    finally:
        writer.close()
    for answer in answers:
        ack = parse_ack(answer, "latin-1")
        assert ack.code in ("AA", "AE", "AR", "CA", "CE", "CR")
        if ack.code != "AA":
            assert ack.errs, answer
    return answers


def test_daemon_answers_hostile_streams_with_bounded_memory(sqlite_url, tmp_path):
    streams = hostile_streams()
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log")
    rng = random.Random(3)
    answered = 0
    try:
        asyncio.run(_send_stream(daemon.port, encode_frame(SAMPLE), 1, rng))  # warm up
        before = tree_rss_kb(daemon.proc.pid)
        peak = before
        rounds: list[int] = []  # RSS after each round

        async def all_streams():
            nonlocal answered, peak
            # three rounds, four connections at a time: memory must not grow round after round
            for _ in range(3):
                names = list(streams)
                rng.shuffle(names)
                for i in range(0, len(names), 4):
                    batch = names[i : i + 4]
                    results = await asyncio.gather(
                        *(_send_stream(daemon.port, *streams[n], rng) for n in batch)
                    )
                    answered += sum(len(r) for r in results)
                    peak = max(peak, tree_rss_kb(daemon.proc.pid))
                    assert daemon.proc.poll() is None, f"daemon died after {batch}"
                rounds.append(tree_rss_kb(daemon.proc.pid))

        started = time.monotonic()
        asyncio.run(all_streams())
        elapsed = time.monotonic() - started
        daemon_alone = rss_kb(daemon.proc.pid)
        assert daemon.proc.poll() is None
        assert asyncio.run(_send_stream(daemon.port, encode_frame(SAMPLE), 1, rng))
    finally:
        code = daemon.stop()
    assert code == 0
    expected = 3 * sum(count for _, count in streams.values())
    assert answered == expected
    sent_mb = 3 * sum(len(s) for s, _ in streams.values()) / 1e6
    TRIED["hostile streams at the daemon"] = 3 * len(streams)
    mb = [r // 1024 for r in rounds]
    print(
        f"\ndaemon: {3 * len(streams)} hostile streams, {sent_mb:.0f} MB, {answered} frames all"
        f" answered in {elapsed:.1f}s; RSS of the daemon and its parse workers: {before // 1024}"
        f" MB before, {mb} MB after each round, peak {peak // 1024} MB (the daemon alone"
        f" {daemon_alone // 1024} MB at the end)"
    )
    assert peak - before < 300 * 1024
    assert rounds[-1] - rounds[0] < 40 * 1024, "memory grows round after round"
    assert daemon_alone < 200 * 1024


# -- atheris (coverage-guided) --------------------------------------------------------------


def test_atheris_codec_parser_splitter_and_fhir_query(tmp_path):
    """libFuzzer through atheris, ~20 s, on the codec (with the reference reading), the ER7
    header reader, the parser and ACK builder, the file door's splitter and the FHIR search
    parser with its query; an exception or a hang fails the run."""
    assert importlib.util.find_spec("atheris"), "atheris missing: pip install -e '.[test]'"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    seeds = [
        b"\x00" + SAMPLE,
        b"\x01\x07" + encode_frame(SAMPLE) + encode_frame(b"MSH|^~\\&|A|B"),
        b"\x00" + message("A40", Person(ipp="HX3"), "HX-3", prior_ipp="HX1").encode(),
        b"\x00" + message("A24", Person(ipp="HX4"), "HX-4", other=Person(ipp="HX5")).encode(),
        b"\x02" + SAMPLE,
        b"\x03FHS|^~\\&\rBHS|^~\\&\r" + SAMPLE + b"\rBTS|1\rFTS|1\r",
        b"\x03" + encode_frame(SAMPLE) + encode_frame(SAMPLE),
        b"\x04family=DUP&birthdate=1979-03&gender=female&_count=5",
        b"\x04identifier=urn:oid:1.2.250.1.213.1.4.8|279035121518989&_cursor=1",
    ]
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i}").write_bytes(seed)
    run = subprocess.run(
        [
            sys.executable,
            str(HERE / "atheris_fuzz.py"),
            str(corpus),
            "-max_total_time=20",
            "-timeout=15",
            "-rss_limit_mb=2048",
            "-max_len=20000",
            "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(HERE.parent.parent)},
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    runs = re.search(r"Done (\d+) runs", output)
    assert runs, output[-3000:]
    TRIED["atheris (codec, header, parser, splitter, FHIR query)"] = int(runs.group(1))
    cov = re.search(r"cov: (\d+)", output)
    print(f"\natheris: {runs.group(1)} inputs, cov {cov.group(1) if cov else '?'}")
    print(f"inputs tried: {TRIED}")
