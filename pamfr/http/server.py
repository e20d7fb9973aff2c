"""uvicorn inside the daemon's event loop: the daemon owns the signals and the shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn would replace the daemon's SIGTERM/SIGINT handlers with its own.
        yield


class HttpServer:
    """Binds HOST:PORT itself (a bind error is the daemon's to report), then serves `app`."""

    def __init__(
        self, app: Starlette, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        self.host = host
        self.port = port
        config = uvicorn.Config(
            app,
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
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it

    async def close(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        await self._task
        if self._socket is not None:
            self._socket.close()
