"""`pamfr serve` as a real process of its own session, so a test can SIGKILL it like a crash
and then clean up what it left (its parse workers) without touching anything else."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pamfr.transport.client import MLLPClient
from tests.helpers import TEST_TOKENS

_LISTENING = re.compile(r"pamfr listening on [^ ]+:(\d+)")


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        """The first match of `pattern` in the log after offset `start`, waiting for it."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.log(), start)
            if found:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not logged within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the daemon's process group (parse workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


def serve(
    db_url: str,
    log_path: Path,
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Served:
    """Start `pamfr [--config FILE] serve --port 0 --db URL ARGS`; return once it listens."""
    command = [sys.executable, "-m", "pamfr"]
    if config is not None:
        command += ["--config", str(config)]
    command += ["serve", "--port", "0", "--db", db_url, *args]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAMFR_")}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**clean, "PAMFR_HTTP_TOKENS": TEST_TOKENS, **(env or {})},
            start_new_session=True,
        )
    served = Served(proc, 0, Path(log_path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _LISTENING.search(served.log())
        if found:
            served.port = int(found.group(1))
            return served
        if proc.poll() is not None:
            served.kill_group()
            raise RuntimeError(f"pamfr serve exited {proc.returncode}:\n{served.log()}")
        time.sleep(0.05)
    served.kill_group()
    raise RuntimeError(f"pamfr serve did not listen within {timeout}s:\n{served.log()}")


async def connect(
    port: int,
    *,
    source: str | None = None,
    tls: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> MLLPClient:
    """An MLLP client on 127.0.0.1:port, from the local address `source` if given."""
    local_addr = (source, 0) if source else None
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, local_addr=local_addr
        )
    return MLLPClient(reader, writer)
