"""A patient as the store holds it, read back: the one value every reader is given.

`pamfr.store.readside` (a patient now, with its A24 links) and `pamfr.store.fhirquery` (a
version rebuilt from the history) build a `StoredIdentity`; `pamfr.fhir.patient` maps it to an
FR Core Patient, and `StoredIdentity.as_json` is the document `pamfr patient show --json`
prints (a contract: README, tests/integration/test_readside_pinned.py), which the desk and the
replay's expected state read too. Pure: no database, no HL7, no FHIR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pamfr.identity.identifiers import states_ins
from pamfr.identity.ins import INS_OIDS, Ins, InsKind
from pamfr.identity.model import INS_TYPE, Identifier


@dataclass(frozen=True, slots=True)
class StoredIdentity:
    """One patient, as it is now or as one version of it was.

    `identifiers` are those it holds (IPP, NH...; "" when no namespace or no OID), never an
    INS statement: its INS is `ins`, the row's, kept by the INS gate, or None. `status` is a
    `pamfr.identity.model.Status` value, `attributes` `Attribute` values, as stored (a store
    of an older version may hold others). `links` are the patients linked to this one (A24),
    each as its survivor, empty for a version rebuilt from the history (FHIR shows none).
    `created_at` and `updated_at` are aware times.
    """

    id: int
    active: bool
    merged_into: int | None  # the final survivor: merges keep chains flat
    identifiers: tuple[Identifier, ...]
    ins: Ins | None
    ins_usable: bool
    ins_collision: bool
    birth_name: str | None
    first_given_name: str | None
    birth_given_names: tuple[str, ...]
    used_name: str | None
    used_given_name: str | None
    birth_date: str | None  # YYYY, YYYY-MM or YYYY-MM-DD
    sex: str | None
    birth_place_insee: str | None
    status: str
    attributes: tuple[str, ...]
    other_status_codes: tuple[str, ...]  # PID-32 codes of table 0445 besides status/attributes
    identity_mode: str | None  # ZFD-5
    insi_query_date: str | None  # ZFD-6
    identity_document: str | None  # ZFD-7
    links: tuple[int, ...]
    created_at: datetime
    updated_at: datetime

    @property
    def ins_kind(self) -> InsKind | None:
        return INS_OIDS.get(self.ins.oid) if self.ins is not None else None

    def as_json(self) -> dict[str, Any]:
        """The document `pamfr patient show --json` prints (its keys in this order): the
        identifiers listed with the INS last, as an identifier of type INS."""
        identifiers = [_identifier_json(i) for i in self.identifiers]
        ins = None
        if self.ins is not None:
            kind = self.ins_kind
            ins = {
                "value": self.ins.value,
                "oid": self.ins.oid,
                "kind": kind.value if kind else None,
            }
            identifiers.append(
                {"value": self.ins.value, "type": INS_TYPE, "authority": None, "oid": self.ins.oid}
            )
        return {
            "id": self.id,
            "active": self.active,
            "merged_into": self.merged_into,
            "identifiers": identifiers,
            "ins": ins,
            "ins_usable": self.ins_usable,
            "ins_collision": self.ins_collision,
            "birth_name": self.birth_name,
            "first_given_name": self.first_given_name,
            "birth_given_names": list(self.birth_given_names),
            "used_name": self.used_name,
            "used_given_name": self.used_given_name,
            "birth_date": self.birth_date,
            "sex": self.sex,
            "birth_place_insee": self.birth_place_insee,
            "status": self.status,
            "attributes": list(self.attributes),
            "other_status_codes": list(self.other_status_codes),
            "identity_mode": self.identity_mode,
            "insi_query_date": self.insi_query_date,
            "identity_document": self.identity_document,
            "links": list(self.links),
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> StoredIdentity:
        """A document `as_json` gave (a saved `patient show --json`) read back; every key of
        it is required. Its identifiers that state an INS are left out: `ins` is the INS."""
        ins = document["ins"]
        return cls(
            id=document["id"],
            active=document["active"],
            merged_into=document["merged_into"],
            identifiers=tuple(
                i
                for i in (
                    Identifier(d["value"], d["type"], d["authority"] or "", d["oid"] or "")
                    for d in document["identifiers"]
                )
                if not states_ins(i)
            ),
            ins=Ins(ins["value"], ins["oid"]) if ins else None,
            ins_usable=document["ins_usable"],
            ins_collision=document["ins_collision"],
            birth_name=document["birth_name"],
            first_given_name=document["first_given_name"],
            birth_given_names=tuple(document["birth_given_names"]),
            used_name=document["used_name"],
            used_given_name=document["used_given_name"],
            birth_date=document["birth_date"],
            sex=document["sex"],
            birth_place_insee=document["birth_place_insee"],
            status=document["status"],
            attributes=tuple(document["attributes"]),
            other_status_codes=tuple(document["other_status_codes"]),
            identity_mode=document["identity_mode"],
            insi_query_date=document["insi_query_date"],
            identity_document=document["identity_document"],
            links=tuple(document["links"]),
            created_at=datetime.fromisoformat(document["created_at"]),
            updated_at=datetime.fromisoformat(document["updated_at"]),
        )


def _identifier_json(ident: Identifier) -> dict[str, Any]:
    return {
        "value": ident.value,
        "type": ident.type,
        "authority": ident.authority,
        "oid": ident.oid or None,
    }
