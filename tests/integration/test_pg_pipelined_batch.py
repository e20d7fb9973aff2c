"""PostgreSQL: when the pipelined writes of a batch fail (here a unique violation, as when another
receiver takes a new IPP between the look-up and the write), nothing of the batch is kept and
every message is applied again on its own, exactly once."""

from __future__ import annotations

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from pamfr.hl7.frame import Inbound
from pamfr.hl7.samples import Person, message
from pamfr.path.receiver import Receiver
from pamfr.store import pgpipeline
from pamfr.store.db import make_engine, upgrade
from pamfr.store.schema import history, identifier, patient
from pamfr.store.schema import message as message_table
from pamfr.store.sink import ImmediateSink
from tests.conftest import _fresh_pg_schema

# nextval is not undone by a rollback: the first insert of IPP "RACE" fails, later ones pass.
RACE_TRIGGER = """
CREATE SEQUENCE race_seq;
CREATE FUNCTION race() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.value = 'RACE' AND nextval('race_seq') = 1 THEN
    RAISE EXCEPTION 'simulated concurrent insert' USING ERRCODE = 'unique_violation';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER race BEFORE INSERT ON identifier FOR EACH ROW EXECUTE FUNCTION race();
"""


def test_a_failed_pipelined_write_reruns_the_batch_message_by_message(pg_server_url) -> None:
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    engine = make_engine(url)
    receiver = Receiver(engine)
    receiver.handle(message("A28", Person(ipp="OLD", birth_name="AVANT"), "C1").encode())
    with engine.begin() as conn:
        conn.execute(text(RACE_TRIGGER))

    texts = [
        message("A28", Person(ipp="NEW"), "C2"),
        message("A28", Person(ipp="RACE"), "C3"),
        message("A31", Person(ipp="OLD", birth_name="APRES"), "C4"),
    ]
    outcomes = receiver.commit([receiver.prepare(Inbound(t.encode())) for t in texts])

    assert [o.code for o in outcomes] == ["AA", "AA", "AA"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT last_value FROM race_seq")).scalar() >= 2  # it failed
        ipps = conn.execute(select(identifier.c.value).order_by(identifier.c.value)).scalars()
        assert list(ipps) == ["NEW", "OLD", "RACE"]
        assert conn.execute(select(func.count()).select_from(patient)).scalar() == 3
        logged = conn.execute(select(message_table.c.control_id, message_table.c.outcome))
        assert sorted(logged.all()) == [("C1", "AA"), ("C2", "AA"), ("C3", "AA"), ("C4", "AA")]
        names = conn.execute(select(patient.c.birth_name).where(patient.c.birth_name != None))  # noqa: E711
        assert "APRES" in set(names.scalars())
        per_message = conn.execute(
            select(history.c.control_id, func.count()).group_by(history.c.control_id)
        )
        assert dict(per_message.all()) == {"C1": 1, "C2": 1, "C3": 1, "C4": 1}
    engine.dispose()


def _traced_commit(receiver, engine, texts: list[str], path, by_text: bool = False) -> list[str]:
    """Commit the messages as one batch (every one answered AA) with libpq's trace of the
    connection on; the trace's lines. `by_text`: the statements' text in the trace rather than
    the names of prepared statements."""
    prepared = [receiver.prepare(Inbound(t.encode())) for t in texts]
    with engine.connect() as conn:  # the pool's one connection, the one commit uses
        driver = conn.connection.driver_connection
        if by_text:
            driver.prepare_threshold = None
        pgconn = driver.pgconn
    with open(path, "w") as trace:
        pgconn.trace(trace.fileno())
        outcomes = receiver.commit(prepared)
        pgconn.untrace()
    assert [o.code for o in outcomes] == ["AA"] * len(texts)
    return path.read_text().splitlines(keepends=True)


def _round_trips(trace) -> int:
    """Runs of client messages each followed by the server's answer, in a libpq trace
    (bench.commit_cost --pg counts the same way)."""
    trips, last = 0, ""
    for line in trace:
        fields = line.split("\t")
        if len(fields) > 1 and fields[1] in ("F", "B"):
            trips += fields[1] == "B" and last == "F"
            last = fields[1]
    return trips


def test_a_batch_of_creates_and_updates_takes_two_round_trips(pg_server_url, tmp_path) -> None:
    """BEGIN travels with the look-ups, the feed lock and the events with the COMMIT; after a
    merge the rest of the batch is looked up together again. The writer's connection goes
    back to the pool as it came (not in autocommit)."""
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    engine = make_engine(url)
    receiver = Receiver(engine)
    receiver.handle(message("A28", Person(ipp="OLD"), "C0").encode())
    receiver.handle(message("A28", Person(ipp="GONE"), "C00").encode())

    def trips(texts: list[str]) -> int:
        return _round_trips(_traced_commit(receiver, engine, texts, tmp_path / "trace"))

    plain = [
        message("A28", Person(ipp="NEW1"), "C1"),
        message("A31", Person(ipp="OLD", birth_name="APRES"), "C2"),
        message("A28", Person(ipp="NEW2"), "C3"),
    ]
    assert trips(plain) == 2
    alone = trips([message("A40", Person(ipp="OLD"), "C4", prior_ipp="GONE")])
    receiver.handle(message("A28", Person(ipp="GONE2"), "C5").encode())
    merged = [message("A40", Person(ipp="OLD"), "C6", prior_ipp="GONE2")]
    after = [message("A28", Person(ipp="NEW3"), "C7"), message("A28", Person(ipp="NEW4"), "C8")]
    # The creates after the merge: one look-ahead, their writes with the COMMIT (the log row
    # and the history of the merge too), no round trip more than the merge alone.
    assert trips(merged + after) <= alone
    with engine.connect() as conn:
        assert conn.connection.driver_connection.autocommit is False
        assert conn.execute(select(func.count()).select_from(message_table)).scalar() == 10
    engine.dispose()


def test_a_failed_transaction_leaves_nothing_on_the_plain_path(pg_server_url) -> None:
    """The transaction sends its own BEGIN (store/pgpipeline.begin_with_first_round_trip): a
    batch that starts with a merge (no look-ahead, statements one at a time) and whose events
    fail keeps none of its writes, and its messages run again in savepoints."""
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    engine = make_engine(url)
    receiver = Receiver(engine)
    receiver.handle(message("A28", Person(ipp="KEEP"), "C1").encode())
    receiver.handle(message("A28", Person(ipp="GONE"), "C2").encode())
    with engine.begin() as conn:  # the first event insert fails, later ones pass
        conn.execute(
            text(
                "CREATE SEQUENCE ev_seq;"
                " CREATE FUNCTION ev() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF nextval('ev_seq') = 1 THEN RAISE EXCEPTION 'no' USING ERRCODE ="
                " 'unique_violation'; END IF; RETURN NEW; END $$;"
                " CREATE TRIGGER ev BEFORE INSERT ON event FOR EACH ROW EXECUTE FUNCTION ev();"
            )
        )
    texts = [
        message("A40", Person(ipp="KEEP"), "C3", prior_ipp="GONE"),
        message("A28", Person(ipp="NEW"), "C4"),
    ]
    outcomes = receiver.commit([receiver.prepare(Inbound(t.encode())) for t in texts])
    assert [o.code for o in outcomes] == ["AA", "AA"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT last_value FROM ev_seq")).scalar() >= 2  # it failed
        logged = conn.execute(select(message_table.c.control_id)).scalars()
        assert sorted(logged) == ["C1", "C2", "C3", "C4"]
        per_message = conn.execute(
            select(history.c.control_id, func.count()).group_by(history.c.control_id)
        )
        assert dict(per_message.all()) == {"C1": 1, "C2": 1, "C3": 2, "C4": 1}
        assert conn.connection.driver_connection.autocommit is False
    engine.dispose()


def _last_round_trip(trace) -> str:
    """What the client sent in a libpq trace's last round trip."""
    trips: list[list[str]] = [[]]
    last = ""
    for line in trace:
        fields = line.split("\t")
        if len(fields) > 1 and fields[1] in ("F", "B"):
            if fields[1] == "F" and last == "B":
                trips.append([])
            if fields[1] == "F":
                trips[-1].append(line)
            last = fields[1]
    return "".join(trips[-1])


def test_events_go_with_the_commit_on_every_path(pg_server_url, tmp_path) -> None:
    """A batch the look-ahead does not cover (it starts with a merge), one whose look-ahead
    stops at a merge, and one run in savepoints (a control id twice): each ends with one
    round trip holding the feed lock, the event insert and the COMMIT."""
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    engine = make_engine(url)
    receiver = Receiver(engine)
    for n in range(3):
        receiver.handle(message("A28", Person(ipp=f"GONE{n}"), f"G{n}").encode())
    receiver.handle(message("A28", Person(ipp="KEEP"), "K").encode())

    def last_trip(texts: list[str]) -> str:
        path = tmp_path / "trace"
        return _last_round_trip(_traced_commit(receiver, engine, texts, path, by_text=True))

    batches = [
        [
            message("A40", Person(ipp="KEEP"), "C1", prior_ipp="GONE0"),
            message("A28", Person(ipp="NEW1"), "C2"),
        ],
        [
            message("A28", Person(ipp="NEW2"), "C3"),
            message("A40", Person(ipp="KEEP"), "C4", prior_ipp="GONE1"),
            message("A28", Person(ipp="NEW3"), "C5"),
        ],
        [
            message("A28", Person(ipp="NEW4"), "C6"),
            message("A28", Person(ipp="NEW4"), "C6"),  # a resend: in savepoints
        ],
    ]
    for texts in batches:
        sent = last_trip(texts)
        assert "pg_advisory_xact_lock" in sent
        assert "INSERT INTO event" in sent
        assert "COMMIT" in sent
        assert sent.index("pg_advisory_xact_lock") < sent.index("INSERT INTO event")
        assert sent.index("INSERT INTO event") < sent.rindex("COMMIT")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(message_table)).scalar() == 11
    engine.dispose()


def test_a_commit_the_server_answers_rollback_is_a_failure_not_a_success(pg_server_url) -> None:
    """PostgreSQL answers a COMMIT sent in a transaction that already failed with ROLLBACK and
    no error: the pipelined COMMIT must raise, or the messages would be answered AA for writes
    that were rolled back."""
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert pgpipeline.begin_with_first_round_trip(conn)
            failed = pytest.raises(SQLAlchemyError, match="answered 'ROLLBACK' to COMMIT")
            with failed, conn.begin():
                with pytest.raises(DBAPIError):
                    conn.execute(text("SELECT 1/0"))
                ImmediateSink(conn).commit([])
        with engine.connect() as conn:  # the pool's connection is usable, out of autocommit
            assert conn.connection.driver_connection.autocommit is False
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_only_an_engine_of_make_engine_sends_its_own_begin(pg_server_url) -> None:
    """The BEGIN listener is registered when make_engine makes the engine (never later, while
    other threads use it), and an engine made elsewhere keeps psycopg's own BEGIN: a statement
    can never run in autocommit outside a transaction for want of the listener."""
    made = make_engine(pg_server_url)
    other = create_engine(pg_server_url)
    try:
        assert made.dialect.skip_autocommit_rollback is False
        with made.connect() as conn:
            assert pgpipeline.begin_with_first_round_trip(conn)
        with other.connect() as conn:
            assert not pgpipeline.begin_with_first_round_trip(conn)
            with conn.begin():
                conn.execute(text("SELECT 1"))
                status = conn.connection.driver_connection.info.transaction_status
                assert status == TransactionStatus.INTRANS
    finally:
        made.dispose()
        other.dispose()
