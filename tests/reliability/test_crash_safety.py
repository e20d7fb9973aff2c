"""An ACKed message is never lost, even when the daemon is killed (SIGKILL).

Several GAM-like senders stream messages to `pamfr serve`; the test kills the daemon at random
moments, restarts it on the same store, and the senders resend what was not ACKed (same
MSH-10, as a GAM does). At the end every message that got AA is in the store exactly once
(resends marked duplicate_of), every patient rebuilds from its history, and the store passes
its integrity check (PRAGMA integrity_check for SQLite, amcheck for PostgreSQL).

PAMFR_CRASH_SEED=<n> replays the kill moments of a run (printed at the end).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select, text

from pamfr.hl7.samples import generate_mix
from pamfr.store.db import make_engine
from pamfr.store.readside import all_patient_ids, patient_history, patient_view
from pamfr.store.schema import history
from pamfr.store.schema import message as message_table
from pamfr.transport.client import MLLPClient, MLLPError
from tests.helpers import Daemon, parse_ack, start_daemon
from tests.historycheck import as_history_fields, rebuilt_view
from tests.reliability.common import connect

SENDERS = 4
KILLS = 6
RUN_AFTER_LAST_KILL = 2.0  # seconds of traffic once the last restart is up
BUDGET = 100.0  # seconds for the whole scenario, a hang fails the test


@dataclass
class Run:
    daemon: Daemon
    acked: dict[str, bytes] = field(default_factory=dict)  # control id -> message sent
    a28_ipps: set[str] = field(default_factory=set)
    unanswered: int = 0  # messages sent that got no answer (the daemon died): sent again
    kills: int = 0
    stopping: bool = False


def _control_id(raw: bytes) -> str:
    return raw.split(b"\r", 1)[0].split(b"|")[9].decode()


async def _gam(run: Run, k: int) -> None:
    """One sender: its own patients, in order, each message until it gets its AA."""
    client: MLLPClient | None = None
    stream = generate_mix(1_000_000, seed=k, prefix=f"C{k}")
    try:
        while not run.stopping:
            raw = next(stream).encode()
            control_id = _control_id(raw)
            while True:
                if client is None:
                    try:
                        client = await connect(run.daemon.port, timeout=5)
                    except (OSError, TimeoutError):
                        await asyncio.sleep(0.05)  # the daemon is down: try again soon
                        continue
                try:
                    ack = parse_ack(await client.send(raw, timeout=20))
                except (MLLPError, OSError):
                    await client.close()
                    client = None
                    run.unanswered += 1
                    continue
                assert ack.control_id == control_id
                assert ack.code == "AA", (control_id, ack.code, ack.errs)
                run.acked[control_id] = raw
                if b"|ADT^A28^" in raw:
                    run.a28_ipps.add(raw.split(b"PID|1||", 1)[1].split(b"^", 1)[0].decode())
                break
    finally:
        if client is not None:
            await client.close()


async def _killer(run: Run, rng: random.Random, restart) -> None:
    for _ in range(KILLS):
        before = len(run.acked)
        deadline = time.monotonic() + 20
        while len(run.acked) == before:  # messages are flowing through this incarnation
            assert time.monotonic() < deadline, "no message ACKed after a restart"
            await asyncio.sleep(0.01)
        await asyncio.sleep(rng.uniform(0.2, 3.0))
        os.kill(run.daemon.proc.pid, signal.SIGKILL)  # the crash
        await asyncio.to_thread(run.daemon.proc.wait, 10)
        run.daemon.kill_group()  # what a supervisor does: the orphaned parse workers go too
        run.kills += 1
        run.daemon = await asyncio.to_thread(restart, run.kills)
    await asyncio.sleep(RUN_AFTER_LAST_KILL)
    run.stopping = True


def _check_store(db_url: str, run: Run) -> dict[str, int]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    message_table.c.id,
                    message_table.c.control_id,
                    message_table.c.outcome,
                    message_table.c.duplicate_of,
                    message_table.c.raw,
                )
            ).all()
            originals = {r.id: r for r in rows if r.duplicate_of is None}
            duplicates = [r for r in rows if r.duplicate_of is not None]
            by_control_id = Counter(r.control_id for r in originals.values())

            # Every ACKed message is in the log exactly once, as sent, with outcome AA...
            lost = sorted(set(run.acked) - set(by_control_id))
            assert not lost, f"{len(lost)} ACKed message(s) not in the store: {lost[:10]}"
            twice = sorted(c for c, n in by_control_id.items() if n > 1)
            assert not twice, f"message(s) stored more than once: {twice[:10]}"
            for r in originals.values():
                assert r.outcome == "AA", (r.control_id, r.outcome)
                assert r.raw == run.acked[r.control_id], r.control_id
            # ... nothing else is (a sender retries until AA, so all it sent was ACKed) ...
            assert set(by_control_id) == set(run.acked)
            # ... and each resend of a committed message was answered from the log.
            for d in duplicates:
                assert originals[d.duplicate_of].control_id == d.control_id
                assert d.outcome == "AA"

            # No message applied twice: history rows come from original messages only, and
            # each A28 made one patient.
            applied = set(conn.execute(select(history.c.message_id).distinct()).scalars())
            assert applied <= set(originals), "a resent message changed a patient"
            patients = all_patient_ids(conn)
            assert len(patients) == len(run.a28_ipps)

            # Every patient is exactly what its history rebuilds (no lost or extra row).
            for pid in patients:
                view = as_history_fields(patient_view(conn, pid))
                assert rebuilt_view(patient_history(conn, pid)) == view, pid

            integrity = _integrity(conn, db_url)
    finally:
        engine.dispose()
    return {
        "messages in the log": len(rows),
        "originals": len(originals),
        "duplicates (ACK lost in a kill, resent)": len(duplicates),
        "patients": len(patients),
        "integrity": integrity,
    }


def _integrity(conn, db_url: str) -> str:
    if db_url.startswith("sqlite"):
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalars().all() == ["ok"]
        assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        return "PRAGMA integrity_check ok, foreign_key_check ok"
    # PostgreSQL: amcheck on every B-tree index (with heapallindexed) and every table heap.
    schema = parse_qs(urlsplit(db_url).query)["options"][0].split("=", 1)[1]
    conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck WITH SCHEMA public"))
    indexes = conn.execute(
        text(
            "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam "
            "WHERE n.nspname = :s AND a.amname = 'btree'"
        ),
        {"s": schema},
    ).scalars()
    checked = 0
    for oid in list(indexes):
        conn.execute(text("SELECT public.bt_index_check(:i, true)"), {"i": oid})
        checked += 1
    tables = conn.execute(
        text(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relkind = 'r'"
        ),
        {"s": schema},
    ).scalars()
    for oid in list(tables):
        problems = conn.execute(text("SELECT * FROM public.verify_heapam(:t)"), {"t": oid}).all()
        assert problems == [], problems
    conn.rollback()
    return f"amcheck ok on {checked} indexes and their tables"


def test_sigkill_loses_no_acked_message(db_url, tmp_path):
    seed = int(os.environ.get("PAMFR_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)

    def restart(n: int) -> Daemon:
        return start_daemon(db_url, tmp_path / f"serve-{n}.log", "--no-migrate")

    run = Run(restart(0))
    started = time.monotonic()

    async def scenario() -> None:
        senders = [asyncio.create_task(_gam(run, k)) for k in range(SENDERS)]
        try:
            await _killer(run, rng, restart)
        finally:
            run.stopping = True
            await asyncio.gather(*senders)

    try:
        asyncio.run(asyncio.wait_for(scenario(), BUDGET))
        # After all the crashes, a normal stop still works.
        run.daemon.signal(signal.SIGTERM)
        assert run.daemon.proc.wait(30) == 0
    finally:
        run.daemon.kill_group()
    elapsed = time.monotonic() - started
    figures = _check_store(db_url, run)
    assert run.kills >= 5
    print(
        f"\ncrash safety ({db_url.split(':', 1)[0]}, seed {seed}): {run.kills} SIGKILLs "
        f"survived in {elapsed:.1f}s; {len(run.acked)} messages ACKed AA, "
        f"{figures['originals']} found in the store exactly once; {run.unanswered} sends got "
        f"no answer and were resent; {figures}"
    )
