"""Assigning authorities: one authority, whether a GAM names it by namespace, OID or both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from pamfr.identity.identifiers import BILLING_NIR_TYPE
from pamfr.identity.ins import INS_OIDS
from pamfr.identity.model import Identifier


def canonical(ident: Identifier, oids_by_namespace: Mapping[str, str]) -> Identifier:
    """The identifier with the OID of its namespace filled in when that pair is known, so
    that `HOP`, `HOP&1.2.3` and `&1.2.3` all key on `1.2.3`. An INS authority's OID is
    filled in only for the billing NIR (NH): an identifier that the INS gate never saw is
    never put under the OID that FHIR and the read side take for the INS."""
    if ident.oid or not ident.authority:
        return ident
    oid = oids_by_namespace.get(ident.authority)
    if oid and not may_take(ident.type, oid):
        return ident
    return replace(ident, oid=oid) if oid else ident


def may_take(identifier_type: str, oid: str) -> bool:
    """Whether an identifier of this CX-5 named by namespace alone may be keyed on `oid`."""
    return oid not in INS_OIDS or identifier_type == BILLING_NIR_TYPE


def named_pairs(identifiers: tuple[Identifier, ...]) -> dict[str, str]:
    """The (namespace, OID) pairs a message names together."""
    return {i.authority: i.oid for i in identifiers if i.authority and i.oid}
