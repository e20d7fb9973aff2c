"""A batch committed together must leave the store exactly as its messages committed one by one.

The group commit path looks up, locks and writes a batch's creates and updates together
(PostgreSQL: prefetch, held writes, one pipeline); anything that makes a later message depend on
an earlier one of the same batch (a repeated IPP, one patient designated twice, a merge, an
identifier change, a duplicate) must end that shortcut. Each batch below mixes those cases; the
store that took them as batches and the store that took them one at a time are compared row by
row, identifiers, history and outcomes included.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from pamfr.hl7.frame import Inbound, Outcome, Prepared
from pamfr.hl7.samples import Person, message, nir_with_key
from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine, upgrade
from pamfr.store.readside import all_patient_ids, patient_history, patient_view
from pamfr.store.schema import identifier
from tests.conftest import _fresh_pg_schema

OTHER_IPP = "^^^CHU-Y&1.2.250.1.999.2.2&ISO^PI"


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request, tmp_path: Path) -> list[str]:
    if request.param == "sqlite":
        urls = [f"sqlite:///{tmp_path / f'store{i}.db'}" for i in (1, 2)]
    else:
        server = request.getfixturevalue("pg_server_url")
        urls = [_fresh_pg_schema(server) for _ in (1, 2)]
    for url in urls:
        upgrade(url)
    return urls


class Batches:
    def __init__(self) -> None:
        self.n = 0

    def msg(self, event: str, person: Person, **kw) -> str:
        self.n += 1
        return message(event, person, f"B{self.n}", **kw)


def batches() -> list[list[str]]:
    b = Batches()
    p1, p2, p3 = (Person(ipp=f"P{i}", birth_name=f"NOM{i}") for i in (1, 2, 3))
    multi = Person(ipp="M4", extra_ids=(f"Y4{OTHER_IPP}",))
    multi_by_other = Person(ipp="Y4", authority="CHU-Y&1.2.250.1.999.2.2&ISO", used_name="AUTRE")
    n1, n2, n3 = (Person(ipp=f"N{i}") for i in (1, 2, 3))
    ins = nir_with_key("2790351215189")
    shared, alone = nir_with_key("2790351215200"), nir_with_key("2790351215201")
    setup = [b.msg("A28", p) for p in (p1, p2, p3, multi)]
    resent = b.msg("A31", Person(ipp="P1", used_name="RENVOI"))
    return [
        setup,
        # one patient designated by two IPPs in one batch; plain creates and updates around it
        [
            b.msg("A31", Person(ipp="P1", birth_name="NOM1", used_name="DUPONT")),
            b.msg("A28", n1),
            b.msg("A31", Person(ipp="M4", used_name="PREMIER", extra_ids=("Z9^^^^NH",))),
            b.msg("A31", multi_by_other),
            b.msg("A31", Person(ipp="P2", birth_name="NOM2", sex="M")),
            resent,
        ],
        # repeated IPPs: the second message must see the first one's creation or update
        [
            b.msg("A28", n2),
            b.msg("A31", Person(ipp="N2", used_name="MARIEE", ins=ins)),
            b.msg("A31", Person(ipp="P3", birth_name="NOM3", pid32=("PROV",))),
        ],
        [
            b.msg("A31", Person(ipp="P3", birth_name="NOM3", used_name="UN")),
            b.msg("A31", Person(ipp="P3", birth_name="NOM3", used_name="DEUX")),
            b.msg("A28", Person(ipp="N4")),
        ],
        # a merge in the middle, then an update of the merged patient, then a create
        [
            b.msg("A31", Person(ipp="P1", used_name="APRES")),
            b.msg("A40", Person(ipp="P3"), prior_ipp="P2"),
            b.msg("A31", Person(ipp="P2", used_name="TROPTARD")),
            b.msg("A28", n3),
        ],
        # an identifier change, an update under the new identifier, a refused message, a resend
        [
            b.msg("A31", Person(ipp="N1", used_name="ENCORE")),
            b.msg("A47", Person(ipp="N9"), prior_ipp="N3"),
            b.msg("A31", Person(ipp="N9", birth_name="RENOMME")),
            b.msg("A28", Person(ipp="N5", ins="279035121518900")),  # INS key wrong: AE
            resent,
            b.msg("A28", Person(ipp="N6")),
        ],
        # one INS for two new patients in one batch, then the first lets it go, a third takes it
        [
            b.msg("A28", Person(ipp="C1", ins=shared)),
            b.msg("A28", Person(ipp="C2", ins=shared)),
            b.msg("A28", Person(ipp="C4", ins=alone)),
            b.msg("A31", Person(ipp="C1", pid32=("PROV",))),
            b.msg("A28", Person(ipp="C3", ins=shared)),
        ],
        # a link then its removal in one batch; then a link recorded twice
        [
            b.msg("A24", Person(ipp="P1"), other=Person(ipp="N1")),
            b.msg("A37", Person(ipp="P1"), other=Person(ipp="N1")),
            b.msg("A31", Person(ipp="N6", used_name="LIEE")),
        ],
        [
            b.msg("A24", Person(ipp="N6"), other=Person(ipp="N4")),
            b.msg("A24", Person(ipp="N4"), other=Person(ipp="N6")),
        ],
    ]


def outcome_facts(outcomes: list[Outcome]) -> list[tuple]:
    return [(o.code, o.control_id, o.duplicate, o.error_text) for o in outcomes]


def snapshot(url: str) -> dict:
    """Every patient and its history, by IPP rather than by id (ids may differ: sequences)."""
    engine = make_engine(url)
    with engine.connect() as conn:
        names: dict[int, str] = {}
        for pid in all_patient_ids(conn):
            rows = conn.execute(
                select(identifier.c.value)
                .where(identifier.c.patient_id == pid, identifier.c.type == "PI")
                .order_by(identifier.c.value)
            )
            names[pid] = "+".join(r[0] for r in rows)

        def name(pid):
            return names.get(pid, pid) if isinstance(pid, int) else pid

        result = {}
        for pid, key in names.items():
            view = patient_view(conn, pid)
            view["id"] = key
            view["merged_into"] = name(view["merged_into"])
            view["links"] = [name(p) for p in view["links"]]
            history = []
            for row in patient_history(conn, pid):
                changes = row["changes"]
                if "merged_into" in changes:
                    changes["merged_into"] = [name(v) for v in changes["merged_into"]]
                if "merged_patients" in changes:
                    changes["merged_patients"] = [
                        [name(v) for v in ids] for ids in changes["merged_patients"]
                    ]
                history.append((row["control_id"], row["operation"], changes))
            result[key] = (view, history)
    engine.dispose()
    return result


def test_a_batch_leaves_the_store_as_its_messages_one_by_one(two_stores: list[str]) -> None:
    grouped_url, single_url = two_stores
    grouped, single = Receiver(make_engine(grouped_url)), Receiver(make_engine(single_url))
    codes = []
    for texts in batches():
        prepared: list[Prepared] = [grouped.prepare(Inbound(t.encode())) for t in texts]
        together = grouped.commit(prepared)
        alone = [single.commit([p])[0] for p in prepared]
        assert outcome_facts(together) == outcome_facts(alone)
        codes += [o.code for o in together]
    grouped.engine.dispose()
    single.engine.dispose()

    assert codes.count("AE") == 1 and set(codes) == {"AA", "AE"}

    after = snapshot(grouped_url)
    assert after == snapshot(single_url)
    # The cases the batches were written for did happen (so the comparison covers them).
    assert after["P2"][0]["merged_into"] == "P3"
    assert after["M4+Y4"][0]["used_name"] == "AUTRE"
    assert after["N2"][0]["used_name"] == "MARIEE" and after["N2"][0]["ins"] is not None
    assert after["N9"][0]["birth_name"] == "RENOMME"
    assert "N5" not in after and after["N6"][0]["used_name"] == "LIEE"
    assert after["P1"][0]["links"] == [] and after["N6"][0]["links"] == ["N4"]
    collisions = {
        k: (after[k][0]["ins"] is not None, after[k][0]["ins_collision"])
        for k in "C1 C2 C3 C4".split()
    }
    assert collisions == {
        "C1": (False, False),
        "C2": (True, True),
        "C3": (True, True),
        "C4": (True, False),
    }


def test_an_authority_learnt_in_a_batch_rekeys_the_identifiers_held_before_it(
    two_stores: list[str],
) -> None:
    """A batch's first message names its authority by namespace alone, the second by
    namespace and OID: the pair learnt re-keys the first one's identifier, even when the
    PostgreSQL look-ahead still held its insert."""
    grouped_url, single_url = two_stores
    grouped, single = Receiver(make_engine(grouped_url)), Receiver(make_engine(single_url))
    texts = [
        message("A28", Person("K1", authority="HOPK"), "K1"),
        message("A28", Person("K2", authority="HOPK&1.2.250.1.999.7.7&ISO"), "K2"),
    ]
    prepared = [grouped.prepare(Inbound(t.encode())) for t in texts]
    assert [o.code for o in grouped.commit(prepared)] == ["AA", "AA"]
    assert [single.commit([p])[0].code for p in prepared] == ["AA", "AA"]
    for receiver in (grouped, single):
        with receiver.engine.connect() as conn:
            keys = conn.execute(select(identifier.c.value, identifier.c.authority_key))
            assert sorted(keys) == [("K1", "1.2.250.1.999.7.7"), ("K2", "1.2.250.1.999.7.7")]
        receiver.engine.dispose()
