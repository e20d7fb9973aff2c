"""Two receivers (two servers, two engines) on one PostgreSQL database, sent conflicting merges,
identifier changes and one INS for two patients at the same time: the store stays consistent.

No IPP on two patients, no merge cycle nor chain (a merged record names its final survivor),
an INS given to two patients at once flagged on both, every change in the history (the history
rebuilds each patient exactly), and each conflict resolved one way or the other, never both.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

from sqlalchemy import func, select

from pamfr.hl7.samples import Person, message, nir_with_key
from pamfr.store.db import make_engine, upgrade
from pamfr.store.readside import all_patient_ids, patient_history, patient_view
from pamfr.store.schema import history, identifier, patient
from pamfr.store.schema import message as message_table
from pamfr.transport.client import MLLPClient
from tests.conftest import _fresh_pg_schema
from tests.helpers import pamfr_server, parse_ack, send
from tests.historycheck import as_history_fields, rebuilt_view

ROUNDS = 4
PATIENTS = 14  # per round
_ids = itertools.count(1)
_names = itertools.count(1)


def msg(event: str, ipp: str, *, prior: str | None = None, ins: str | None = None) -> str:
    # A distinct birth name per message: whatever creates a patient leaves a mark in its history.
    person = Person(ipp, birth_name=f"NAME-{next(_names)}", ins=ins)
    return message(event, person, f"K{next(_ids)}", prior_ipp=prior)


def round_ins(r: int) -> str:
    return nir_with_key(f"2790375123{r:03d}")


def conflicts(r: int) -> dict[str, tuple[str, str]]:
    """One round: for each conflict, the message for receiver A and the one for receiver B."""
    x = [f"R{r}X{i}" for i in range(PATIENTS)]
    return {
        # opposite merges: one wins, the other finds its target merged (AE)
        "opposite": (msg("A40", x[1], prior=x[0]), msg("A40", x[0], prior=x[1])),
        # two patients renamed onto one new IPP: one wins, the other is AE 205
        "same_new_ipp": (msg("A47", f"R{r}N", prior=x[2]), msg("A47", f"R{r}N", prior=x[3])),
        # merge of a patient while it is renamed
        "merge_vs_rename_source": (msg("A40", x[5], prior=x[4]), msg("A47", f"R{r}S", prior=x[4])),
        # merge into a patient while it is renamed
        "merge_vs_rename_target": (msg("A40", x[7], prior=x[6]), msg("A47", f"R{r}T", prior=x[7])),
        # a chain: 8 into 9 while 9 goes into 10
        "chain": (msg("A40", x[9], prior=x[8]), msg("A40", x[10], prior=x[9])),
        # the same new patient created on both
        "same_create": (msg("A28", f"R{r}C"), msg("A28", f"R{r}C")),
        # two merges into one unknown target: the first renames, the second merges into it
        "rename_by_merge": (msg("A40", f"R{r}U", prior=x[12]), msg("A40", f"R{r}U", prior=x[13])),
        # one INS given to two new patients at once: both applied, both flagged
        "same_ins": (
            msg("A28", f"R{r}I1", ins=round_ins(r)),
            msg("A28", f"R{r}I2", ins=round_ins(r)),
        ),
    }


async def send_one(port: int, text: str) -> str:
    async with await MLLPClient.connect("127.0.0.1", port) as client:
        return parse_ack(await client.send(text.encode())).code


async def fire(port_a: int, port_b: int, rounds: list[dict]) -> list[dict[str, tuple[str, str]]]:
    """Every message of every round at once, each on its own connection."""
    tasks = []
    for round_ in rounds:
        for a, b in round_.values():
            tasks += [send_one(port_a, a), send_one(port_b, b)]
    codes = iter(await asyncio.gather(*tasks))
    return [{name: (next(codes), next(codes)) for name in round_} for round_ in rounds]


def test_two_receivers_one_postgresql(pg_server_url):
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    with pamfr_server(url) as a, pamfr_server(url) as b:
        setup = [msg("A28", f"R{r}X{i}") for r in range(ROUNDS) for i in range(PATIENTS)]
        assert {ack.code for ack in send(a.port, setup)} == {"AA"}
        rounds = [conflicts(r) for r in range(ROUNDS)]
        results = asyncio.run(fire(a.port, b.port, rounds))

    for result in results:
        assert Counter(result["opposite"]) == Counter({"AA": 1, "AE": 1})
        assert Counter(result["same_new_ipp"]) == Counter({"AA": 1, "AE": 1})
        assert result["same_create"] == ("AA", "AA")
        assert result["merge_vs_rename_source"] == ("AA", "AA")
        assert result["merge_vs_rename_target"] == ("AA", "AA")
        assert set(result["chain"]) <= {"AA", "AE"} and result["chain"][1] == "AA"
        assert result["rename_by_merge"] == ("AA", "AA")
        assert result["same_ins"] == ("AA", "AA")

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for r in range(ROUNDS):
                flagged = [patient_view(conn, ipp_owner(conn, f"R{r}I{n}")) for n in (1, 2)]
                assert [(v["ins_collision"], v["ins_usable"]) for v in flagged] == [
                    (True, False)
                ] * 2
            check_store(conn, rounds)
        # A merge of the two resolves the collision: the survivor's INS is usable again.
        with pamfr_server(url) as a:
            merges = [msg("A40", f"R{r}I1", prior=f"R{r}I2") for r in range(ROUNDS)]
            assert {ack.code for ack in send(a.port, merges)} == {"AA"}
        with engine.connect() as conn:
            for r in range(ROUNDS):
                survivor = patient_view(conn, ipp_owner(conn, f"R{r}I1"))
                assert (survivor["ins_collision"], survivor["ins_usable"]) == (False, True)
            check_store(conn, rounds)
    finally:
        engine.dispose()


def scalar(conn, query):
    return conn.execute(query).scalar_one()


def ipp_owner(conn, value: str) -> int | None:
    query = select(identifier.c.patient_id).where(identifier.c.value == value)
    return conn.execute(query).scalar_one_or_none()


def check_store(conn, rounds: list[dict]) -> None:
    # No IPP on two patients (a fortiori on two active ones), every patient has one, and the
    # patient created on both receivers at once exists once.
    duplicated = conn.execute(
        select(identifier.c.authority_key, identifier.c.value)
        .where(identifier.c.type == "PI")
        .group_by(identifier.c.authority_key, identifier.c.value)
        .having(func.count() > 1)
    ).all()
    assert duplicated == []
    with_ipp = select(identifier.c.patient_id).where(identifier.c.type == "PI")
    assert scalar(conn, select(func.count()).where(~patient.c.id.in_(with_ipp))) == 0
    for r in range(ROUNDS):
        assert scalar(conn, select(func.count()).where(identifier.c.value == f"R{r}C")) == 1

    # No merge cycle and no chain: a merged record names an active survivor.
    rows = {
        r.id: r for r in conn.execute(select(patient.c.id, patient.c.active, patient.c.merged_into))
    }
    for pid, row in rows.items():
        assert row.active == (row.merged_into is None), pid
        if row.merged_into is not None:
            assert rows[row.merged_into].active, f"{pid} points at merged {row.merged_into}"

    # No lost history row: each patient rebuilds exactly from its history...
    for pid in all_patient_ids(conn):
        view = as_history_fields(patient_view(conn, pid))
        assert rebuilt_view(patient_history(conn, pid)) == view, pid

    # ... history rows come only from applied messages, and every applied message left some
    # (a creation, a merge, a rename, or a note on the merged record an A47 did not rename)
    # except an A40 whose source had already been renamed away: the merge of
    # "merge_vs_rename_source" when the rename came first.
    logged = conn.execute(
        select(message_table.c.id, message_table.c.outcome, message_table.c.control_id)
    )
    outcome = {m.id: (m.outcome, m.control_id) for m in logged}
    with_history = set(conn.execute(select(history.c.message_id).distinct()).scalars())
    assert {outcome[m][0] for m in with_history} == {"AA"}
    silent = {cid for m, (code, cid) in outcome.items() if code == "AA" and m not in with_history}
    expected = {
        control_id(round_["merge_vs_rename_source"][0])
        for r, round_ in enumerate(rounds)
        if ipp_owner(conn, f"R{r}S") is not None
    }
    assert silent == expected


def control_id(text: str) -> str:
    return text.split("|")[9]
