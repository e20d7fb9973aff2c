"""The authority pairs a receiver learnt follow its transactions and savepoints: known to
later transactions once committed, forgotten when rolled back (store/authorities)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pamfr.store.authorities import AuthorityBook

NOW = datetime(2024, 3, 6, tzinfo=UTC)


class _Conn:
    """Answers every look-up with "unknown" and counts them; accepts every write."""

    def __init__(self) -> None:
        self.lookups = 0

    def execute(self, statement, params=None):
        self.lookups += "SELECT" in str(statement)
        return self

    def scalar_one_or_none(self):
        return None


def test_what_a_committed_transaction_learnt_is_known_after_it():
    book, conn = AuthorityBook(), _Conn()
    with book.scope():
        book.learn(conn, "HOP", "1.2.3", NOW)
    before = conn.lookups
    with book.scope():
        book.learn(conn, "HOP", "1.2.3", NOW)
    assert conn.lookups == before  # known: no look-up


def test_a_rolled_back_transaction_or_savepoint_learnt_nothing():
    book, conn = AuthorityBook(), _Conn()
    with pytest.raises(RuntimeError), book.scope():
        book.learn(conn, "HOP", "1.2.3", NOW)
        raise RuntimeError
    with book.scope():
        with book.scope():
            book.learn(conn, "KEPT", "1.2.4", NOW)  # a savepoint released
        with pytest.raises(RuntimeError), book.scope():
            book.learn(conn, "DROPPED", "1.2.5", NOW)  # a savepoint rolled back
            raise RuntimeError
    lookups = conn.lookups
    with book.scope():
        book.learn(conn, "KEPT", "1.2.4", NOW)
    assert conn.lookups == lookups
    for namespace in ("HOP", "DROPPED"):
        with book.scope():
            book.learn(conn, namespace, "1.2.9", NOW)
        assert conn.lookups > lookups
        lookups = conn.lookups
