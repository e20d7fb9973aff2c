"""`pamfr reprocess` against SQLite and PostgreSQL: stored raw messages run through the
receiver again, linked to their original, with the duplicate control guarding what was AA."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from pamfr.hl7.samples import Person, message
from pamfr.path.receiver import Receiver
from pamfr.store.messagelog import LoggedMessage, insert_messages
from pamfr.store.retention import purge_raw
from pamfr.store.schema import history as patient_history
from pamfr.store.schema import message as message_table
from pamfr.store.schema import patient
from tests.helpers import run_cli


def a28(ipp: str, control_id: str, **kw) -> bytes:
    return message("A28", Person(ipp=ipp, **kw), control_id).encode()


def rows(engine) -> list[dict]:
    with engine.connect() as conn:
        query = select(message_table).order_by(message_table.c.id)
        return [dict(r) for r in conn.execute(query).mappings()]


def count(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_ar_after_a_configuration_fix_is_applied_and_answers_later_resends(db_url, engine):
    misconfigured = Receiver(engine, allowed_senders=["OTHER-GAM|*"])
    first = misconfigured.handle(a28("R1", "CTL-R1"), door="mllp")
    assert first.code == "AR" and [p.code for p in first.problems] == [207]
    assert count(engine, patient) == 0

    listed = run_cli("reprocess", "--outcome", "AR", "--dry-run", "--db", db_url)
    assert listed.returncode == 0, listed.stderr
    assert "CTL-R1" in listed.stdout and "1 message(s) would be reprocessed" in listed.stdout
    assert re.search(r"^ +1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 mllp ", listed.stdout, re.M)
    assert len(rows(engine)) == 1  # a dry run changes nothing

    done = run_cli("reprocess", "--outcome", "AR", "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert "reprocessed 1 message(s) answered AR: AA 1" in done.stdout
    original, again = rows(engine)
    assert (again["door"], again["outcome"], again["reprocess_of"]) == ("reprocess", "AA", 1)
    assert again["control_id"] == "CTL-R1" and again["raw"] == original["raw"]
    assert original["outcome"] == "AR" and original["reprocess_of"] is None
    assert again["dedup_key"] == "GAM|CHU-X|CTL-R1"
    assert count(engine, patient) == 1

    # The GAM resends: the reprocess's AA answers it, nothing is applied twice.
    histories = count(engine, patient_history)
    resend = Receiver(engine).handle(a28("R1", "CTL-R1"), door="mllp")
    assert resend.code == "AA" and resend.duplicate
    assert rows(engine)[-1]["duplicate_of"] == again["id"]
    assert count(engine, patient_history) == histories

    # The chain was run: a second reprocess finds nothing to do.
    nothing = run_cli("reprocess", "--outcome", "AR", "--db", db_url)
    assert nothing.returncode == 0, nothing.stderr
    assert "reprocessed 0 message(s)" in nothing.stdout


def test_an_ar_whose_resend_was_aa_is_not_applied_twice(db_url, engine):
    Receiver(engine, allowed_senders=["OTHER-GAM"]).handle(a28("R2", "CTL-R2"))
    assert Receiver(engine).handle(a28("R2", "CTL-R2")).code == "AA"  # the GAM resent
    histories = count(engine, patient_history)

    done = run_cli("reprocess", "--outcome", "AR", "--control-id", "CTL-R2", "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert "AA (duplicate) 1" in done.stdout
    last = rows(engine)[-1]
    assert last["reprocess_of"] == 1 and last["duplicate_of"] == 2
    assert count(engine, patient_history) == histories


def test_ae_rerun_takes_the_duplicate_key_and_a_purged_raw_cannot_be_rerun(db_url, engine):
    receiver = Receiver(engine)
    bad_key = a28("E1", "CTL-E1", ins="123456789012345")  # wrong INS key: AE
    other = a28("E2", "CTL-E2", ins="123456789012345")
    assert receiver.handle(bad_key).code == "AE"
    assert receiver.handle(other).code == "AE"
    # CTL-E2 is old enough to be purged; CTL-E1 was received just now.
    with engine.begin() as conn:
        conn.execute(
            message_table.update()
            .where(message_table.c.control_id == "CTL-E2")
            .values(received_at=datetime.now(UTC) - timedelta(days=40))
        )
    assert purge_raw(engine, 30).purged == 1

    since = (datetime.now(UTC) - timedelta(days=100)).date().isoformat()
    done = run_cli("reprocess", "--outcome", "AE", "--since", since, "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert "CTL-E2 cannot be reprocessed: raw purged" in done.stdout
    assert "reprocessed 1 message(s) answered AE: AE 1; 1 could not be" in done.stdout
    by_id = {r["id"]: r for r in rows(engine)}
    again = by_id[3]
    assert again["reprocess_of"] == 1 and again["outcome"] == "AE"
    # The key moved: a resend is answered from the new row, not the old one.
    assert by_id[1]["dedup_key"] is None and again["dedup_key"] == "GAM|CHU-X|CTL-E1"
    resend = receiver.handle(bad_key)
    assert resend.duplicate and rows(engine)[-1]["duplicate_of"] == 3

    later = run_cli("reprocess", "--outcome", "AE", "--since", "2999-01-01", "--db", db_url)
    assert "reprocessed 0 message(s)" in later.stdout


def test_reprocess_bad_arguments_are_one_line_exit_2(tmp_path, sqlite_url):
    bad_since = run_cli("reprocess", "--outcome", "AE", "--since", "28/03/2026", "--db", sqlite_url)
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr
    assert "Traceback" not in bad_since.stderr
    no_outcome = run_cli("reprocess", "--outcome", "AA", "--db", sqlite_url)
    assert no_outcome.returncode == 2 and "--outcome" in no_outcome.stderr
    missing = tmp_path / "nothing.db"
    absent = run_cli("reprocess", "--outcome", "AE", "--db", f"sqlite:///{missing}")
    assert absent.returncode == 2 and "no SQLite store" in absent.stderr
    assert not missing.exists()  # reading never creates a store
    for command in (["reprocess", "--outcome", "AE"], ["purge", "--older-than", "9"]):
        garbled = run_cli(*command, "--db", "not a url")
        assert garbled.returncode == 2 and "not a database URL" in garbled.stderr
        assert "Traceback" not in garbled.stderr
    unreachable = run_cli(
        "reprocess", "--outcome", "AE", "--db", "postgresql+psycopg://nobody@127.0.0.1:9/none"
    )
    assert unreachable.returncode == 2 and "OperationalError" in unreachable.stderr
    assert len(unreachable.stderr.strip().splitlines()) == 1


def test_ae_fixed_by_a_new_version_is_applied_and_takes_the_key(db_url, engine):
    """A message an earlier version of the rules answered AE (logged as it would have been),
    run again by this version: applied, and the key moves to the new row in the same
    transaction (on PostgreSQL, the pipelined batch path)."""
    raw = a28("F1", "CTL-F1")
    with engine.begin() as conn:
        (original,) = insert_messages(
            conn,
            [
                LoggedMessage(
                    received_at=datetime.now(UTC) - timedelta(hours=1),
                    door="mllp",
                    peer="10.0.0.9:4000",
                    raw=raw,
                    raw_size=len(raw),
                    outcome="AE",
                    ack=b"MSH|^~\\&|old ack\r",
                    control_id="CTL-F1",
                    event="A28",
                    error_text="102 PID^1^3: refused by an earlier version",
                    dedup_key="GAM|CHU-X|CTL-F1",
                )
            ],
        )
    receiver = Receiver(engine)
    assert receiver.handle(raw).duplicate  # before: the GAM's resend gets the old AE

    done = run_cli("reprocess", "--outcome", "AE", "--db", db_url)
    assert done.returncode == 0, done.stderr
    assert "answered AE: AA 1" in done.stdout
    by_id = {r["id"]: r for r in rows(engine)}
    new = next(r for r in by_id.values() if r["reprocess_of"] == original)
    assert new["outcome"] == "AA" and new["peer"] == "10.0.0.9:4000"
    assert by_id[original]["dedup_key"] is None and new["dedup_key"] == "GAM|CHU-X|CTL-F1"
    assert count(engine, patient) == 1
    resend = receiver.handle(raw)
    assert resend.duplicate and resend.code == "AA"
