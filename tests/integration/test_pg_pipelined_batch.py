"""PostgreSQL: when the pipelined writes of a batch fail (here a unique violation, as when another
receiver takes a new IPP between the look-up and the write), nothing of the batch is kept and
every message is applied again on its own, exactly once."""

from __future__ import annotations

from sqlalchemy import func, select, text

from pamfr.hl7.frame import Inbound
from pamfr.hl7.samples import Person, message
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine, upgrade
from pamfr.store.schema import history, identifier, patient
from pamfr.store.schema import message as message_table
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
