"""A database outage: while several senders stream, the store goes away (PostgreSQL
refusing and killing connections, a SQLite file locked by another process, a full disk). The
daemon never sends AA for a message that is not in the store afterwards, answers AR 207
meanwhile (the GAM resends), keeps running and gives AA again by itself once the store is back.
"""

from __future__ import annotations

import asyncio
import errno
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from pamfr.store.db import upgrade
from tests.helpers import start_daemon
from tests.reliability.common import Incident, check_no_false_aa, own_pg_database, stream_through


def _report(name: str, figures: dict, windows) -> None:
    spans = ", ".join(
        f"{w.name}: {w.ended - w.began:.1f}s, AA again {w.recovered_after:.2f}s after"
        for w in windows
    )
    print(f"\n{name}: {figures}; {spans}")


def test_postgresql_outage_under_load(pg_server_url, tmp_path):
    with own_pg_database(pg_server_url) as (url, outage):
        admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
        name = url.rsplit("/", 1)[1]
        killing = threading.Event()

        def kill_backends_repeatedly() -> None:
            with admin.connect() as conn:
                while killing.is_set():
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                            " WHERE datname = :d"
                        ),
                        {"d": name},
                    )
                    time.sleep(0.05)

        killer: list[threading.Thread] = []

        def start_killing() -> None:
            killing.set()
            killer.append(threading.Thread(target=kill_backends_repeatedly))
            killer[0].start()

        def stop_killing() -> None:
            killing.clear()
            killer[0].join()

        daemon = start_daemon(url, tmp_path / "serve.log")
        try:
            record, windows = asyncio.run(
                stream_through(
                    daemon.port,
                    [
                        Incident(
                            "connections refused and terminated",
                            lambda: outage(True),
                            lambda: outage(False),
                            3.0,
                        ),
                        Incident("backends killed every 50 ms", start_killing, stop_killing, 2.0),
                    ],
                )
            )
            assert daemon.proc.poll() is None, "the daemon keeps running"
        finally:
            outage(False)
            killing.clear()
            code = daemon.stop()
            admin.dispose()
        assert code == 0
        figures = check_no_false_aa(url, record)
    _report("postgresql outage", figures, windows)
    assert record.ar207 > 0, "the senders were told to resend while the database was down"
    assert "database unavailable" in daemon.log()


_LOCK_HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def test_sqlite_file_locked_longer_than_busy_timeout(tmp_path):
    db = tmp_path / "pamfr.db"
    # The busy timeout is 1 s here (the pysqlite URL option; [database] sqlite_busy_timeout
    # once the daemon passes it to make_engine): the lock is held 4 s.
    url = f"sqlite:///{db}?timeout=1"
    upgrade(url)
    holder: list[subprocess.Popen] = []

    def lock() -> None:
        proc = subprocess.Popen(
            [sys.executable, "-c", _LOCK_HOLDER, str(db)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        holder.append(proc)
        assert proc.stdout.readline().strip() == "locked"

    def unlock() -> None:
        proc = holder.pop()
        proc.communicate("\n", timeout=10)
        assert proc.returncode == 0

    daemon = start_daemon(
        url, tmp_path / "serve.log", env={"PAMFR_DATABASE_SQLITE_BUSY_TIMEOUT": "1"}
    )
    try:
        record, windows = asyncio.run(
            stream_through(
                daemon.port,
                [Incident("file locked by another process", lock, unlock, 4.0)],
                senders=3,
            )
        )
        assert daemon.proc.poll() is None, "the daemon keeps running"
    finally:
        for proc in holder:
            proc.kill()
        code = daemon.stop()
    assert code == 0
    figures = check_no_false_aa(url, record)
    _report("sqlite locked", figures, windows)
    assert record.ar207 > 0, "the senders were told to resend while the file was locked"
    assert "database is locked" in daemon.log()


class _DiskFull:
    """Make the store's disk full, then free it: a small tmpfs filled by another file when
    this test may mount one, else a file size limit (RLIMIT_FSIZE) put on the daemon."""

    def __init__(self, folder: Path, mode: str) -> None:
        self.folder = folder
        folder.mkdir()
        self.mode = mode
        if mode == "tmpfs":
            mounted = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(folder)],
                capture_output=True,
                text=True,
            )
            if mounted.returncode != 0:
                print(f"\ncannot mount a tmpfs ({mounted.stderr.strip()}): using RLIMIT_FSIZE")
                self.mode = "rlimit"
        self.filler = folder / "filler"
        self.pid: int | None = None

    def fill(self) -> None:
        if self.mode == "tmpfs":
            chunk = b"\0" * 65536
            # Unbuffered: a buffered file would flush its unwritten tail again on close and
            # raise ENOSPC out of the `with`.
            with open(self.filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        else:
            assert self.pid is not None
            # Writes past the store's current size fail with EFBIG (Python ignores SIGXFSZ).
            limit = (self.folder / "pamfr.db").stat().st_size + 65536
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    def free(self) -> None:
        if self.mode == "tmpfs":
            self.filler.unlink()
        else:
            unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, unlimited)

    def close(self) -> None:
        if self.mode == "tmpfs" and subprocess.run(["umount", str(self.folder)]).returncode:
            subprocess.run(["umount", "-l", str(self.folder)])


@pytest.mark.parametrize("mode", ["tmpfs", "rlimit"])
def test_sqlite_disk_full(tmp_path, mode):
    disk = _DiskFull(tmp_path / "disk", mode)
    try:
        url = f"sqlite:///{disk.folder / 'pamfr.db'}"
        upgrade(url)
        daemon = start_daemon(url, tmp_path / "serve.log")
        disk.pid = daemon.proc.pid
        try:
            record, windows = asyncio.run(
                stream_through(
                    daemon.port,
                    [Incident(f"disk full ({disk.mode})", disk.fill, disk.free, 2.0, True)],
                )
            )
            assert daemon.proc.poll() is None, "the daemon keeps running"
        finally:
            code = daemon.stop()
        assert code == 0
        figures = check_no_false_aa(url, record)
        integrity = create_engine(url)
        with integrity.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        integrity.dispose()
    finally:
        disk.close()
    _report(f"sqlite disk full ({disk.mode})", figures, windows)
    assert record.ar207 > 0
    log = daemon.log()
    assert "database or disk is full" in log or "disk I/O error" in log, log[-3000:]


def test_sqlite_busy_timeout_setting(tmp_path):
    """[database] sqlite_busy_timeout (make_engine's busy_timeout) wins over the URL's
    ?timeout=, which wins over the 30 s default."""
    from pamfr.store.db import make_engine

    url = f"sqlite:///{tmp_path / 'p.db'}"
    for engine_url, busy_timeout, expected in [
        (url, None, 30_000),
        (f"{url}?timeout=2", None, 2_000),
        (f"{url}?timeout=2", 0.5, 500),
    ]:
        engine = make_engine(engine_url, busy_timeout=busy_timeout)
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == expected
        engine.dispose()
