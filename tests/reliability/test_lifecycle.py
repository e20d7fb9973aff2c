"""Graceful stop: SIGTERM while the database is stuck under load.

tests/integration/test_daemon.py::test_sigterm_answers_in_flight_and_loses_nothing covers
SIGTERM under a normal load. Here the database holds the daemon's writer (a lock taken by the
test) when SIGTERM comes, with idle and half-sent connections open: the daemon must still exit
0 within [server] shutdown_grace, without an ACK for anything not committed and without a
half-applied message; the GAM's resends after a restart then complete the store.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

from sqlalchemy import func, select, text

from pamfr.hl7.samples import Person, message
from pamfr.store.readside import all_patient_ids, patient_history, patient_view
from pamfr.store.schema import message as message_table
from pamfr.transport.client import MLLPClient, MLLPError
from tests.helpers import parse_ack, start_daemon
from tests.historycheck import as_history_fields, rebuilt_view
from tests.reliability.common import connect

GRACE = 2.0
SENDERS = 4
# Process start-up and teardown on top of the grace period (a busy CI machine).
EXIT_MARGIN = 3.0


def _a28(control_id: str) -> bytes:
    return message("A28", Person(ipp=f"P{control_id}"), control_id).encode()


def test_sigterm_with_a_stuck_database_exits_within_the_grace_period(db_url, engine, tmp_path):
    env = {"PAMFR_SERVER_SHUTDOWN_GRACE": str(GRACE)}
    daemon = start_daemon(db_url, tmp_path / "serve.log", "--no-migrate", env=env)
    acked: list[str] = []
    unacked: list[str] = []  # sent, no answer: a GAM sends them again later
    blocker = engine.connect()

    async def sender(k: int) -> None:
        async with await connect(daemon.port) as client:
            for i in range(10_000):
                control_id = f"STOP{k}-{i}"
                try:
                    ack = parse_ack(await client.send(_a28(control_id), timeout=30))
                except (MLLPError, OSError):
                    unacked.append(control_id)
                    return
                assert (ack.control_id, ack.code) == (control_id, "AA")
                acked.append(control_id)

    def lock_the_store() -> None:
        blocker.begin()  # SQLite: BEGIN IMMEDIATE, the write lock
        if engine.dialect.name == "postgresql":
            blocker.execute(text("LOCK TABLE message IN ACCESS EXCLUSIVE MODE"))

    async def scenario() -> float:
        tasks = [asyncio.create_task(sender(k)) for k in range(SENDERS)]
        idle = await connect(daemon.port)
        half = await connect(daemon.port)
        half._writer.write(b"\x0bMSH|^~\\&|GAM|CHU-X|DPI|CHU-X|2024")  # a frame never finished
        while len(acked) < 20:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(lock_the_store)
        await asyncio.sleep(0.5)  # the writer now waits on the lock with a batch in hand
        start = time.monotonic()
        daemon.signal(signal.SIGTERM)
        limit = GRACE + EXIT_MARGIN
        try:
            code = await asyncio.to_thread(daemon.proc.wait, limit + 10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {limit + 10:.0f}s after SIGTERM") from None
        elapsed = time.monotonic() - start
        assert code == 0
        assert elapsed <= limit, f"exit took {elapsed:.1f}s, grace {GRACE}s"
        await asyncio.gather(*tasks)
        for client in (idle, half):
            await client.close()
        return elapsed

    try:
        elapsed = asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        blocker.rollback()
        blocker.close()
        daemon.kill_group()
    log = daemon.log()
    assert "shutdown grace" in log and "stopped" in log
    assert len(unacked) == SENDERS  # each sender had a message in flight at the stop

    def stored() -> dict[str, int]:
        with engine.connect() as conn:
            rows = conn.execute(
                select(message_table.c.control_id, func.count())
                .where(message_table.c.duplicate_of.is_(None))
                .group_by(message_table.c.control_id)
            ).all()
        return {cid: n for cid, n in rows}

    # Nothing ACKed is lost, nothing un-ACKed was committed (the stuck batch rolled back).
    first = stored()
    assert set(acked) <= set(first)
    assert set(first) == set(acked), sorted(set(first) - set(acked))

    # The GAM resends what got no ACK: after a restart all of it is in, exactly once.
    daemon = start_daemon(db_url, tmp_path / "serve-2.log", "--no-migrate", env=env)

    async def resend() -> None:
        async with await MLLPClient.connect("127.0.0.1", daemon.port) as client:
            for control_id in unacked:
                assert parse_ack(await client.send(_a28(control_id), timeout=30)).code == "AA"

    try:
        asyncio.run(asyncio.wait_for(resend(), 60))
        daemon.signal(signal.SIGTERM)
        assert daemon.proc.wait(30) == 0
    finally:
        daemon.kill_group()
    assert stored() == {cid: 1 for cid in [*acked, *unacked]}
    with engine.connect() as conn:
        for pid in all_patient_ids(conn):
            view = as_history_fields(patient_view(conn, pid))
            assert rebuilt_view(patient_history(conn, pid)) == view, pid
    engine.dispose()
    print(
        f"\nSIGTERM with the store locked ({engine.dialect.name}): exit 0 in {elapsed:.1f}s "
        f"(grace {GRACE}s); {len(acked)} ACKed before, {len(unacked)} in flight resent after"
    )
