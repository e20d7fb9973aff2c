"""The HTTP port's connections send each write at once (TCP_NODELAY): with Nagle's algorithm,
an answer's body waited for the client's acknowledgement of its headers, which a keep-alive
client delays (40 ms on Linux), so every request but a connection's first took 40 ms more."""

from __future__ import annotations

import asyncio
import socket

from pamfr.http.app import build_app
from pamfr.http.server import HttpServer


def test_the_http_listener_has_nodelay_and_answers_keep_alive_requests():
    async def check() -> tuple[int, bytes]:
        server = HttpServer(build_app(None, None), "127.0.0.1", 0)
        await server.start()
        try:
            listening = server._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            writer.write(request * 2)  # two requests on one connection: both answered
            await writer.drain()
            answers = b""
            while answers.count(b'{"status":"ok"}') < 2:
                answers += await asyncio.wait_for(reader.read(4096), 10)
            writer.close()
            return listening, answers
        finally:
            await server.close()

    listening, answers = asyncio.run(check())
    assert listening != 0  # Linux: the accepted connections inherit the listener's option
    assert answers.count(b"HTTP/1.1 200 OK") == 2
