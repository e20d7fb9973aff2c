"""uvicorn inside the daemon's event loop: the daemon owns the signals and the shutdown.

Bounded: at most `max_concurrency` requests at once (more get 503), request heads of 16 KiB
at most (h11), and a client that does not finish a request's headers within
`header_timeout` of connecting (or of its previous answer) is disconnected: uvicorn itself
only times out a connection idle between two requests, not one sending a request slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 16 * 1024  # bytes of a request line and its headers


class _HeadDeadline(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head."""

    header_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.info(
                "http: request headers not received within %.0fs; closing", self.header_timeout
            )
            self.transport.close()

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's head was read whole
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would replace the daemon's SIGTERM/SIGINT handlers with its own.
        yield


class HttpServer:
    """Binds HOST:PORT itself (a bind error is the daemon's to report), then serves `app`."""

    def __init__(
        self,
        app: Starlette,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        *,
        max_concurrency: int = 64,
        header_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        protocol = type("HeadDeadline", (_HeadDeadline,), {"header_timeout": header_timeout})
        config = uvicorn.Config(
            app,
            http=protocol,
            limit_concurrency=max_concurrency,
            h11_max_incomplete_event_size=MAX_REQUEST_HEAD,
            lifespan="off",
            log_config=None,  # the daemon's logging as it is
            access_log=False,  # request lines may carry query strings: not logged
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        config.load()
        config.ssl = tls  # pamfr's own context (pamfr.service.security.listener_tls), as for MLLP
        self._server = _Server(config)
        self._socket: socket.socket | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        """Listen (OSError if the address is taken or not ours), then serve in a task."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.create_server((self.host, self.port), family=family, backlog=128)
        # accepted connections inherit it: an answer's body is not held back (Nagle) until
        # the client acknowledges its headers, which a keep-alive client delays by 40 ms
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self._socket.getsockname()[1]
        # Inherited by each accepted socket: without it, a response written in two parts
        # (head, then a small body) waits for the client's delayed ACK, about 40 ms.
        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._socket.close()  # not served: the caller has nothing to close()
            self._task.result()  # raises what stopped it

    async def close(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        if self._socket is not None:
            self._socket.close()
