"""Assigning authorities: one authority, whether a GAM names it by namespace, OID or both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from pamfr.identity.model import Identifier


def canonical(ident: Identifier, oids_by_namespace: Mapping[str, str]) -> Identifier:
    """The identifier with the OID of its namespace filled in when that pair is known, so
    that `HOP`, `HOP&1.2.3` and `&1.2.3` all key on `1.2.3`."""
    if ident.oid or not ident.authority:
        return ident
    oid = oids_by_namespace.get(ident.authority)
    return replace(ident, oid=oid) if oid else ident


def named_pairs(identifiers: tuple[Identifier, ...]) -> dict[str, str]:
    """The (namespace, OID) pairs a message names together."""
    return {i.authority: i.oid for i in identifiers if i.authority and i.oid}
