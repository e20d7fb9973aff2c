"""`pamfr serve` as a real process: signals, many connections, the database going away."""

from __future__ import annotations

import asyncio
import signal

from sqlalchemy import create_engine, func, select, text

from pamfr.hl7.samples import Person, message
from pamfr.store.schema import message as message_table
from pamfr.store.schema import patient
from pamfr.transport.client import MLLPClient, MLLPError
from tests.helpers import parse_ack, process_alive, start_daemon, stored_outcomes


def _a28(tag: str, n: int) -> bytes:
    return message("A28", Person(ipp=f"{tag}{n}"), f"{tag}-{n}").encode()


def test_200_simultaneous_connections(sqlite_url, engine, tmp_path):
    # all from 127.0.0.1: lift the per-address cap (16) this test is not about
    cap = {"PAMFR_SERVER_MAX_CONNECTIONS_PER_PEER": "200"}
    daemon = start_daemon(sqlite_url, tmp_path / "serve.log", env=cap)

    async def one(k: int) -> str:
        async with await MLLPClient.connect("127.0.0.1", daemon.port) as client:
            return parse_ack(await client.send(_a28("MANY", k), timeout=120)).code

    async def scenario():
        # Every connection is open before the first message goes out.
        return await asyncio.gather(*(one(k) for k in range(200)))

    try:
        codes = asyncio.run(scenario())
    finally:
        assert daemon.stop() == 0
    assert codes == ["AA"] * 200
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(patient)).scalar() == 200


def test_sigterm_answers_in_flight_and_loses_nothing(db_url, engine, tmp_path):
    daemon = start_daemon(db_url, tmp_path / "serve.log")
    acked: list[str] = []

    async def sender(k: int) -> None:
        try:
            async with await MLLPClient.connect("127.0.0.1", daemon.port) as client:
                for i in range(200):
                    control_id = f"TERM{k}-{i}"
                    ack = await client.send(
                        message("A28", Person(ipp=control_id), control_id).encode(), timeout=30
                    )
                    parsed = parse_ack(ack)
                    assert parsed.control_id == control_id
                    if parsed.code == "AA":
                        acked.append(control_id)
        except (MLLPError, ConnectionError):
            return  # the daemon stopped: what was not ACKed would be resent by a GAM

    async def scenario():
        tasks = [asyncio.create_task(sender(k)) for k in range(4)]
        while len(acked) < 20:
            await asyncio.sleep(0.02)
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*tasks)

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert daemon.proc.wait(60) == 0
    assert "stopped" in daemon.log()
    with engine.connect() as conn:
        logged = set(
            conn.execute(
                select(message_table.c.control_id).where(message_table.c.outcome == "AA")
            ).scalars()
        )
    engine.dispose()
    assert acked, "some messages must have been acknowledged before the signal"
    assert set(acked) <= logged  # every ACKed message is in the store


def test_database_unavailable_gets_ar_207_then_recovers(pg_server_url, tmp_path):
    """PostgreSQL refuses connections for a while: AR 207 (resend), then AA again by itself."""
    import uuid

    name = f"pamfr_outage_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    daemon = start_daemon(url, tmp_path / "serve.log")

    def outage(on: bool) -> None:
        with admin.connect() as conn:
            conn.execute(
                text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if on else "true"}')
            )
            if on:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"
                    ),
                    {"d": name},
                )

    async def send_one(client, n):
        return parse_ack(await client.send(_a28("OUT", n), timeout=60))

    async def scenario():
        async with await MLLPClient.connect("127.0.0.1", daemon.port) as client:
            before = await send_one(client, 1)
            outage(True)
            during = await send_one(client, 2)
            outage(False)
            after = await send_one(client, 2)  # the GAM resends the same message
            return before, during, after

    try:
        before, during, after = asyncio.run(scenario())
    finally:
        outage(False)
        assert daemon.stop() == 0
    assert before.code == "AA"
    assert (during.code, during.err_codes) == ("AR", ["207"])
    assert after.code == "AA"
    assert stored_outcomes(url) == [("OUT-1", "AA"), ("OUT-2", "AA")]
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def _descendants(pid: int) -> set[int]:
    from pathlib import Path

    found, todo = set(), [pid]
    while todo:
        current = todo.pop()
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                children = [int(c) for c in (task / "children").read_text().split()]
                found.update(children)
                todo += children
        except OSError:
            continue
    return found


def test_parse_workers_do_not_outlive_a_killed_daemon(sqlite_url, tmp_path):
    """SIGKILL leaves no orphan: the parse workers watch the daemon and stop themselves."""
    import time

    daemon = start_daemon(sqlite_url, tmp_path / "serve.log")
    workers = _descendants(daemon.proc.pid)
    assert len(workers) >= 3  # forkserver and its two parse workers, at least
    daemon.proc.kill()
    daemon.proc.wait(10)
    deadline = time.monotonic() + 10
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {p for p in alive if process_alive(p)}
    assert not alive, f"processes left behind: {sorted(alive)}"
