"""Retention (`pamfr purge`, the daemon's daily pass) and `pamfr db backup`, on real stores."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from pamfr.hl7.frame import Inbound
from pamfr.hl7.samples import Person, message
from pamfr.path.receiver import Receiver
from pamfr.service.daemon import purge_old_raw
from pamfr.service.metrics import Metrics
from pamfr.store.db import make_engine
from pamfr.store.schema import history, patient
from pamfr.store.schema import message as message_table
from tests.helpers import run_cli


def a28(ipp: str, control_id: str, **kw) -> bytes:
    return message("A28", Person(ipp=ipp, **kw), control_id).encode()


def rows(engine) -> dict[str, dict]:
    with engine.connect() as conn:
        found = conn.execute(select(message_table).order_by(message_table.c.id)).mappings()
        return {r["control_id"]: dict(r) for r in found}


def age(engine, control_id: str, days: float) -> None:
    with engine.begin() as conn:
        conn.execute(
            message_table.update()
            .where(message_table.c.control_id == control_id)
            .values(received_at=datetime.now(UTC) - timedelta(days=days))
        )


def histories(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(history)).scalar_one()


def test_purge_empties_old_raws_and_keeps_rows_acks_history(db_url, engine):
    receiver = Receiver(engine)
    assert receiver.handle(a28("P1", "OLD-AA")).code == "AA"
    assert receiver.handle(a28("P2", "OLD-AE", ins="123456789012345")).code == "AE"
    assert Receiver(engine, allowed_senders=["X"]).handle(a28("P3", "OLD-AR")).code == "AR"
    assert receiver.handle(a28("P4", "NEW-AA")).code == "AA"
    for control_id in ("OLD-AA", "OLD-AE", "OLD-AR"):
        age(engine, control_id, 40)
    age(engine, "NEW-AA", 29)
    before, history_rows = rows(engine), histories(engine)

    dry = run_cli("purge", "--older-than", "30", "--dry-run", "--db", db_url)
    assert dry.returncode == 0, dry.stderr
    assert "raw bytes of 3 message(s)" in dry.stdout and "would be purged" in dry.stdout
    assert rows(engine) == before

    done = run_cli("purge", "--older-than", "30", "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert "raw bytes of 3 message(s)" in done.stdout
    # Counts only in the log line, never a control id or identity.
    assert "retention: raw bytes of 3 message(s)" in done.stderr and "OLD-" not in done.stderr
    after = rows(engine)
    for control_id in ("OLD-AA", "OLD-AE", "OLD-AR"):  # an AR too: a GAM resends it soon
        row, was = after[control_id], before[control_id]
        assert row["raw"] == b"" and row["raw_purged_at"] is not None
        kept = ("outcome", "ack", "error_text", "raw_size", "dedup_key", "control_id")
        assert {k: row[k] for k in kept} == {k: was[k] for k in kept}
    assert after["NEW-AA"] == before["NEW-AA"]  # not old enough
    assert histories(engine) == history_rows
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(patient)).scalar_one() == 2

    # A purged message still answers its resend with the stored ACK.
    resend = receiver.handle(a28("P1", "OLD-AA"))
    assert resend.duplicate and resend.ack == before["OLD-AA"]["ack"]

    # A reprocess of the old AR made before the purge is a young row: kept.
    ar = before["OLD-AR"]
    again = receiver.commit([receiver.prepare(Inbound(ar["raw"], reprocess_of=ar["id"]))])[0]
    assert again.code == "AA"
    assert run_cli("purge", "--older-than", "30", "--db", db_url).returncode == 0
    with engine.connect() as conn:
        raws = dict(conn.execute(select(message_table.c.id, message_table.c.raw)).all())
    assert raws[again.message_id] == ar["raw"]


def test_daemon_retention_pass_purges_and_never_raises(sqlite_url, engine, tmp_path):
    Receiver(engine).handle(a28("D1", "DAY-OLD"))
    Receiver(engine).handle(a28("D2", "DAY-NEW"))
    age(engine, "DAY-OLD", 8)
    metrics = Metrics()
    result = purge_old_raw(engine, 7, metrics)
    assert result is not None and result.purged == 1
    assert rows(engine)["DAY-OLD"]["raw"] == b"" and rows(engine)["DAY-NEW"]["raw"] != b""
    assert purge_old_raw(engine, 7, metrics).purged == 0  # done once
    engine.dispose()
    broken = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no schema: the query fails
    assert purge_old_raw(broken, 7, metrics) is None
    broken.dispose()
    # Counted in /metrics: what was purged, and the pass that failed.
    sample = metrics.registry.get_sample_value
    assert sample("pamfr_raw_messages_purged_total") == 1
    assert sample("pamfr_purge_failures_total") == 1


def test_purge_takes_the_configured_age_and_refuses_without_one(sqlite_url, engine, tmp_path):
    Receiver(engine).handle(a28("C1", "CONF-OLD"))
    age(engine, "CONF-OLD", 11)
    engine.dispose()
    none = run_cli("purge", "--db", sqlite_url)
    assert none.returncode == 2 and "raw_messages_days" in none.stderr
    assert "Traceback" not in none.stderr
    config = tmp_path / "pamfr.toml"
    config.write_text("[retention]\nraw_messages_days = 10\n")
    done = run_cli("--config", str(config), "purge", "--db", sqlite_url)
    assert done.returncode == 0, done.stderr
    assert "raw bytes of 1 message(s)" in done.stdout
    config.write_text("[retention]\nraw_messages_days = 0\n")
    bad = run_cli("--config", str(config), "purge", "--db", sqlite_url)
    assert bad.returncode != 0 and "retention.raw_messages_days" in bad.stderr
    zero = run_cli("purge", "--older-than", "0", "--db", sqlite_url)
    assert zero.returncode == 2 and "--older-than" in zero.stderr


def test_backup_of_a_live_sqlite_store_is_consistent(sqlite_url, engine, tmp_path):
    receiver = Receiver(engine)
    receiver.handle(a28("B0", "BK-0"))
    stop = threading.Event()
    written: list[int] = []

    def keep_writing() -> None:  # the daemon goes on while the copy is taken
        n = 1
        while not stop.is_set():
            receiver.handle(a28(f"B{n}", f"BK-{n}"))
            written.append(n)
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    target = tmp_path / "copy.db"
    try:
        done = run_cli("db", "backup", str(target), "--db", sqlite_url)
    finally:
        stop.set()
        writer.join(30)
    assert done.returncode == 0, done.stderr
    assert f"written to {target}" in done.stdout
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    logged = copy.execute("SELECT count(*) FROM message").fetchone()[0]
    patients = copy.execute("SELECT count(*) FROM patient").fetchone()[0]
    copy.close()
    # One commit's state: every message logged has its patient, and nothing is half there.
    assert logged == patients >= 1
    engine.dispose()

    again = run_cli("db", "backup", str(target), "--db", sqlite_url)
    assert again.returncode == 2 and "already exists" in again.stderr
    pg = run_cli("db", "backup", str(tmp_path / "pg.db"), "--db", "postgresql+psycopg://x@h/db")
    assert pg.returncode == 2 and "pg_dump" in pg.stderr
    missing = tmp_path / "none.db"
    absent = run_cli("db", "backup", str(tmp_path / "c2.db"), "--db", f"sqlite:///{missing}")
    assert absent.returncode == 2 and "no SQLite store" in absent.stderr
    assert not missing.exists() and not (tmp_path / "c2.db").exists()
    garbled = run_cli("db", "backup", str(tmp_path / "c3.db"), "--db", "not a url")
    assert garbled.returncode == 2 and "not a database URL" in garbled.stderr
