"""A thin asyncio MLLP server: each accepted stream is an MLLPConnection (connection.py)
whose frames are answered one by one, in order, by the FrameHandler."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import time
from dataclasses import dataclass
from typing import Protocol

from pamfr.transport.access import PeerFilter
from pamfr.transport.codec import Frame, OversizedFrame
from pamfr.transport.connection import MLLPConnection, Peer, close_writer, peer_of

logger = logging.getLogger(__name__)

__all__ = ["FrameHandler", "MLLPServer", "Peer", "ServerCounters", "ServerLimits"]


class ServerCounters(Protocol):
    """What the server reports (pamfr.service.metrics.Metrics implements it)."""

    def connection_refused(self, reason: str) -> None: ...

    def ack_sent(self, arrived: float) -> None: ...


class _NotCounted:
    def connection_refused(self, reason: str) -> None:
        pass

    def ack_sent(self, arrived: float) -> None:
        pass


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
    # connections one address may hold open, so that one peer cannot take them all (the
    # daemon sets [server] max_connections_per_peer; None: no cap)
    max_connections_per_peer: int | None = None
    # seconds a new connection has to complete its first frame
    first_frame_timeout: float = 30.0


@dataclass(eq=False)
class _Served:
    """A connection being served, and how many of its frames were handled."""

    conn: MLLPConnection
    handled: int = 0


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
        metrics: ServerCounters | None = None,
    ) -> None:
        self._handler = handler
        self.metrics: ServerCounters = metrics if metrics is not None else _NotCounted()
        # Replaced as a whole on a configuration reload; read at each new connection.
        self.peer_filter = peer_filter or PeerFilter()
        self._host = host
        self._port = port
        self._limits = limits if limits is not None else ServerLimits()
        self._ssl = ssl
        self._server: asyncio.Server | None = None
        self._connections: set[_Served] = set()
        self._per_peer: dict[str, int] = {}
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
        for served in self._connections:
            if served.conn.reading:
                served.conn.stop_reading()
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
        peer = peer_of(writer)
        if self._stopping:
            await close_writer(writer)
            return
        if not self.peer_filter.allows(peer.host):
            logger.warning("connection from %s refused: address not in the allow-list", peer)
            self.metrics.connection_refused("allow_list")
            await close_writer(writer)
            return
        if len(self._connections) >= self._limits.max_connections:
            logger.warning(
                "connection from %s refused: %d connections open (max %d)",
                peer,
                len(self._connections),
                self._limits.max_connections,
            )
            self.metrics.connection_refused("max_connections")
            await close_writer(writer)
            return
        held = self._per_peer.get(peer.host, 0)
        cap = self._limits.max_connections_per_peer
        if cap is not None and held >= cap:
            logger.warning(
                "connection from %s refused: %d connections open from that address (max %d)",
                peer,
                held,
                cap,
            )
            self.metrics.connection_refused("max_connections_per_peer")
            await close_writer(writer)
            return
        served = _Served(MLLPConnection(reader, writer, max_frame_size=self._limits.max_frame_size))
        conn = served.conn
        self._connections.add(served)
        self._per_peer[peer.host] = held + 1
        logger.info("connection from %s opened", peer)
        try:
            await self._serve(served)
        except _CloseConnection:
            pass
        except OSError as exc:
            logger.info("connection from %s lost: %s", peer, exc)
        except asyncio.CancelledError:
            conn.abort()
            raise
        finally:
            self._connections.discard(served)
            left = self._per_peer.pop(peer.host, 1) - 1
            if left > 0:
                self._per_peer[peer.host] = left
            await conn.close()
            if conn.discarded:
                logger.warning(
                    "connection from %s closed (%d messages handled, %d bytes discarded)",
                    peer,
                    served.handled,
                    conn.discarded,
                )
            else:
                logger.info("connection from %s closed (%d messages handled)", peer, served.handled)

    async def _serve(self, served: _Served) -> None:
        """Read, decode, answer each frame before reading on.

        Two clocks close a connection that makes no progress, whatever bytes it sends: no
        complete frame for ``idle_timeout`` (silence, or junk outside frames; the first frame
        within ``first_frame_timeout``), and a frame started but not finished within
        ``frame_timeout`` (slowloris; abandoning it for a new start block does not restart
        the clock).
        """
        limits = self._limits
        conn = served.conn
        loop = asyncio.get_running_loop()
        first_wait = min(limits.first_frame_timeout, limits.idle_timeout)
        idle_deadline = loop.time() + first_wait
        frame_deadline: float | None = None
        while not self._stopping:
            try:
                deadline = idle_deadline if frame_deadline is None else frame_deadline
                async with asyncio.timeout_at(deadline):
                    frames = await conn.read_frames()
            except TimeoutError:
                if frame_deadline is not None:
                    logger.warning(
                        "%s: frame not finished within %.1fs (%d bytes buffered); closing",
                        conn.peer,
                        limits.frame_timeout,
                        conn.buffered,
                    )
                elif served.handled == 0:
                    logger.warning(
                        "%s: no message within %.1fs of connecting; closing", conn.peer, first_wait
                    )
                else:
                    logger.info("%s: no message for %.1fs; closing", conn.peer, limits.idle_timeout)
                return
            arrived = time.perf_counter()
            if frames is None:
                if conn.in_frame:
                    logger.warning(
                        "%s: connection ended inside a frame (%d bytes dropped)",
                        conn.peer,
                        conn.buffered,
                    )
                return
            for event in frames:
                await self._answer(served, event, arrived)
            completed = bool(frames)
            if completed:
                idle_deadline = loop.time() + limits.idle_timeout
            if not conn.in_frame:
                frame_deadline = None
            elif frame_deadline is None or completed:
                frame_deadline = loop.time() + limits.frame_timeout

    async def _answer(self, served: _Served, event: Frame | OversizedFrame, arrived: float) -> None:
        """One answer per frame: the handler's, written before the next frame is read."""
        conn = served.conn
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
        served.handled += 1
        if answer is None:
            return
        conn.write_frame(answer)
        self.metrics.ack_sent(arrived)
        try:
            async with asyncio.timeout(self._limits.idle_timeout):
                await conn.drain()
        except TimeoutError:
            logger.warning("%s: peer is not reading its answers; closing", conn.peer)
            # Do not wait for answers that will never be read to be flushed: drop them now.
            conn.abort()
            raise _CloseConnection() from None
