"""StoredIdentity (pamfr/identity/stored.py): the typed value the read side builds and every
reader is given; `as_json` is the `pamfr patient show --json` document."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from pamfr.identity.ins import Ins, InsKind
from pamfr.identity.model import Identifier
from pamfr.identity.stored import StoredIdentity
from tests.unit.test_fhir_patient import NIR, view

INS_TEST = "1.2.250.1.213.1.4.10"


def identity(**changes) -> StoredIdentity:
    base = StoredIdentity(
        id=3,
        active=True,
        merged_into=None,
        identifiers=(Identifier("IPP3", "PI", "CHU-X", "1.2.250.1.999.1.1"),),
        ins=Ins(NIR, INS_TEST),
        ins_usable=True,
        ins_collision=False,
        birth_name="MARTIN",
        first_given_name="ÈVE",
        birth_given_names=("ÈVE", "MARIE"),
        used_name=None,
        used_given_name=None,
        birth_date="1979",
        sex="F",
        birth_place_insee="63220",
        status="qualifiee",
        attributes=("homonyme",),
        other_status_codes=(),
        identity_mode="INSI",
        insi_query_date="20211201",
        identity_document=None,
        links=(5,),
        created_at=datetime(2024, 3, 6, 11, 11, 54, tzinfo=UTC),
        updated_at=datetime(2024, 3, 6, 12, 0, tzinfo=UTC),
    )
    return dataclasses.replace(base, **changes)


def test_as_json_is_the_show_document_with_the_ins_listed_last_as_an_identifier():
    document = identity().as_json()
    assert json.dumps(document, ensure_ascii=False) == (
        '{"id": 3, "active": true, "merged_into": null, "identifiers": ['
        '{"value": "IPP3", "type": "PI", "authority": "CHU-X", "oid": "1.2.250.1.999.1.1"}, '
        f'{{"value": "{NIR}", "type": "INS", "authority": null, "oid": "{INS_TEST}"}}], '
        f'"ins": {{"value": "{NIR}", "oid": "{INS_TEST}", "kind": "NIR-TEST"}}, '
        '"ins_usable": true, "ins_collision": false, "birth_name": "MARTIN", '
        '"first_given_name": "ÈVE", "birth_given_names": ["ÈVE", "MARIE"], "used_name": null, '
        '"used_given_name": null, "birth_date": "1979", "sex": "F", "birth_place_insee": "63220", '
        '"status": "qualifiee", "attributes": ["homonyme"], "other_status_codes": [], '
        '"identity_mode": "INSI", "insi_query_date": "20211201", "identity_document": null, '
        '"links": [5], "created_at": "2024-03-06T11:11:54+00:00", '
        '"updated_at": "2024-03-06T12:00:00+00:00"}'
    )


def test_an_identifier_without_oid_shows_null_and_no_ins_shows_none():
    document = identity(identifiers=(Identifier("IPP3", "PI", "HOSP NS"),), ins=None).as_json()
    assert document["identifiers"] == [
        {"value": "IPP3", "type": "PI", "authority": "HOSP NS", "oid": None}
    ]
    assert document["ins"] is None


@pytest.mark.parametrize(
    "value",
    [identity(), identity(ins=None, ins_usable=False, links=()), identity(merged_into=9)],
)
def test_from_json_reads_back_what_as_json_wrote(value):
    document = json.loads(json.dumps(value.as_json()))
    assert StoredIdentity.from_json(document) == value
    assert StoredIdentity.from_json(document).as_json() == document


def test_from_json_takes_the_ins_from_ins_never_from_the_identifiers():
    read = StoredIdentity.from_json(view())
    assert read.ins == Ins(NIR, "1.2.250.1.213.1.4.8") and read.ins_kind is InsKind.NIR
    assert [i.type for i in read.identifiers] == ["PI"]


def test_the_value_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        identity().active = False  # type: ignore[misc]
