"""An asyncio MLLP client: send one message on an MLLPConnection (connection.py), take the
next frame as its answer."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module

from pamfr.transport.codec import OversizedFrame
from pamfr.transport.connection import MLLPConnection

logger = logging.getLogger(__name__)


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
        self._conn = MLLPConnection(reader, writer, max_frame_size=max_frame_size)
        self._writer = writer  # raw bytes, outside any frame (tests write half frames with it)
        self._max_frame_size = max_frame_size
        self._lock = asyncio.Lock()
        self._peer = self._conn.peer

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
            if self._conn.closed:
                raise MLLPConnectionClosed(f"connection to {self._peer} is closed")
            unsolicited = self._conn.drop_pending()
            if unsolicited:
                logger.warning("dropping %d unsolicited frame(s) from %s", unsolicited, self._peer)
            try:
                async with asyncio.timeout(timeout):
                    self._conn.write_frame(payload)
                    await self._conn.drain()
                    logger.debug("sent %d bytes to %s", len(payload), self._peer)
                    event = await self._conn.next_frame()
            except TimeoutError:
                self._abort()
                raise MLLPTimeout(f"no answer from {self._peer} within {timeout}s") from None
            except asyncio.CancelledError:
                self._abort()
                raise
            except OSError as exc:
                self._abort()
                raise MLLPConnectionClosed(f"connection to {self._peer} lost: {exc}") from exc
            if event is None:
                self._abort()
                raise MLLPConnectionClosed(f"connection closed by {self._peer}")
        if isinstance(event, OversizedFrame):
            raise MLLPFrameTooLarge(event.size, self._max_frame_size)
        return event.payload

    async def close(self) -> None:
        await self._conn.close()

    def _abort(self) -> None:
        self._conn.abort()

    async def __aenter__(self) -> MLLPClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
