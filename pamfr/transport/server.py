"""A thin asyncio MLLP server around :class:`MLLPDecoder`."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from dataclasses import dataclass
from typing import Protocol

from pamfr.metrics import Metrics
from pamfr.transport.access import PeerFilter
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


@dataclass(frozen=True, slots=True)
class Peer:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class FrameHandler(Protocol):
    async def on_frame(self, payload: bytes, peer: Peer) -> bytes | None:
        """Return the ACK payload (unframed), or None to answer nothing."""
        ...

    async def on_oversized(self, head: bytes, size: int, peer: Peer) -> bytes | None:
        """Answer a frame whose payload was dropped because it exceeded the size limit."""
        ...


@dataclass
class ServerLimits:
    max_frame_size: int = 1024 * 1024
    idle_timeout: float = 300.0
    frame_timeout: float = 60.0
    max_connections: int = 256
    shutdown_grace: float = 30.0


@dataclass(eq=False)
class _Connection:
    peer: Peer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    handled: int = 0
    reading: bool = False
    discarded: int = 0  # bytes that belonged to no frame
    discard_logged: bool = False

    def stop_reading(self) -> None:
        """Make a pending read return what is already buffered, then EOF."""
        # Pausing first guarantees the protocol will not feed data after our EOF.
        self.writer.transport.pause_reading()
        self.reader.feed_eof()


class _CloseConnection(Exception):
    pass


class MLLPServer:
    def __init__(
        self,
        handler: FrameHandler,
        host: str = "127.0.0.1",
        port: int = 2575,
        limits: ServerLimits | None = None,
        ssl: ssl_module.SSLContext | None = None,
        peer_filter: PeerFilter | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._handler = handler
        self.metrics = metrics if metrics is not None else Metrics()
        # Replaced as a whole on a configuration reload; read at each new connection.
        self.peer_filter = peer_filter or PeerFilter()
        self._host = host
        self._port = port
        self._limits = limits if limits is not None else ServerLimits()
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._closed: asyncio.Event | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return self._host

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def accepting(self) -> bool:
        """The listener is open and takes new connections."""
        return self._server is not None and self._server.is_serving() and not self._stopping

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._closed = asyncio.Event()
        self._server = await asyncio.start_server(
            self._on_connection,
            self._host,
            self._port,
            ssl=self._ssl,
            backlog=max(100, self._limits.max_connections),
        )
        self._port = self._server.sockets[0].getsockname()[1]
        logger.info("MLLP server listening on %s:%d", self._host, self._port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._closed is not None
        await self._closed.wait()

    async def close(self) -> None:
        """Stop accepting, let connections answer the frames already received, close them."""
        if self._server is None:
            return
        assert self._closed is not None
        if self._stopping:
            await self._closed.wait()
            return
        self._stopping = True
        self._server.close()
        # Let connections accepted in this very loop iteration start, so they are waited for.
        await asyncio.sleep(0)
        for conn in self._connections:
            if conn.reading:
                conn.stop_reading()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=self._limits.shutdown_grace)
            if pending:
                logger.warning(
                    "shutdown grace of %.1fs expired; aborting %d connection(s)",
                    self._limits.shutdown_grace,
                    len(pending),
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        await self._server.wait_closed()
        self._closed.set()
        logger.info("MLLP server on %s:%d closed", self._host, self._port)

    async def __aenter__(self) -> MLLPServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        # asyncio keeps only a weak reference to the tasks running this callback.
        self._tasks.add(task)
        try:
            await self._accept(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer_of(writer)
        if self._stopping:
            await _close_writer(writer)
            return
        if not self.peer_filter.allows(peer.host):
            logger.warning("connection from %s refused: address not in the allow-list", peer)
            self.metrics.connection_refused("allow_list")
            await _close_writer(writer)
            return
        if len(self._connections) >= self._limits.max_connections:
            logger.warning(
                "connection from %s refused: %d connections open (max %d)",
                peer,
                len(self._connections),
                self._limits.max_connections,
            )
            self.metrics.connection_refused("max_connections")
            await _close_writer(writer)
            return
        conn = _Connection(peer, reader, writer)
        self._connections.add(conn)
        logger.info("connection from %s opened", peer)
        try:
            await self._serve(conn)
        except _CloseConnection:
            pass
        except OSError as exc:
            logger.info("connection from %s lost: %s", peer, exc)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        finally:
            self._connections.discard(conn)
            await _close_writer(writer)
            if conn.discarded:
                logger.warning(
                    "connection from %s closed (%d messages handled, %d bytes discarded)",
                    peer,
                    conn.handled,
                    conn.discarded,
                )
            else:
                logger.info("connection from %s closed (%d messages handled)", peer, conn.handled)

    async def _serve(self, conn: _Connection) -> None:
        """Read, decode, answer each frame before reading on.

        Two clocks close a connection that makes no progress, whatever bytes it sends: no
        complete frame for ``idle_timeout`` (silence, or junk outside frames), and a frame
        started but not finished within ``frame_timeout`` (slowloris; abandoning it for a new
        start block does not restart the clock).
        """
        limits = self._limits
        loop = asyncio.get_running_loop()
        decoder = MLLPDecoder(limits.max_frame_size)
        idle_deadline = loop.time() + limits.idle_timeout
        frame_deadline: float | None = None
        while not self._stopping:
            conn.reading = True
            try:
                deadline = idle_deadline if frame_deadline is None else frame_deadline
                async with asyncio.timeout_at(deadline):
                    data = await conn.reader.read(READ_SIZE)
            except TimeoutError:
                if frame_deadline is not None:
                    logger.warning(
                        "%s: frame not finished within %.1fs (%d bytes buffered); closing",
                        conn.peer,
                        limits.frame_timeout,
                        decoder.buffered,
                    )
                else:
                    logger.info("%s: no message for %.1fs; closing", conn.peer, limits.idle_timeout)
                return
            finally:
                conn.reading = False
            arrived = time.perf_counter()
            if not data:
                if decoder.in_frame:
                    logger.warning(
                        "%s: connection ended inside a frame (%d bytes dropped)",
                        conn.peer,
                        decoder.buffered,
                    )
                return
            completed = False
            for event in decoder.feed(data):
                if isinstance(event, DiscardedBytes):
                    conn.discarded += event.count
                    # One warning per connection: a peer sending junk must not flood the log.
                    level = logging.DEBUG if conn.discard_logged else logging.WARNING
                    conn.discard_logged = True
                    logger.log(
                        level, "%s: discarded %d bytes (%s)", conn.peer, event.count, event.reason
                    )
                else:
                    completed = True
                    await self._answer(conn, event, arrived)
            if completed:
                idle_deadline = loop.time() + limits.idle_timeout
            if not decoder.in_frame:
                frame_deadline = None
            elif frame_deadline is None or completed:
                frame_deadline = loop.time() + limits.frame_timeout

    async def _answer(
        self, conn: _Connection, event: Frame | OversizedFrame, arrived: float
    ) -> None:
        try:
            if isinstance(event, Frame):
                logger.debug("%s: frame of %d bytes", conn.peer, len(event.payload))
                answer = await self._handler.on_frame(event.payload, conn.peer)
            else:
                logger.warning(
                    "%s: frame of %d bytes exceeds the limit of %d bytes",
                    conn.peer,
                    event.size,
                    self._limits.max_frame_size,
                )
                answer = await self._handler.on_oversized(event.head, event.size, conn.peer)
        except Exception:
            logger.exception("%s: frame handler failed; closing this connection", conn.peer)
            raise _CloseConnection() from None
        conn.handled += 1
        if answer is None:
            return
        conn.writer.write(encode_frame(answer))
        self.metrics.ack_sent(arrived)
        try:
            async with asyncio.timeout(self._limits.idle_timeout):
                await conn.writer.drain()
        except TimeoutError:
            logger.warning("%s: peer is not reading its answers; closing", conn.peer)
            # Do not wait for answers that will never be read to be flushed: drop them now.
            conn.writer.transport.abort()
            raise _CloseConnection() from None


def _peer_of(writer: asyncio.StreamWriter) -> Peer:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return Peer(str(peername[0]), int(peername[1]))
    return Peer(str(peername or "unknown"), 0)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT):
            await writer.wait_closed()
    except (OSError, TimeoutError):
        writer.transport.abort()
