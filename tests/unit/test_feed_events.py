"""The feed's events derived from history records, without a database: one case per
operation the repository records (pamfr/store/repository.py)."""

from __future__ import annotations

from pamfr.identity.changefeed import EVENT_TYPES, Recorded, derive
from pamfr.identity.collision import collision_note, collision_resolved_note
from pamfr.identity.findings import Finding, Note


def kinds(events: list[dict]) -> list[tuple]:
    return [(e["type"], e["patient_id"], e["other_patient_id"], e["detail"]) for e in events]


def test_a_create_is_one_event_whatever_it_set():
    record = Recorded(
        7,
        "create",
        {
            "birth_name": [None, "X"],
            "status": [None, "qualifiee"],
            "ins_value": [None, "1"],
            "active": [None, True],
        },
    )
    assert kinds(derive([record])) == [("patient.created", 7, None, {})]


def test_an_a31_unknown_patient_is_created_too():
    record = Recorded(3, "update", {"active": [None, True], "birth_name": [None, "X"]})
    assert kinds(derive([record]))[0][0] == "patient.created"


def test_an_update_names_the_fields_not_their_values():
    record = Recorded(7, "update", {"used_name": ["A", "B"], "birth_date": ["1979", "1979-03-28"]})
    (event,) = derive([record])
    assert event["type"] == "patient.updated"
    assert event["detail"] == {"fields": ["birth_date", "used_name"]}
    assert "A" not in repr(event) and "1979" not in repr(event)


def test_status_ins_and_fields_each_have_their_event():
    record = Recorded(
        7,
        "update",
        {
            "first_given_name": ["A", "B"],
            "status": ["provisoire", "qualifiee"],
            "ins_value": [None, "279035121518989"],
            "ins_oid": [None, "1.2.250.1.213.1.4.10"],
            "identifiers": [["P1^PI^x"], ["P1^PI^x", "9^NH^y"]],
        },
    )
    assert kinds(derive([record])) == [
        ("patient.updated", 7, None, {"fields": ["first_given_name", "identifiers"]}),
        ("patient.status-changed", 7, None, {"from": "provisoire", "to": "qualifiee"}),
        ("patient.ins-added", 7, None, {"oid": "1.2.250.1.213.1.4.10"}),
    ]
    assert "279035121518989" not in repr(derive([record]))


def test_ins_removed_gives_the_reason_of_the_notes():
    removed = Note(Finding.INS_REMOVED, "stored INS removed: the identity is now provisoire")
    record = Recorded(
        7,
        "update",
        {"ins_value": ["1", None], "ins_oid": ["o", None], "status": ["qualifiee", "provisoire"]},
        [removed],
    )
    assert kinds(derive([record])) == [
        ("patient.status-changed", 7, None, {"from": "qualifiee", "to": "provisoire"}),
        ("patient.ins-removed", 7, None, {"reason": "ins-removed"}),
    ]


def test_a47_ins_deleted_and_replaced():
    deleted = Recorded(
        4,
        "change_ins",
        {"ins_value": ["1", None], "ins_oid": ["o", None]},
        [Note(Finding.INS_DELETED, "INS deleted by the sender (A47)")],
    )
    assert kinds(derive([deleted])) == [("patient.ins-removed", 4, None, {"reason": "ins-deleted"})]
    replaced = Recorded(
        4,
        "change_ins",
        {"ins_value": ["1", "2"]},
        [{"finding": "ins-replaced", "text": "INS replaced by the sender (A47)"}],
    )
    assert kinds(derive([replaced])) == [
        ("patient.ins-removed", 4, None, {"reason": "ins-replaced"}),
        ("patient.ins-added", 4, None, {"oid": None}),
    ]


def test_a_merge_is_one_event_from_source_to_survivor():
    records = [
        Recorded(2, "merge", {"merged_into": [5, 9]}),  # merged into the source before
        Recorded(5, "merge", {"active": [True, False], "merged_into": [None, 9]}),
        Recorded(9, "merge", {"merged_patients": [[], [2, 5]]}),
    ]
    assert kinds(derive(records)) == [
        ("patient.merged", 2, 9, {"survivor": 9, "previous_survivor": 5}),
        ("patient.merged", 5, 9, {"survivor": 9}),
    ]


def test_a_merge_of_a_source_in_collision_resolves_it():
    records = [
        Recorded(
            5,
            "merge",
            {"active": [True, False], "merged_into": [None, 9], "ins_collision": [True, False]},
        ),
        Recorded(6, "collision", {"ins_collision": [True, False]}, [collision_resolved_note()]),
        Recorded(9, "merge", {"merged_patients": [[], [5]]}),
    ]
    assert kinds(derive(records)) == [
        ("patient.merged", 5, 9, {"survivor": 9}),
        ("ins.collision", 5, 6, {"state": "resolved"}),
        ("ins.collision", 6, 5, {"state": "resolved"}),
    ]


def test_a47_and_a40_renames_give_old_and_new_identifiers():
    change = {"identifiers": [["C1^PI^a", "9^NH^b"], ["C5^PI^a", "9^NH^b"]]}
    for operation in ("change_id", "merge"):
        assert kinds(derive([Recorded(3, operation, change)])) == [
            ("patient.identifier-changed", 3, None, {"old": ["C1^PI^a"], "new": ["C5^PI^a"]})
        ]


def test_links_name_the_peer_patient_when_known():
    both = [
        Recorded(1, "link", {"link:L2^PI^a": [None, True]}),
        Recorded(2, "link", {"link:L1^PI^a": [None, True]}),
    ]
    assert kinds(derive(both)) == [
        ("patient.linked", 1, 2, {"identifier": "L2^PI^a"}),
        ("patient.linked", 2, 1, {"identifier": "L1^PI^a"}),
    ]
    one = [Recorded(1, "unlink", {"link:L2^PI^a": [True, None]})]
    assert kinds(derive(one)) == [("patient.unlinked", 1, None, {"identifier": "L2^PI^a"})]


def test_a_collision_is_told_on_both_holders():
    records = [
        Recorded(4, "collision", {"ins_collision": [False, True]}, [collision_note()]),
        Recorded(
            8,
            "create",
            {"active": [None, True], "ins_value": [None, "1"], "ins_collision": [None, True]},
            [collision_note()],
        ),
    ]
    assert kinds(derive(records)) == [
        ("ins.collision", 4, 8, {"state": "detected"}),
        ("patient.created", 8, None, {}),
        ("ins.collision", 8, 4, {"state": "detected"}),
    ]


def test_notes_without_a_change_make_no_event():
    merged_away = Note(Finding.MERGED_AWAY, "this IPP belongs to a patient merged into another")
    assert derive([Recorded(1, "update", {}, [merged_away])]) == []
    assert derive([Recorded(1, "change_id", {}, [merged_away])]) == []


def test_every_type_is_declared():
    assert len(set(EVENT_TYPES)) == 10
