from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pamfr.transport import (
    MLLPClient,
    MLLPConnectionClosed,
    MLLPServer,
    MLLPTimeout,
    Peer,
    ServerLimits,
    encode_frame,
)

TEST_TIMEOUT = 10.0
IO_TIMEOUT = 3.0


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), TEST_TIMEOUT))


@dataclass
class RecordingHandler:
    delay: float = 0.0
    fail_on: bytes | None = None
    frames: list[tuple[bytes, Peer]] = field(default_factory=list)
    oversized: list[tuple[bytes, int]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_frame(self, payload: bytes, peer: Peer) -> bytes | None:
        self.frames.append((payload, peer))
        self.started.set()
        if self.delay:
            await asyncio.sleep(self.delay)
        if payload == self.fail_on:
            raise RuntimeError("handler failure")
        if payload == b"no answer":
            return None
        return b"ACK:" + payload

    async def on_oversized(self, head: bytes, size: int, peer: Peer) -> bytes | None:
        self.oversized.append((head, size))
        return b"TOO BIG:%d" % size

    @property
    def payloads(self) -> list[bytes]:
        return [payload for payload, _ in self.frames]


def ack(payload: bytes) -> bytes:
    return encode_frame(b"ACK:" + payload)


async def open_raw(server: MLLPServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), IO_TIMEOUT)


async def read_until_closed(reader: asyncio.StreamReader, timeout: float = IO_TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except ConnectionResetError:
        return b""


async def wait_until(condition: Callable[[], bool], timeout: float = IO_TIMEOUT) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await asyncio.wait_for(writer.wait_closed(), IO_TIMEOUT)


def test_frame_split_across_many_writes_with_pauses() -> None:
    payload = b"MSH|^~\\&|A|B|C|D|20240101||ADT^A28|1|P|2.5\rPID|1||123^^^X\r"

    async def scenario() -> None:
        handler = RecordingHandler()
        async with MLLPServer(handler, port=0) as server:
            reader, writer = await open_raw(server)
            wire = encode_frame(payload)
            for i in range(0, len(wire), 7):
                writer.write(wire[i : i + 7])
                await writer.drain()
                await asyncio.sleep(0.01)
            expected = ack(payload)
            assert await read_exactly(reader, len(expected)) == expected
            assert handler.payloads == [payload]
            await close_writer(writer)

    run(scenario)


def test_several_frames_in_one_write_are_answered_in_order() -> None:
    payloads = [b"first", b"second", b"third", b"fourth"]

    async def scenario() -> None:
        handler = RecordingHandler(delay=0.01)
        async with MLLPServer(handler, port=0) as server:
            reader, writer = await open_raw(server)
            writer.write(b"".join(encode_frame(p) for p in payloads))
            expected = b"".join(ack(p) for p in payloads)
            assert await read_exactly(reader, len(expected)) == expected
            assert handler.payloads == payloads
            await close_writer(writer)

    run(scenario)


def test_junk_before_start_block_is_discarded_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        handler = RecordingHandler()
        async with MLLPServer(handler, port=0) as server:
            reader, writer = await open_raw(server)
            writer.write(b"GET / HTTP/1.0\r\n" + encode_frame(b"MSH|real"))
            expected = ack(b"MSH|real")
            assert await read_exactly(reader, len(expected)) == expected
            assert handler.payloads == [b"MSH|real"]
            await close_writer(writer)

    with caplog.at_level(logging.WARNING, logger="pamfr.transport"):
        run(scenario)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("discarded 16 bytes" in message for message in warnings), warnings


def test_missing_cr_and_crlf_or_lf_after_end_block() -> None:
    async def scenario() -> None:
        handler = RecordingHandler()
        async with MLLPServer(handler, port=0) as server:
            reader, writer = await open_raw(server)
            writer.write(b"\x0bA\x1c")
            assert await read_exactly(reader, len(ack(b"A"))) == ack(b"A")
            writer.write(b"\x0bB\x1c\r\n")
            assert await read_exactly(reader, len(ack(b"B"))) == ack(b"B")
            writer.write(b"\x0bC\x1c\n\x0bD\x1c")
            expected = ack(b"C") + ack(b"D")
            assert await read_exactly(reader, len(expected)) == expected
            assert handler.payloads == [b"A", b"B", b"C", b"D"]
            await close_writer(writer)

    run(scenario)


def test_oversized_frame_is_answered_and_connection_goes_on() -> None:
    big = b"MSH|^~\\&|BIG\r" + b"Z" * 5000

    async def scenario() -> None:
        handler = RecordingHandler()
        limits = ServerLimits(max_frame_size=1000)
        async with MLLPServer(handler, port=0, limits=limits) as server:
            reader, writer = await open_raw(server)
            writer.write(encode_frame(big) + encode_frame(b"MSH|small"))
            expected = encode_frame(b"TOO BIG:%d" % len(big)) + ack(b"MSH|small")
            assert await read_exactly(reader, len(expected)) == expected
            assert handler.oversized == [(big, len(big))]
            assert handler.payloads == [b"MSH|small"]
            await close_writer(writer)

    run(scenario)


def test_handler_returning_none_sends_nothing() -> None:
    async def scenario() -> None:
        handler = RecordingHandler()
        async with MLLPServer(handler, port=0) as server:
            reader, writer = await open_raw(server)
            writer.write(encode_frame(b"no answer") + encode_frame(b"answer"))
            expected = ack(b"answer")
            assert await read_exactly(reader, len(expected)) == expected
            await close_writer(writer)

    run(scenario)


def test_200_simultaneous_clients_get_their_own_answers_in_order() -> None:
    clients_count = 200
    per_client = 3

    async def scenario() -> None:
        handler = RecordingHandler(delay=0.005)
        async with MLLPServer(handler, port=0) as server:
            clients = await asyncio.gather(
                *(MLLPClient.connect("127.0.0.1", server.port) for _ in range(clients_count))
            )
            await wait_until(lambda: server.connection_count == clients_count)

            async def converse(i: int, client: MLLPClient) -> list[bytes]:
                answers = []
                for j in range(per_client):
                    answers.append(await client.send(b"client %d message %d" % (i, j), timeout=5))
                await client.close()
                return answers

            results = await asyncio.gather(*(converse(i, c) for i, c in enumerate(clients)))
            for i, answers in enumerate(results):
                assert answers == [b"ACK:client %d message %d" % (i, j) for j in range(per_client)]
            assert len(handler.frames) == clients_count * per_client
            by_peer: dict[Peer, list[bytes]] = {}
            for payload, peer in handler.frames:
                by_peer.setdefault(peer, []).append(payload)
            assert len(by_peer) == clients_count
            for payloads in by_peer.values():
                assert [p.rsplit(b" ", 1)[1] for p in payloads] == [b"0", b"1", b"2"]

    run(scenario)


def test_idle_timeout_closes_silent_connection_but_not_active_one() -> None:
    async def scenario() -> None:
        handler = RecordingHandler()
        limits = ServerLimits(idle_timeout=0.3)
        async with MLLPServer(handler, port=0, limits=limits) as server:
            silent_reader, silent_writer = await open_raw(server)
            active = await MLLPClient.connect("127.0.0.1", server.port)
            started = time.monotonic()
            silent_closed = asyncio.create_task(read_until_closed(silent_reader))
            answers = []
            for i in range(10):
                answers.append(await active.send(b"keepalive %d" % i, timeout=2))
                await asyncio.sleep(0.1)
            assert silent_closed.done()
            assert await silent_closed == b""
            assert answers == [b"ACK:keepalive %d" % i for i in range(10)]
            assert time.monotonic() - started >= 0.3
            assert server.connection_count == 1
            await active.close()
            await close_writer(silent_writer)

    run(scenario)


def test_frame_timeout_closes_a_slowloris_connection() -> None:
    async def scenario() -> None:
        handler = RecordingHandler()
        limits = ServerLimits(idle_timeout=10, frame_timeout=0.3)
        async with MLLPServer(handler, port=0, limits=limits) as server:
            reader, writer = await open_raw(server)
            idle_reader, idle_writer = await open_raw(server)

            async def trickle() -> None:
                writer.write(b"\x0bMSH|")
                while True:
                    await asyncio.sleep(0.05)
                    writer.write(b"x")
                    await writer.drain()

            trickling = asyncio.create_task(trickle())
            started = time.monotonic()
            assert await read_until_closed(reader) == b""
            elapsed = time.monotonic() - started
            trickling.cancel()
            assert 0.25 <= elapsed < 2.0
            assert handler.frames == []
            # An idle connection (no frame started) is governed by idle_timeout only.
            assert not idle_reader.at_eof()
            assert server.connection_count == 1
            idle_writer.write(encode_frame(b"still here"))
            expected = ack(b"still here")
            assert await read_exactly(idle_reader, len(expected)) == expected
            await close_writer(writer)
            await close_writer(idle_writer)

    run(scenario)


def test_max_connections_refuses_extra_connection_politely(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        handler = RecordingHandler()
        limits = ServerLimits(max_connections=3)
        async with MLLPServer(handler, port=0, limits=limits) as server:
            clients = [await MLLPClient.connect("127.0.0.1", server.port) for _ in range(3)]
            await wait_until(lambda: server.connection_count == 3)
            extra_reader, extra_writer = await open_raw(server)
            assert await read_until_closed(extra_reader, timeout=1.0) == b""
            assert server.connection_count == 3
            answers = [await c.send(b"from %d" % i, timeout=2) for i, c in enumerate(clients)]
            assert answers == [b"ACK:from 0", b"ACK:from 1", b"ACK:from 2"]
            for client in clients:
                await client.close()
            await close_writer(extra_writer)

    with caplog.at_level(logging.WARNING, logger="pamfr.transport"):
        run(scenario)
    assert any(r.levelno == logging.WARNING and "refused" in r.getMessage() for r in caplog.records)


def test_graceful_close_answers_in_flight_frame_then_refuses_connections() -> None:
    async def scenario() -> None:
        handler = RecordingHandler(delay=0.5)
        server = MLLPServer(handler, port=0, limits=ServerLimits(shutdown_grace=5))
        await server.start()
        port = server.port
        idle_reader, idle_writer = await open_raw(server)
        reader, writer = await open_raw(server)
        writer.write(encode_frame(b"in flight"))
        await asyncio.wait_for(handler.started.wait(), IO_TIMEOUT)

        started = time.monotonic()
        await server.close()
        elapsed = time.monotonic() - started

        expected = ack(b"in flight")
        assert await read_exactly(reader, len(expected)) == expected
        assert await read_until_closed(reader) == b""
        assert await read_until_closed(idle_reader) == b""
        assert 0.3 <= elapsed < 2.0
        assert server.connection_count == 0
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await close_writer(writer)
        await close_writer(idle_writer)

    run(scenario)


def test_serve_forever_returns_after_close() -> None:
    async def scenario() -> None:
        server = MLLPServer(RecordingHandler(), port=0)
        await server.start()
        serving = asyncio.create_task(server.serve_forever())
        async with await MLLPClient.connect("127.0.0.1", server.port) as client:
            assert await client.send(b"x", timeout=2) == b"ACK:x"
        assert not serving.done()
        await server.close()
        await asyncio.wait_for(serving, IO_TIMEOUT)

    run(scenario)


def test_handler_exception_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        handler = RecordingHandler(fail_on=b"boom")
        async with MLLPServer(handler, port=0) as server:
            other_reader, other_writer = await open_raw(server)
            reader, writer = await open_raw(server)
            writer.write(encode_frame(b"boom") + encode_frame(b"never handled"))
            assert await read_until_closed(reader) == b""
            assert handler.payloads == [b"boom"]
            other_writer.write(encode_frame(b"fine"))
            assert await read_exactly(other_reader, len(ack(b"fine"))) == ack(b"fine")
            async with await MLLPClient.connect("127.0.0.1", server.port) as client:
                assert await client.send(b"new", timeout=2) == b"ACK:new"
            await close_writer(writer)
            await close_writer(other_writer)

    with caplog.at_level(logging.ERROR, logger="pamfr.transport"):
        run(scenario)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert "boom" not in errors[0].getMessage()


def test_client_gets_connection_closed_when_server_drops_connection() -> None:
    async def scenario() -> None:
        handler = RecordingHandler(fail_on=b"boom")
        async with MLLPServer(handler, port=0) as server:
            client = await MLLPClient.connect("127.0.0.1", server.port)
            with pytest.raises(MLLPConnectionClosed):
                await client.send(b"boom", timeout=2)
            with pytest.raises(MLLPConnectionClosed):
                await client.send(b"again", timeout=2)
            await client.close()

    run(scenario)


def test_client_times_out_when_server_never_answers() -> None:
    async def scenario() -> None:
        handler = RecordingHandler(delay=3.0)
        limits = ServerLimits(shutdown_grace=0.2)
        async with MLLPServer(handler, port=0, limits=limits) as server:
            client = await MLLPClient.connect("127.0.0.1", server.port)
            started = time.monotonic()
            with pytest.raises(MLLPTimeout):
                await client.send(b"slow", timeout=0.3)
            assert 0.3 <= time.monotonic() - started < 1.5
            assert handler.payloads == [b"slow"]
            # The connection is dropped, so a late answer cannot be taken for the next one.
            with pytest.raises(MLLPConnectionClosed):
                await client.send(b"next", timeout=0.3)
            await client.close()

    run(scenario)


def _make_tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    return server_ctx, client_ctx


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not available")
def test_tls_round_trip(tmp_path: Path) -> None:
    server_ctx, client_ctx = _make_tls_contexts(tmp_path)

    async def scenario() -> None:
        handler = RecordingHandler()
        async with MLLPServer(handler, port=0, ssl=server_ctx) as server:
            async with await MLLPClient.connect("127.0.0.1", server.port, ssl=client_ctx) as client:
                assert await client.send(b"MSH|secure", timeout=2) == b"ACK:MSH|secure"
                assert await client.send(b"MSH|again", timeout=2) == b"ACK:MSH|again"
            assert handler.payloads == [b"MSH|secure", b"MSH|again"]

    run(scenario)


def test_refused_connections_and_acks_are_counted_and_the_listener_says_when_it_accepts() -> None:
    from pamfr.service.metrics import Metrics
    from pamfr.transport.access import PeerFilter

    async def scenario() -> None:
        handler = RecordingHandler()
        server = MLLPServer(
            handler, port=0, limits=ServerLimits(max_connections=1), metrics=Metrics()
        )
        assert not server.accepting  # not started
        await server.start()
        assert server.accepting
        client = await MLLPClient.connect("127.0.0.1", server.port)
        assert await client.send(b"one", timeout=2) == b"ACK:one"
        extra_reader, extra_writer = await open_raw(server)  # over max_connections
        assert await read_until_closed(extra_reader) == b""
        await close_writer(extra_writer)
        server.peer_filter = PeerFilter.parse(["10.9.9.9"])  # 127.0.0.1 no longer allowed
        other_reader, other_writer = await open_raw(server)
        assert await read_until_closed(other_reader) == b""
        await close_writer(other_writer)
        await client.close()
        await server.close()
        assert not server.accepting
        refused = server.metrics.refused
        assert refused.labels("max_connections")._value.get() == 1
        assert refused.labels("allow_list")._value.get() == 1
        latency = server.metrics.ack_latency.collect()[0].samples
        count = next(s.value for s in latency if s.name == "pamfr_ack_latency_seconds_count")
        assert count == 1

    run(scenario)
