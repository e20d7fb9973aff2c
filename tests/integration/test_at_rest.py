"""Health data at rest: the modes of what pamfr creates, the warning on an exposed store,
and what a purge leaves behind (real stores, real files, real processes)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select

from pamfr.hl7.samples import Person, message
from pamfr.path.answers import AR_RAW_KEPT
from pamfr.path.receiver import Receiver
from pamfr.store.filemodes import private_dir
from pamfr.store.schema import history
from pamfr.store.schema import message as message_table
from tests.helpers import send, start_daemon

MARKER = "ZZSECRETBIRTHNAMEZZ"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def with_umask_022(*command: str, **kw) -> subprocess.CompletedProcess:
    """A pamfr command started as a shell would, under the common umask 022."""
    return subprocess.run(
        [sys.executable, "-m", "pamfr", *command],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: os.umask(0o022),
        **kw,
    )


def test_private_dir_makes_every_missing_folder_the_owner_s_only(tmp_path):
    # what db.py uses for pamfr's default folder (any other folder must already exist)
    old = os.umask(0o022)
    try:
        private_dir(tmp_path / "var" / "store")
    finally:
        os.umask(old)
    assert mode(tmp_path / "var" / "store") == 0o700 and mode(tmp_path / "var") == 0o700


def test_store_files_and_backup_are_the_owner_s_only(tmp_path):
    folder = tmp_path / "var" / "store"
    folder.mkdir(parents=True)  # a store's folder must exist, but pamfr's default one
    url = f"sqlite:///{folder / 'pamfr.db'}"
    old = os.umask(0o022)
    try:  # the daemon inherits the umask of whoever started it
        daemon = start_daemon(
            url, tmp_path / "serve.log", env={"PAMFR_RECEIVER_PARSE_WORKERS": "0"}
        )
    finally:
        os.umask(old)
    try:
        acks = send(daemon.port, [message("A28", Person("REST1", birth_name=MARKER), "R1")])
        assert acks[0].code == "AA"
        for name in ("pamfr.db", "pamfr.db-wal", "pamfr.db-shm"):
            assert mode(folder / name) == 0o600, name
        backup = tmp_path / "copy.db"
        done = with_umask_022("db", "backup", str(backup), "--db", url)
        assert done.returncode == 0, done.stderr
        assert mode(backup) == 0o600
    finally:
        assert daemon.stop() == 0
    assert "WARNING" not in daemon.log()


def test_upgrade_creates_a_private_store_and_an_exposed_one_is_warned(tmp_path):
    (tmp_path / "new").mkdir()
    url = f"sqlite:///{tmp_path / 'new' / 'pamfr.db'}"
    done = with_umask_022("db", "upgrade", "--db", url)
    assert done.returncode == 0, done.stderr
    store = tmp_path / "new" / "pamfr.db"
    assert mode(store) == 0o600
    store.chmod(0o644)
    daemon = start_daemon(url, tmp_path / "serve.log", env={"PAMFR_RECEIVER_PARSE_WORKERS": "0"})
    assert daemon.stop() == 0
    assert f"{store} is open to group and others (mode 0644)" in daemon.log()
    assert "chmod 600" in daemon.log()


def _age_all(engine, days: int) -> None:
    old = datetime.now(UTC) - timedelta(days=days)
    with engine.begin() as conn:
        conn.execute(message_table.update().values(received_at=old))
        conn.execute(history.update().values(at=old))


def test_a_purge_leaves_no_copy_of_the_raw_bytes_in_the_sqlite_files(sqlite_url, engine):
    receiver = Receiver(engine)
    for n in range(20):
        text = message("A28", Person(f"SD{n}", birth_name=MARKER), f"SD{n}")
        assert receiver.handle(text.encode()).code == "AA"
    path = Path(engine.url.database)
    _age_all(engine, 40)
    # the marker is also in the patient rows and the history: only the raw copies are counted
    before = path.read_bytes().count(MARKER.encode()) + _wal(path).count(MARKER.encode())
    done = with_umask_022("purge", "--older-than", "30", "--db", sqlite_url)
    assert done.returncode == 0, done.stderr
    after = path.read_bytes().count(MARKER.encode())
    assert before - after >= 20  # the 20 raw copies are gone, not left in free pages
    assert _wal(path) == b""  # checkpointed and truncated


def _wal(path: Path) -> bytes:
    wal = path.with_name(path.name + "-wal")
    return wal.read_bytes() if wal.exists() else b""


def test_refused_frames_keep_their_head_only_and_are_purged_like_the_others(db_url, engine):
    big = message("A28", Person("AR1"), "AR-BIG").replace("MSH|", "MSH|", 1)
    big = big.replace("ADT^A28^ADT_A05", "ADT^A99^ADT_A05") + "\rNTE|1||" + "x" * 100_000
    answered = Receiver(engine).handle(big.encode())
    assert answered.code == "AR"
    with engine.connect() as conn:
        row = conn.execute(select(message_table).where(message_table.c.control_id == "AR-BIG"))
        logged = row.mappings().one()
    assert len(logged["raw"]) == AR_RAW_KEPT and logged["raw_size"] == len(big.encode())
    assert bytes(logged["raw"]) == big.encode()[:AR_RAW_KEPT]
    _age_all(engine, 40)
    done = with_umask_022("purge", "--older-than", "30", "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert "raw bytes of 1 message(s)" in done.stdout
    with engine.connect() as conn:
        raw = conn.execute(select(message_table.c.raw)).scalar_one()
    assert bytes(raw) == b""


def test_history_of_patients_merged_away_long_ago_is_purged_on_request(db_url, engine, tmp_path):
    receiver = Receiver(engine)
    for text in (
        message("A28", Person("HM1"), "HM1"),
        message("A28", Person("HM2", birth_name=MARKER), "HM2"),
        message("A40", Person("HM1"), "HM3", prior_ipp="HM2"),
    ):
        assert receiver.handle(text.encode()).code == "AA"
    with engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(history)).scalar_one()
    _age_all(engine, 400)
    config = tmp_path / "pamfr.toml"
    config.write_text("[retention]\nraw_messages_days = 30\nmerged_history_days = 365\n")
    dry = with_umask_022("--config", str(config), "purge", "--dry-run", "--db", db_url)
    assert dry.returncode == 0, dry.stderr
    assert "history row(s) of 1 patient(s) merged away" in dry.stdout
    done = with_umask_022("--config", str(config), "purge", "--db", db_url)
    assert done.returncode == 0, done.stderr
    with engine.connect() as conn:
        left = conn.execute(select(history.c.changes)).scalars().all()
    assert 0 < len(left) < total and not any(MARKER in c for c in left)
    show = with_umask_022("patient", "history", "--ipp", "HM1", "--db", db_url)
    assert show.returncode == 0 and "A40" in show.stdout
