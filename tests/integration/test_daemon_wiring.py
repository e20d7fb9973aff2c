"""The daemon's wiring (service/daemon.py): whatever ends `run_daemon` — a listener that
cannot start halfway through the start-up, an exception once everything serves — what it
opened is closed: the SQLite file has no handle left in this process, both ports can be bound
again at once, no writer, feed or parse thread and no parse worker outlives it.

In this process (not `pamfr serve`), so that /proc/self/fd shows what the daemon left open."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from pamfr.service.daemon import run_daemon
from pamfr.settings.config import Settings
from tests.helpers import TEST_TOKEN

SECRET = "s3cret-s3cret-s3cret-s3cret-s3cret"


@pytest.fixture(autouse=True)
def _hermetic(monkeypatch):
    """No PAMFR_* variable of the caller in the settings; the GIL switch interval and the
    loop's signal handlers the daemon sets are put back."""
    for name in [n for n in os.environ if n.startswith("PAMFR_")]:
        monkeypatch.delenv(name)
    interval = sys.getswitchinterval()
    yield
    sys.setswitchinterval(interval)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    """A listener could start on 127.0.0.1:port (as asyncio's would, SO_REUSEADDR)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def _open_files(store: Path) -> list[str]:
    """The store's files (the database, its -wal and -shm) this process holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed since the listing
            continue
        if target.startswith(str(store)):
            found.append(target)
    return found


def _daemon_threads() -> list[str]:
    prefixes = ("pamfr-writer", "pamfr-feed", "pamfr-parse", "pamfr-close")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


def _settings(sqlite_url: str, mllp_port: int, http_port: int) -> Settings:
    """Every part on: the MLLP listener, one parse worker, the HTTP port with /fhir and
    /events, a webhook subscriber with the FHIR resource (its URL refuses: it fails)."""
    return Settings(
        server={"port": mllp_port},
        database={"url": sqlite_url},
        receiver={"parse_workers": 1},
        http={"listen": f"127.0.0.1:{http_port}", "fhir": True, "tokens": {"tests": TEST_TOKEN}},
        webhooks=[
            {
                "name": "sub",
                "url": f"http://127.0.0.1:{_free_port()}/hook",
                "secret": SECRET,
                "include_resource": True,
            }
        ],
        feed={"poll_interval": 0.1},
    )


def _assert_all_closed(store: Path, *ports: int) -> None:
    deadline = time.monotonic() + 5  # a thread seen ending, a worker reaped
    while time.monotonic() < deadline and (_daemon_threads() or multiprocessing.active_children()):
        time.sleep(0.05)
    assert _open_files(store) == []
    for port in ports:
        assert _bindable(port), f"port {port} still has a listener"
    assert _daemon_threads() == []
    assert multiprocessing.active_children() == []


def test_an_exception_once_serving_closes_every_part(sqlite_url, tmp_path):
    """The daemon's task cancelled once every part serves and the webhook delivery has read
    the store (its engines hold the file): the exception a bug would raise in its loop."""
    store = tmp_path / "pamfr.db"
    assert _open_files(store) == []
    mllp_port, http_port = _free_port(), _free_port()
    settings = _settings(sqlite_url, mllp_port, http_port)

    async def scenario() -> None:
        serving = asyncio.create_task(run_daemon(settings))
        deadline = time.monotonic() + 30
        while not (_open_files(store) and not _bindable(mllp_port) and not _bindable(http_port)):
            assert not serving.done(), serving.result()
            assert time.monotonic() < deadline, "the daemon did not serve in time"
            await asyncio.sleep(0.05)
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving

    asyncio.run(scenario())
    _assert_all_closed(store, mllp_port, http_port)


def test_an_http_port_taken_closes_what_was_started(sqlite_url, tmp_path, caplog):
    store = tmp_path / "pamfr.db"
    mllp_port = _free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        http_port = taken.getsockname()[1]
        settings = _settings(sqlite_url, mllp_port, http_port)
        with caplog.at_level(logging.INFO, logger="pamfr"):
            assert asyncio.run(run_daemon(settings)) == 2
    assert f"cannot listen on 127.0.0.1:{http_port} (http.listen)" in caplog.text
    assert "pamfr listening" not in caplog.text
    _assert_all_closed(store, mllp_port, http_port)
