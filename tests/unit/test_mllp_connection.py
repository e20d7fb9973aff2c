"""MLLPConnection, the one connection object of the MLLP server and client: frames read from
a real socket on 127.0.0.1 (split over reads, several in one read, junk around them), the
bytes discarded, the peer's name, framed writes, the end of the stream, stopping a pending
read, closing and aborting."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from pamfr.transport.codec import HEAD_KEPT, Frame, OversizedFrame, encode_frame
from pamfr.transport.connection import MLLPConnection, Peer, peer_of

SAFETY = 10.0  # a hung test fails instead of hanging; no assertion depends on it


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), SAFETY))


@asynccontextmanager
async def socket_pair(
    max_frame_size: int = 1024,
) -> AsyncIterator[tuple[MLLPConnection, asyncio.StreamReader, asyncio.StreamWriter]]:
    """An MLLPConnection on the accepting side of a real TCP connection, and the raw streams
    of the connecting side."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_connection(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await accepted.put((r, w))

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    theirs_reader, theirs_writer = await accepted.get()
    conn = MLLPConnection(theirs_reader, theirs_writer, max_frame_size=max_frame_size)
    try:
        yield conn, reader, writer
    finally:
        writer.close()
        await conn.close()
        server.close()
        await server.wait_closed()


async def frames_until(conn: MLLPConnection, count: int) -> list[Frame | OversizedFrame]:
    got: list[Frame | OversizedFrame] = []
    while len(got) < count:
        frames = await conn.read_frames()
        assert frames is not None, "the stream ended before the frames expected"
        got.extend(frames)
    return got


def test_peer_is_named_by_the_remote_address():
    async def scenario() -> None:
        async with socket_pair() as (conn, _reader, writer):
            local = writer.get_extra_info("sockname")
            assert conn.peer == Peer("127.0.0.1", local[1])
            assert str(conn.peer) == f"127.0.0.1:{local[1]}"
            assert peer_of(writer) == Peer("127.0.0.1", writer.get_extra_info("peername")[1])

    run(scenario)


def test_a_frame_split_over_writes_comes_out_whole():
    async def scenario() -> None:
        async with socket_pair() as (conn, _reader, writer):
            framed = encode_frame(b"MSH|^~\\&|one")
            writer.write(framed[:5])
            await writer.drain()
            while conn.buffered < 4:
                assert await conn.read_frames() == []
            assert conn.in_frame and conn.buffered == 4
            writer.write(framed[5:])
            await writer.drain()
            assert await frames_until(conn, 1) == [Frame(b"MSH|^~\\&|one")]
            assert not conn.in_frame

    run(scenario)


def test_junk_around_frames_is_counted_and_warned_about_once(caplog):
    async def scenario() -> None:
        async with socket_pair() as (conn, _reader, writer):
            writer.write(b"junk" + encode_frame(b"one"))
            await writer.drain()
            assert await frames_until(conn, 1) == [Frame(b"one")]
            writer.write(b"more junk" + encode_frame(b"two"))
            await writer.drain()
            assert await frames_until(conn, 1) == [Frame(b"two")]
            assert conn.discarded == 4 + 9

    with caplog.at_level(logging.DEBUG, logger="pamfr.transport"):
        run(scenario)
    discards = [r for r in caplog.records if "discarded" in r.getMessage()]
    assert [r.levelno for r in discards] == [logging.WARNING, logging.DEBUG]
    assert "discarded 4 bytes (before start block)" in discards[0].getMessage()


def test_a_frame_over_the_limit_keeps_its_head_and_size():
    async def scenario() -> None:
        async with socket_pair(max_frame_size=10) as (conn, _reader, writer):
            payload = b"x" * (HEAD_KEPT + 100)
            writer.write(encode_frame(payload) + encode_frame(b"small"))
            await writer.drain()
            got = await frames_until(conn, 2)
            assert got == [
                OversizedFrame(head=b"x" * HEAD_KEPT, size=len(payload)),
                Frame(b"small"),
            ]

    run(scenario)


def test_next_frame_gives_frames_one_at_a_time_and_pending_ones_can_be_dropped():
    async def scenario() -> None:
        async with socket_pair() as (conn, _reader, writer):
            # Bytes put in the stream at once, as one read returns them (no network split).
            conn.reader.feed_data(encode_frame(b"one") + encode_frame(b"two") + encode_frame(b"3"))
            assert await conn.next_frame() == Frame(b"one")
            assert await conn.next_frame() == Frame(b"two")
            assert conn.drop_pending() == 1  # "3": received, never taken
            assert conn.drop_pending() == 0
            writer.write(encode_frame(b"four"))
            await writer.drain()
            assert await conn.next_frame() == Frame(b"four")

    run(scenario)


def test_frames_held_by_next_frame_come_first_in_read_frames():
    async def scenario() -> None:
        async with socket_pair() as (conn, _reader, writer):
            conn.reader.feed_data(encode_frame(b"one") + encode_frame(b"two"))
            assert await conn.next_frame() == Frame(b"one")
            writer.write(encode_frame(b"three"))
            await writer.drain()
            assert await frames_until(conn, 2) == [Frame(b"two"), Frame(b"three")]

    run(scenario)


def test_each_frame_gets_one_answer_in_order():
    """The server's loop in small: read, answer every frame before reading on."""

    async def scenario() -> None:
        async with socket_pair() as (conn, reader, writer):
            messages = [b"m%d" % n for n in range(20)]
            writer.write(b"".join(encode_frame(m) for m in messages))
            await writer.drain()
            answered = 0
            while answered < len(messages):
                frames = await conn.read_frames()
                assert frames is not None
                for frame in frames:
                    assert isinstance(frame, Frame)
                    conn.write_frame(b"ACK " + frame.payload)
                    answered += 1
                await conn.drain()
            expected = b"".join(encode_frame(b"ACK " + m) for m in messages)
            assert await reader.readexactly(len(expected)) == expected

    run(scenario)


def test_end_of_stream_is_none_and_says_whether_a_frame_was_cut():
    async def scenario() -> None:
        async with socket_pair() as (conn, _reader, writer):
            writer.write(b"\x0bMSH|cut short")
            await writer.drain()
            writer.write_eof()
            frames: list[Frame | OversizedFrame] | None = []
            while frames is not None:
                frames = await conn.read_frames()
                assert frames in ([], None)
            assert conn.in_frame and conn.buffered == len(b"MSH|cut short")
            assert await conn.next_frame() is None

    run(scenario)


def test_stop_reading_ends_a_pending_read():
    async def scenario() -> None:
        async with socket_pair() as (conn, _reader, _writer):
            pending = asyncio.ensure_future(conn.read_frames())
            while not conn.reading:
                await asyncio.sleep(0)
            conn.stop_reading()
            assert await pending is None
            assert not conn.reading

    run(scenario)


def test_close_is_seen_by_the_peer_and_can_be_repeated():
    async def scenario() -> None:
        async with socket_pair() as (conn, reader, _writer):
            conn.write_frame(b"last")
            await conn.drain()
            await conn.close()
            assert conn.closed
            await conn.close()
            assert await reader.read() == encode_frame(b"last")

    run(scenario)


def test_abort_drops_the_connection_at_once():
    async def scenario() -> None:
        async with socket_pair() as (conn, reader, _writer):
            conn.abort()
            assert conn.closed
            try:
                rest = await reader.read()
            except ConnectionResetError:
                rest = b""
            assert rest == b""
            await conn.close()  # after an abort, closing waits for the transport to be gone

    run(scenario)


@pytest.mark.parametrize("peername", [None, "", "/run/mllp.sock"])
def test_a_transport_without_an_address_is_named_all_the_same(peername):
    class Writer:
        def get_extra_info(self, name: str) -> object:
            return peername

    peer = peer_of(Writer())  # type: ignore[arg-type]
    assert peer.port == 0 and peer.host == (peername or "unknown")
