"""The identity-vigilance worklists and the INS trace from the CLI (`pamfr patient doublons`,
`pamfr patient trace`), on SQLite and PostgreSQL, read from a store fed over MLLP."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner

from pamfr.cli import main
from pamfr.hl7.samples import Person, message
from pamfr.store.db import make_engine
from pamfr.store.worklists import (
    DecisionExists,
    doublon_decisions,
    ins_removed_since,
    potential_doublons,
    provisional_older_than,
    record_not_doublon,
    refusals_per_sender,
)
from tests.desk.store import NIR_REMOVED, NIR_SHARED, load
from tests.helpers import pamfr_server, send


def cli(db_url: str, *args: str):
    return CliRunner().invoke(main, [*args, "--db", db_url])


def ids_of(db_url: str, ipp: str) -> int:
    result = cli(db_url, "patient", "show", "--ipp", ipp, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"]


def test_doublons_are_the_folded_pair_not_the_merged_nor_the_linked(db_url):
    load(db_url)
    pair = sorted((ids_of(db_url, "DBL1"), ids_of(db_url, "DBL2")))
    result = cli(db_url, "patient", "doublons", "--json")
    # MRG1/MRG2 and LNK1/LNK2 have the same traits, but are merged or linked
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [{"patients": pair}]
    text = cli(db_url, "patient", "doublons")
    assert text.stdout.strip() == f"patients {pair[0]}, {pair[1]}"


def test_a_link_still_excludes_the_pair_once_one_side_is_merged(db_url, engine):
    def same(who: str) -> Person:
        return Person(who, birth_name="DUPRE", given_names=("LEA",), birth_date="19700101")

    first, second, survivor, third, fourth = (same(w) for w in ("LM1", "LM2", "LM3", "LM4", "LM5"))
    with pamfr_server(db_url) as server:
        acks = send(
            server.port,
            [
                message("A28", first, "LM-1"),
                message("A28", second, "LM-2"),
                message("A28", survivor, "LM-3"),
                message("A24", first, "LM-4", other=second),  # LM1 and LM2: not one person
                message("A40", survivor, "LM-5", prior_ipp="LM1"),  # LM1 is LM3
                message("A28", third, "LM-6"),
                message("A28", fourth, "LM-7"),
                message("A40", fourth, "LM-8", prior_ipp="LM4"),  # LM4 is LM5
                message("A24", third, "LM-9", other=second),  # linked to its survivor, LM5
            ],
        )
    assert [a.code for a in acks] == ["AA"] * 9, [a.errs for a in acks]
    two, three, five = (ids_of(db_url, w) for w in ("LM2", "LM3", "LM5"))
    try:
        with engine.connect() as conn:
            pairs = potential_doublons(conn)
    finally:
        engine.dispose()
    assert pairs == [(min(three, five), max(three, five))]
    assert (min(two, three), max(two, three)) not in pairs


def test_a_not_a_doublon_decision_takes_the_pair_off_the_list_once(db_url, engine):
    load(db_url)
    a, b = ids_of(db_url, "DBL2"), ids_of(db_url, "DBL1")
    try:
        record_not_doublon(engine, a, b, "alice", "twins, checked with the ID cards")
        try:
            record_not_doublon(engine, b, a, "bob", "again")
            raised = False
        except DecisionExists:
            raised = True
        with engine.connect() as conn:
            assert potential_doublons(conn) == []
            decisions = doublon_decisions(conn)
    finally:
        engine.dispose()
    assert raised
    assert [(d.patient_a, d.patient_b, d.decided_by, d.reason) for d in decisions] == [
        (min(a, b), max(a, b), "alice", "twins, checked with the ID cards")
    ]
    result = cli(db_url, "patient", "doublons")
    assert (result.exit_code, result.stdout.strip()) == (0, "no potential doublon")


def test_a_not_a_doublon_decision_follows_a_merge_into_a_survivor(db_url):
    def same(who: str) -> Person:
        return Person(who, birth_name="DUPRE", given_names=("LEA",), birth_date="19700101")

    with pamfr_server(db_url) as server:
        acks = send(
            server.port, [message("A28", same(w), f"ND-{w}") for w in ("ND1", "ND2", "ND3")]
        )
        assert [a.code for a in acks] == ["AA"] * 3
        one, two, three = (ids_of(db_url, w) for w in ("ND1", "ND2", "ND3"))
        engine = make_engine(db_url)
        try:
            record_not_doublon(engine, one, two, "alice", "two people, checked")
            # ND1 is found to be ND3: ND3 is not ND2 either
            (ack,) = send(server.port, [message("A40", same("ND3"), "ND-M", prior_ipp="ND1")])
            assert ack.code == "AA", ack.errs
            with engine.connect() as conn:
                pairs = potential_doublons(conn)
        finally:
            engine.dispose()
    assert pairs == []
    assert three > two > one


def test_the_other_worklists(db_url, engine):
    load(db_url)
    try:
        with engine.connect() as conn:
            removed = ins_removed_since(conn, 30)
            refusals = refusals_per_sender(conn)
            provisional = provisional_older_than(conn, 0)
            provisional_old = provisional_older_than(conn, 30)
    finally:
        engine.dispose()
    qualified = ids_of(db_url, "QUA1")
    assert [(r["patient_id"], r["finding"], r["event"]) for r in removed] == [
        (qualified, "ins-removed", "A31")
    ]
    assert {(r["sender"], r["outcome"], r["count"]) for r in refusals} == {
        ("GAM|CHU-X", "AE", 1),
        ("GAM|CHU-X", "AR", 1),
    }
    provisional_ids = {r["patient_id"] for r in provisional}
    assert {ids_of(db_url, "DBL1"), ids_of(db_url, "QUA1")} <= provisional_ids
    assert ids_of(db_url, "COL1") not in provisional_ids  # qualifiée
    assert provisional_old == []  # created today


def test_the_trace_of_one_identity_in_csv_and_json(db_url):
    load(db_url)
    result = cli(db_url, "patient", "trace", "--ipp", "QUA1", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["ins"], r["status"], r["control_id"], r["event"]) for r in rows] == [
        (NIR_REMOVED, "qualifiee", "DESK-11", "A28"),
        (None, "provisoire", "DESK-12", "A31"),
    ]
    assert rows[0]["oid"] == "1.2.250.1.213.1.4.10"
    assert rows[0]["identity_mode"] == "INSI" and rows[0]["insi_query_date"] == "20211201"
    assert rows[0]["removed_why"] is None
    assert rows[1]["removed_why"].startswith("ins-removed: ")
    table = cli(db_url, "patient", "trace", "--ipp", "QUA1")
    parsed = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [r["ins"] for r in parsed] == [NIR_REMOVED, ""]
    assert [r["message_id"] for r in parsed] == [str(r["message_id"]) for r in rows]


def test_the_trace_of_a_time_range_and_its_bad_arguments(db_url):
    load(db_url)
    result = cli(db_url, "patient", "trace", "--since", "2000-01-01", "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["ins"] for r in rows if r["ins"]} == {NIR_REMOVED, NIR_SHARED}
    assert len({r["patient_id"] for r in rows}) >= 10
    future = cli(db_url, "patient", "trace", "--since", "2999-01-01", "--format", "json")
    assert json.loads(future.stdout) == []
    for bad in (["--since", "yesterday"], [], ["--ipp", "QUA1", "--since", "2000-01-01"]):
        wrong = cli(db_url, "patient", "trace", *bad)
        assert wrong.exit_code == 2, wrong.output
        assert "Traceback" not in wrong.output
