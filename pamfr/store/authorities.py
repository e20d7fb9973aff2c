"""Assigning authorities named by namespace and OID together, learnt from the messages.

A GAM may name its authority `HOP&1.2.3` in one message and `HOP` in the next: both are one
authority, keyed on its OID. The pairs live in the `authority` table; each process keeps those
it has seen committed, so the usual message costs no query. A pair first seen re-keys the
identifiers and links recorded under the namespace alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, exists, insert, select, update
from sqlalchemy.orm import aliased

from pamfr.identity.authority import canonical, named_pairs
from pamfr.identity.identifiers import BILLING_NIR_TYPE
from pamfr.identity.ins import INS_OIDS
from pamfr.identity.model import Identifier, PatientIdentity
from pamfr.store.schema import authority, identifier, patient_link
from pamfr.store.sink import WriteSink

_FIND = select(authority.c.oid).where(authority.c.namespace == bindparam("ns"))
_INSERT = insert(authority)
_other = aliased(identifier)
_REKEY_IDENTIFIERS = (
    update(identifier)
    .where(
        identifier.c.authority_key == bindparam("ns"),
        identifier.c.oid == "",
        ~exists().where(
            and_(
                _other.c.authority_key == bindparam("oid"),
                _other.c.value == identifier.c.value,
                _other.c.type == identifier.c.type,
            )
        ),
    )
    .values(oid=bindparam("oid"), authority_key=bindparam("oid"))
)
# Under an INS authority's OID, only the billing NIR is re-keyed (authority.may_take).
_REKEY_BILLING = _REKEY_IDENTIFIERS.where(identifier.c.type == BILLING_NIR_TYPE)


class AuthorityBook:
    """One per receiver (each thread has its own scopes). What it reads or learns inside a
    transaction is known to later transactions only once that transaction commits: each
    transaction and each savepoint runs inside `scope()`, whose pairs are kept when the block
    ends normally (given to the enclosing scope, or known for good at the outermost) and
    dropped when it raises, so what a rolled-back transaction or savepoint learnt is never
    taken as known."""

    def __init__(self) -> None:
        self._known: dict[str, str] = {}
        self._local = threading.local()  # each thread's open scopes, innermost last

    @property
    def _scopes(self) -> list[dict[str, str]]:
        scopes = getattr(self._local, "scopes", None)
        if scopes is None:
            scopes = self._local.scopes = []
        return scopes

    @contextmanager
    def scope(self) -> Iterator[None]:
        """Around a transaction (outside the block that commits it, so that a failed COMMIT
        drops what it learnt) or a savepoint."""
        pending: dict[str, str] = {}
        self._scopes.append(pending)
        try:
            yield
        finally:
            popped = self._scopes.pop()
            assert popped is pending
        # reached only when the block did not raise
        (self._scopes[-1] if self._scopes else self._known).update(pending)

    def _oid(self, conn: Connection, namespace: str) -> str | None:
        oid = self._known.get(namespace)
        if oid is None:
            oid = next((s[namespace] for s in reversed(self._scopes) if namespace in s), None)
        if oid is None:
            oid = conn.execute(_FIND, {"ns": namespace}).scalar_one_or_none()
            if oid is not None:
                self._remember(namespace, oid)
        return oid

    def _remember(self, namespace: str, oid: str) -> None:
        (self._scopes[-1] if self._scopes else self._known)[namespace] = oid

    def canonical(self, conn: Connection, ident: Identifier) -> Identifier:
        if ident.oid or not ident.authority:
            return ident
        oid = self._oid(conn, ident.authority)
        return canonical(ident, {ident.authority: oid}) if oid else ident

    def canonical_identity(
        self,
        conn: Connection,
        identity: PatientIdentity,
        now: datetime,
        sink: WriteSink | None = None,
    ) -> PatientIdentity:
        for namespace, oid in named_pairs(identity.identifiers).items():
            self.learn(conn, namespace, oid, now, sink)
        idents = tuple(self.canonical(conn, i) for i in identity.identifiers)
        return identity if idents == identity.identifiers else replace(identity, identifiers=idents)

    def learn(
        self,
        conn: Connection,
        namespace: str,
        oid: str,
        now: datetime,
        sink: WriteSink | None = None,
    ) -> None:
        """Record a (namespace, OID) pair the first time it is seen. A namespace already
        known with another OID keeps its first one. Written through the transaction's `sink`
        when given: the identifiers it re-keys include those of earlier messages still held."""
        if self._oid(conn, namespace) is not None:
            return
        execute = sink.execute if sink is not None else conn.execute
        execute(_INSERT, {"namespace": namespace, "oid": oid, "created_at": now})
        rekey = _REKEY_BILLING if oid in INS_OIDS else _REKEY_IDENTIFIERS
        execute(rekey, {"ns": namespace, "oid": oid})
        for side in ("a", "b"):
            column = patient_link.c[f"{side}_authority_key"]
            execute(update(patient_link).where(column == namespace).values({column: oid}))
        self._remember(namespace, oid)
