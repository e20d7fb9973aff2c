"""One MLLP connection over asyncio streams, the same for the server and the client.

It reads bytes into the sans-I/O decoder (codec.MLLPDecoder) and hands out the frames,
counts and logs the bytes that belong to no frame, names its peer, writes framed payloads
and closes. What a side does with a frame (answer it, or take it as the answer to what it
sent) stays with that side: one answer per frame, in order, on either.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from pamfr.transport.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    DiscardedBytes,
    Frame,
    MLLPDecoder,
    OversizedFrame,
    encode_frame,
)

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Peer:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def peer_of(writer: asyncio.StreamWriter) -> Peer:
    """The remote address of a stream, "unknown:0" when the transport has none."""
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return Peer(str(peername[0]), int(peername[1]))
    return Peer(str(peername or "unknown"), 0)


async def close_writer(writer: asyncio.StreamWriter, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close the stream, waiting at most `timeout` for it; a peer that does not let it close
    (or an error while closing) gets the transport aborted."""
    writer.close()
    try:
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()


class MLLPConnection:
    """Frames in and out of one stream pair.

    `read_frames` reads once and returns the frames that read completed; `next_frame` waits
    for one frame. Bytes outside frames are counted in `discarded` and logged once per
    connection at WARNING (then at DEBUG): a peer sending junk must not flood the log.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.peer = peer_of(writer)
        self.decoder = MLLPDecoder(max_frame_size)
        self.discarded = 0  # bytes that belonged to no frame
        self.reading = False  # a read is pending (see stop_reading)
        self.closed = False  # close() or abort() was called: nothing more is to be sent
        self._close_started = False
        self._discard_logged = False
        self._frames: deque[Frame | OversizedFrame] = deque()

    @property
    def in_frame(self) -> bool:
        """A frame is started and not finished."""
        return self.decoder.in_frame

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished frame held."""
        return self.decoder.buffered

    async def read_frames(self) -> list[Frame | OversizedFrame] | None:
        """Read once and return the frames completed (maybe none); None at the end of the
        stream. Frames left by `next_frame` come first."""
        self.reading = True
        try:
            data = await self.reader.read(READ_SIZE)
        finally:
            self.reading = False
        if not data:
            return None
        frames = list(self._frames)
        self._frames.clear()
        for event in self.decoder.feed(data):
            if isinstance(event, DiscardedBytes):
                self._discard(event)
            else:
                frames.append(event)
        return frames

    async def next_frame(self) -> Frame | OversizedFrame | None:
        """The next frame, reading as long as needed; None when the stream ends first."""
        while not self._frames:
            frames = await self.read_frames()
            if frames is None:
                return None
            self._frames.extend(frames)
        return self._frames.popleft()

    def drop_pending(self) -> int:
        """Forget frames already received and not taken yet; how many there were."""
        count = len(self._frames)
        self._frames.clear()
        return count

    def write_frame(self, payload: bytes) -> None:
        """Queue one framed payload; `drain` waits until the peer takes it."""
        self.writer.write(encode_frame(payload))

    async def drain(self) -> None:
        await self.writer.drain()

    def stop_reading(self) -> None:
        """Make a pending read return what is already buffered, then the end of the stream."""
        # Pausing first guarantees the protocol will not feed data after our EOF.
        self.writer.transport.pause_reading()
        self.reader.feed_eof()

    async def close(self) -> None:
        """Close once (after an abort too: it waits for the transport to be gone); see
        close_writer."""
        if self._close_started:
            return
        self._close_started = self.closed = True
        await close_writer(self.writer)

    def abort(self) -> None:
        """Drop the connection now, and whatever was not sent yet."""
        self.closed = True
        self.writer.transport.abort()

    def _discard(self, event: DiscardedBytes) -> None:
        self.discarded += event.count
        level = logging.DEBUG if self._discard_logged else logging.WARNING
        self._discard_logged = True
        logger.log(level, "%s: discarded %d bytes (%s)", self.peer, event.count, event.reason)
