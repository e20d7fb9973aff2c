"""Helpers of the reliability tests: an MLLP client of a running daemon, a sender that behaves
like a GAM, memory of a daemon and of its parse workers, a PostgreSQL database of the test's
own. The daemon itself: tests.helpers.start_daemon."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import create_engine, select, text

from pamfr.hl7.samples import Person, message
from pamfr.store.db import make_engine
from pamfr.store.schema import identifier
from pamfr.store.schema import message as message_table
from pamfr.transport.client import MLLPClient, MLLPError
from tests.helpers import parse_ack


def a28(control_id: str) -> bytes:
    return message("A28", Person(ipp=f"P{control_id}"), control_id).encode()


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


# -- memory -------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_kb(pid: int) -> int:
    """VmRSS of the daemon plus its forkserver and parse workers (they parse the input)."""
    total = 0
    for p in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError):  # a worker that just exited
            total += rss_kb(p)
    return total


# -- a sender that behaves like a GAM --------------------------------------------------------


@dataclass
class Record:
    sent: set[str] = field(default_factory=set)
    acked: set[str] = field(default_factory=set)
    ar207: int = 0
    ar207_ids: set[str] = field(default_factory=set)
    # (monotonic time, control id, MSA-1, ERR codes) of every answer
    answers: list[tuple[float, str, str, list[str]]] = field(default_factory=list)
    reconnects: int = 0

    def first_aa_after(self, t: float) -> float | None:
        return next((a[0] for a in self.answers if a[0] >= t and a[2] == "AA"), None)


async def gam_sender(
    port: int,
    prefix: str,
    record: Record,
    stop: asyncio.Event,
    *,
    pace: float = 0.02,
    resend_delay: float = 0.2,
    deadline: float,
) -> None:
    """Send new messages one at a time until `stop`, each until it gets AA: resend after AR 207
    and after a lost connection, as a GAM does. Any other answer fails the test."""
    client: MLLPClient | None = None
    n = 0
    try:
        while not stop.is_set():
            n += 1
            control_id = f"{prefix}-{n}"
            record.sent.add(control_id)
            raw = a28(control_id)
            while True:
                assert time.monotonic() < deadline, f"{control_id} still not AA at the deadline"
                try:
                    if client is None:
                        client = await MLLPClient.connect("127.0.0.1", port)
                    ack = parse_ack(await client.send(raw, timeout=60))
                except (MLLPError, OSError):
                    record.reconnects += 1
                    if client is not None:
                        await client.close()
                    client = None
                    await asyncio.sleep(resend_delay)
                    continue
                assert ack.control_id == control_id
                record.answers.append((time.monotonic(), control_id, ack.code, ack.err_codes))
                if ack.code == "AA":
                    record.acked.add(control_id)
                    break
                assert (ack.code, ack.err_codes) == ("AR", ["207"]), ack.raw
                record.ar207 += 1
                record.ar207_ids.add(control_id)
                await asyncio.sleep(resend_delay)
            await asyncio.sleep(pace)
    finally:
        if client is not None:
            await client.close()


@dataclass
class Incident:
    """Something done to the store for a while (the database refused, the file locked...)."""

    name: str
    start: Callable[[], None]
    end: Callable[[], None]
    seconds: float
    # Wait for the first AR 207 before counting `seconds` (a full disk bites a little later).
    until_ar207: bool = False


@dataclass
class Window:
    name: str
    began: float  # once start() returned
    ended: float  # when end() was called
    recovered_after: float  # seconds from end() to the first AA


async def stream_through(
    port: int, incidents: list[Incident], *, senders: int = 4, timeout: float = 90
) -> tuple[Record, list[Window]]:
    """Several GAM-like senders stream while each incident happens in turn; after each one the
    daemon must give AA again by itself within 15 s."""
    record = Record()
    stop = asyncio.Event()
    deadline = time.monotonic() + timeout
    tasks = [
        asyncio.create_task(
            gam_sender(port, f"S{k}", record, stop, deadline=deadline), name=f"sender {k}"
        )
        for k in range(senders)
    ]

    async def until(condition, seconds: float, what: str) -> None:
        limit = time.monotonic() + seconds
        while not condition():
            for task in tasks:
                if task.done():
                    task.result()  # a sender's failure is the test's failure
            assert time.monotonic() < limit, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    windows = []
    try:
        await until(lambda: len(record.acked) >= 20, 20, "the first AAs")
        for incident in incidents:
            refused = record.ar207
            await asyncio.to_thread(incident.start)
            began = time.monotonic()
            if incident.until_ar207:
                await until(lambda n=refused: record.ar207 > n, 30, f"AR 207 in {incident.name}")
            await asyncio.sleep(incident.seconds)
            ended = time.monotonic()
            await asyncio.to_thread(incident.end)
            await until(
                lambda t=ended: record.first_aa_after(t) is not None,
                15,
                f"AA again after {incident.name}",
            )
            windows.append(
                Window(incident.name, began, ended, record.first_aa_after(ended) - ended)
            )
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    return record, windows


def logged_outcomes(db_url: str) -> list[tuple[str, str, int | None]]:
    """(control id, outcome, duplicate_of) of every row of the message log."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    message_table.c.control_id,
                    message_table.c.outcome,
                    message_table.c.duplicate_of,
                )
            ).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in rows]


def check_no_false_aa(db_url: str, record: Record) -> dict[str, int]:
    """Every AA'd control id is in the message log as applied, exactly once, and its patient
    exists; every message sent ended with AA once the store was back."""
    rows = logged_outcomes(db_url)
    applied = [cid for cid, outcome, dup in rows if outcome == "AA" and dup is None]
    missing = record.acked - set(applied)
    assert not missing, (
        f"AA sent for {len(missing)} message(s) not in the store: {sorted(missing)[:10]}"
    )
    assert len(applied) == len(set(applied)), "a message was applied twice"
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            ipps = set(
                conn.execute(select(identifier.c.value).where(identifier.c.type == "PI")).scalars()
            )
    finally:
        engine.dispose()
    lost = {cid for cid in record.acked if f"P{cid}" not in ipps}
    assert not lost, f"AA sent but no patient stored for {lost}"
    assert record.acked == record.sent, "every message ends with AA once the store is back"
    return {
        "sent": len(record.sent),
        "AA": len(record.acked),
        "AR207": record.ar207,
        "resent after AR": len(record.ar207_ids),
        "logged": len(rows),
        "duplicates": sum(1 for r in rows if r[2] is not None),
        "reconnects": record.reconnects,
    }


# -- PostgreSQL ---------------------------------------------------------------------------


@contextmanager
def own_pg_database(pg_server_url: str) -> Iterator[tuple[str, object]]:
    """A database of this test only (the outage must not touch anyone else's), and a switch
    that refuses new connections and terminates the open ones, or lets them in again."""
    name = f"pamfr_rel_{uuid.uuid4().hex[:8]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def outage(on: bool) -> None:
        with admin.connect() as conn:
            allow = "false" if on else "true"
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {allow}'))
            if on:
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": name},
                )

    try:
        yield pg_server_url.rsplit("/", 1)[0] + f"/{name}", outage
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
