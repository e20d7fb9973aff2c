"""An asyncio MLLP client: send one message, wait for the next frame as its answer."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections import deque

from pamfr.transport.codec import (
    DiscardedBytes,
    Frame,
    MLLPDecoder,
    OversizedFrame,
    encode_frame,
)

logger = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
_CLOSE_TIMEOUT = 5.0


class MLLPError(Exception):
    pass


class MLLPTimeout(MLLPError):
    pass


class MLLPConnectionClosed(MLLPError):
    pass


class MLLPFrameTooLarge(MLLPError):
    def __init__(self, size: int, max_frame_size: int) -> None:
        super().__init__(f"answer of {size} bytes exceeds the limit of {max_frame_size} bytes")
        self.size = size
        self.max_frame_size = max_frame_size


class MLLPClient:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_frame_size: int = 16 * 1024 * 1024,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._max_frame_size = max_frame_size
        self._decoder = MLLPDecoder(max_frame_size)
        self._received: deque[Frame | OversizedFrame] = deque()
        self._lock = asyncio.Lock()
        self._closed = False
        self._peer = _describe_peer(writer)

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        timeout: float = 10.0,
        ssl: ssl_module.SSLContext | None = None,
        max_frame_size: int = 16 * 1024 * 1024,
    ) -> MLLPClient:
        """Open a connection; OSError (e.g. ConnectionRefusedError) is passed through."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, ssl=ssl)
        except TimeoutError:
            raise MLLPTimeout(f"no connection to {host}:{port} within {timeout}s") from None
        return cls(reader, writer, max_frame_size=max_frame_size)

    async def send(self, payload: bytes, *, timeout: float = 30.0) -> bytes:
        """Send one framed payload and return the payload of the next frame received.

        On MLLPTimeout the connection is closed: a late answer must never be taken
        for the answer to the next message.
        """
        async with self._lock:
            if self._closed:
                raise MLLPConnectionClosed(f"connection to {self._peer} is closed")
            if self._received:
                logger.warning(
                    "dropping %d unsolicited frame(s) from %s", len(self._received), self._peer
                )
                self._received.clear()
            try:
                async with asyncio.timeout(timeout):
                    self._writer.write(encode_frame(payload))
                    await self._writer.drain()
                    logger.debug("sent %d bytes to %s", len(payload), self._peer)
                    event = await self._next_frame()
            except TimeoutError:
                self._abort()
                raise MLLPTimeout(f"no answer from {self._peer} within {timeout}s") from None
            except asyncio.CancelledError:
                self._abort()
                raise
            except OSError as exc:
                self._abort()
                raise MLLPConnectionClosed(f"connection to {self._peer} lost: {exc}") from exc
        if isinstance(event, OversizedFrame):
            raise MLLPFrameTooLarge(event.size, self._max_frame_size)
        return event.payload

    async def _next_frame(self) -> Frame | OversizedFrame:
        while not self._received:
            data = await self._reader.read(READ_SIZE)
            if not data:
                self._abort()
                raise MLLPConnectionClosed(f"connection closed by {self._peer}")
            for event in self._decoder.feed(data):
                if isinstance(event, DiscardedBytes):
                    logger.warning(
                        "discarded %d bytes from %s (%s)", event.count, self._peer, event.reason
                    )
                else:
                    self._received.append(event)
        return self._received.popleft()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await self._writer.wait_closed()
        except (OSError, TimeoutError):
            self._writer.transport.abort()

    def _abort(self) -> None:
        self._closed = True
        self._writer.transport.abort()

    async def __aenter__(self) -> MLLPClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _describe_peer(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)
