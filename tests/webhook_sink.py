"""A real HTTP receiver of webhooks on 127.0.0.1 (http.server in a thread), as a product
consuming pamfr's change feed would run one: it records what it is sent and checks the
signature and its timestamp; a test makes it slow, failing, down for a while, answering a
huge body or dripping one."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_AGE = 300  # seconds: an older X-Pamfr-Timestamp is a replay


def verified(secret: bytes, timestamp: str, signature: str, body: bytes) -> bool:
    """What a product checks, as the README shows: the signature of "<timestamp>.<body>",
    and a timestamp of the last 5 minutes."""
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > MAX_AGE:
        return False
    signed = timestamp.encode() + b"." + body
    expected = "sha256=" + hmac.new(secret, signed, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@dataclass
class Received:
    event_id: int
    event: dict
    signed: bool  # the signature matches the body and the secret


class WebhookSink:
    """Answers `status` after `delay` seconds; `stop()` and `start()` take it down and up on
    the same port."""

    def __init__(
        self,
        secret: str,
        status: int = 204,
        delay: float = 0.0,
        answer_size: int = 0,
        drip: float = 0.0,
    ) -> None:
        self.secret = secret.encode()
        self.status = status
        self.delay = delay
        self.answer_size = answer_size  # bytes of body in each answer (0: none)
        self.drip = drip  # seconds between the bytes of an endless answer (0: no drip)
        self.received: list[Received] = []
        self.attempts = 0
        self._lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink._lock:
                    sink.attempts += 1
                if sink.delay:
                    time.sleep(sink.delay)
                status = sink.status
                if 200 <= status < 300:
                    signed = verified(
                        sink.secret,
                        self.headers.get("X-Pamfr-Timestamp", ""),
                        self.headers.get("X-Pamfr-Signature", ""),
                        body,
                    )
                    event = json.loads(body)
                    with sink._lock:
                        sink.received.append(
                            Received(int(self.headers["X-Pamfr-Event-Id"]), event, signed)
                        )
                self.send_response(status)
                if sink.answer_size:  # a huge answer, sent as fast as the socket takes it
                    self.send_header("Content-Length", str(sink.answer_size))
                    self.end_headers()
                    block = b"x" * 65536
                    with contextlib.suppress(OSError):
                        for _ in range(sink.answer_size // len(block)):
                            self.wfile.write(block)
                    return
                if sink.drip:  # a byte of body every `drip` seconds, for ever
                    self.send_header("Content-Length", "1000000")
                    self.end_headers()
                    with contextlib.suppress(OSError):
                        while sink.drip:
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(sink.drip)
                    return
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def ids(self) -> list[int]:
        with self._lock:
            return [r.event_id for r in self.received]

    def wait_for(self, wanted: set[int], timeout: float = 60.0) -> list[int]:
        """The ids received, once every one of `wanted` has come (AssertionError otherwise)."""
        deadline = time.monotonic() + timeout
        while True:
            ids = self.ids()
            if wanted <= set(ids):
                return ids
            if time.monotonic() > deadline:
                missing = sorted(wanted - set(ids))[:10]
                raise AssertionError(f"not delivered within {timeout}s: {missing}...")
            time.sleep(0.05)
