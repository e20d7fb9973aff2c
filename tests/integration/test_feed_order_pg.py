"""PostgreSQL, several writers: the feed's ids become visible in increasing order, so a
reader resuming after the last id it saw never skips an event committed later."""

from __future__ import annotations

import threading
import time

from sqlalchemy import create_engine, func, select, text

from pamfr.feed.store import read_events
from pamfr.hl7.samples import Person, message
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine, upgrade
from pamfr.store.outbox import FEED_LOCK
from tests.conftest import _fresh_pg_schema


def test_a_writer_takes_the_feed_lock_before_its_commit(pg_server_url):
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    engine = make_engine(url)
    watcher = create_engine(url, isolation_level="AUTOCOMMIT")
    receiver = Receiver(engine)
    outcomes = []
    try:
        with engine.connect() as holder:
            holder.execute(select(func.pg_advisory_xact_lock(FEED_LOCK)))  # another writer
            writer = threading.Thread(
                target=lambda: outcomes.append(
                    receiver.handle(message("A28", Person("W1"), "W1").encode())
                )
            )
            writer.start()
            waiting = text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            )
            deadline = time.monotonic() + 30
            with watcher.connect() as conn:
                while conn.execute(waiting).scalar() == 0:
                    assert time.monotonic() < deadline, "the writer never waited for the lock"
                    time.sleep(0.02)
                # Waiting, at the end of its transaction: nothing of it is visible yet.
                assert conn.execute(text("SELECT count(*) FROM message")).scalar() == 0
            assert outcomes == []
            holder.commit()  # the other writer commits: this one goes on
        writer.join(30)
        assert [o.code for o in outcomes] == ["AA"]
        with engine.connect() as conn:
            assert [e["type"] for e in read_events(conn, 0, 10)] == ["patient.created"]
    finally:
        watcher.dispose()
        engine.dispose()


def test_a_reader_following_two_concurrent_writers_misses_nothing(pg_server_url):
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    engines = [make_engine(url) for _ in range(3)]
    done = threading.Event()
    seen: list[int] = []

    def write(n: int) -> None:
        receiver = Receiver(engines[n])
        for i in range(60):
            ipp = f"C{n}-{i}"
            outcome = receiver.handle(message("A28", Person(ipp), ipp).encode())
            assert outcome.code == "AA"

    def follow() -> None:
        after = 0
        while True:
            last_round = done.is_set()
            with engines[2].connect() as conn:
                page = read_events(conn, after, 1000)
            seen.extend(e["id"] for e in page)
            if page:
                after = page[-1]["id"]
            elif last_round:
                return

    writers = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    reader = threading.Thread(target=follow)
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
    done.set()
    reader.join(60)
    with engines[2].connect() as conn:
        stored = [e["id"] for e in read_events(conn, 0, 1000)]
    for e in engines:
        e.dispose()
    assert len(stored) == 120
    assert seen == stored  # each once, in order, none skipped
