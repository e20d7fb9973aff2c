"""Test helpers: a real pamfr MLLP server on 127.0.0.1 in a thread, ACK reading, CLI runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from signal import SIGTERM

from pamfr.ingest.sender import send_messages
from pamfr.path.pipeline import AsyncReceiver
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine
from pamfr.transport.server import MLLPServer, ServerLimits

# The bearer token every daemon a test starts accepts (the HTTP port denies by default).
TEST_TOKEN = "tests-0123456789abcdef"
TEST_TOKENS = json.dumps({"tests": TEST_TOKEN})
AUTHORIZATION = {"Authorization": f"Bearer {TEST_TOKEN}"}


@dataclass
class Ack:
    code: str
    control_id: str
    msh: list[str]
    errs: list[list[str]]
    raw: bytes

    @property
    def err_codes(self) -> list[str]:
        return [e[3].split("^")[0] for e in self.errs]

    @property
    def err_locations(self) -> list[str]:
        return [e[2] for e in self.errs]


def parse_ack(raw: bytes, encoding: str = "utf-8") -> Ack:
    """Fields of an ACK, split on its own field separator (MSH-1 echoes the sender's)."""
    text = raw.decode(encoding)
    sep = text[3] if text.startswith("MSH") and len(text) > 3 else "|"
    segments = [s.split(sep) for s in text.split("\r") if s]
    msh = next(s for s in segments if s[0] == "MSH")
    msa = next(s for s in segments if s[0] == "MSA")
    errs = [s for s in segments if s[0] == "ERR"]
    return Ack(msa[1], msa[2] if len(msa) > 2 else "", msh, errs, raw)


@contextmanager
def pamfr_server(db_url: str, limits: ServerLimits | None = None, **receiver_options):
    """The real receiver behind a real MLLP server, on a loop in a background thread;
    `receiver_options` are Receiver's (iti31_updates_identity=True...)."""
    engine = make_engine(db_url)
    handler = AsyncReceiver(Receiver(engine, **receiver_options))
    server = MLLPServer(handler, port=0, limits=limits)
    loop = asyncio.new_event_loop()
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        handler.close()
        engine.dispose()


def send(port: int, messages: list[bytes | str], timeout: float = 30.0) -> list[Ack]:
    payloads = [m.encode() if isinstance(m, str) else m for m in messages]
    raws = asyncio.run(send_messages("127.0.0.1", port, payloads, timeout=timeout))
    return [parse_ack(r) for r in raws]


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pamfr", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def show_json(db_url: str, *selector: str) -> dict:
    result = run_cli("patient", "show", *selector, "--db", db_url, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# What a process a test starts (`pamfr serve`, `pamfr api`) takes from this one's environment:
# what Python, the system and libpq need to run, never pamfr's configuration (PAMFR_*).
_PASSED_ON = (
    "PATH", "HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ",
    "PYTHONPATH", "VIRTUAL_ENV", "COVERAGE_PROCESS_START", "COVERAGE_FILE",
)  # fmt: skip


def child_env(settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a pamfr process a test starts, built from scratch: the variables
    above and libpq's (PG*) of this process, no configuration file, and `settings`."""
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ON or k.startswith("PG")}
    env["PAMFR_CONFIG"] = ""
    env.update(settings or {})
    return env


_LISTENING = re.compile(r"pamfr listening on [^ ]+:(\d+)")


@dataclass
class Daemon:
    """A `pamfr serve` started by start_daemon, in a session of its own, so a test can SIGKILL
    it like a crash and then clean up what it left (its parse workers) and nothing else."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    def log(self) -> str:
        return Path(self.log_path).read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, sig: int = SIGTERM, timeout: float = 30) -> int:
        """Send `sig` (SIGTERM) and wait: its exit code."""
        self.signal(sig)
        return self.proc.wait(timeout)

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


def start_daemon(
    db_url: str,
    log_path: Path | str,
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Daemon:
    """`pamfr [--config FILE] serve --port 0 --db URL ARGS` as a real process; returns once it
    listens. Its environment is child_env's: accepting TEST_TOKEN, then `env`
    (PAMFR_HTTP_TOKENS="" leaves the tokens to the configuration file)."""
    command = [sys.executable, "-m", "pamfr"]
    if config is not None:
        command += ["--config", str(config)]
    command += ["serve", "--port", "0", "--db", db_url, *args]
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=child_env({"PAMFR_HTTP_TOKENS": TEST_TOKENS, **(env or {})}),
            start_new_session=True,
        )
    daemon = Daemon(proc, 0, Path(log_path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = _LISTENING.search(daemon.log())
        if found:
            daemon.port = int(found.group(1))
            return daemon
        if proc.poll() is not None:
            daemon.kill_group()
            raise RuntimeError(f"pamfr serve exited {proc.returncode}:\n{daemon.log()}")
        time.sleep(0.05)
    daemon.kill_group()
    raise RuntimeError(f"pamfr serve did not listen within {timeout}s:\n{daemon.log()}")


def log_rows(db_url: str, *columns: str, order_by: str = "id") -> list[tuple]:
    """These columns of every row of the message log, in `order_by` order."""
    from sqlalchemy import select

    from pamfr.store.schema import message as message_table

    engine = make_engine(db_url)
    with engine.connect() as conn:
        query = select(*(message_table.c[c] for c in columns))
        rows = conn.execute(query.order_by(message_table.c[order_by])).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def stored_outcomes(db_url: str) -> list[tuple[str, str]]:
    """(control id, outcome) of every row of the message log, oldest first."""
    return log_rows(db_url, "control_id", "outcome")


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@contextmanager
def pamfr_api(db_url: str, log_path: Path, settings: dict[str, str]) -> Iterator[int]:
    """`pamfr api` on the store and a free loopback port, configured by `settings` (PAMFR_*
    variables) alone: child_env's environment, no configuration file. Yields
    its port; stops it at the end and checks that it exited cleanly."""
    env = child_env(settings)
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pamfr", "api", "--db", db_url, "--listen", "127.0.0.1:0"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"FHIR API on [^ ]+:(\d+)", log_path.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        assert port is not None, log_path.read_text()
        yield port
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
