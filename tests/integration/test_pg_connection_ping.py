"""PostgreSQL: a pooled connection that the server dropped while it sat idle is replaced before
use, instead of failing the next batch (which would answer its messages AR 207)."""

from __future__ import annotations

import time

from sqlalchemy import create_engine, text

from pamfr.store.db import PING_AFTER_IDLE, make_engine


def test_a_connection_dropped_while_idle_is_replaced(pg_server_url) -> None:
    engine = make_engine(pg_server_url)
    with engine.connect() as conn:
        first = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": first}).scalar()
    admin.dispose()
    time.sleep(PING_AFTER_IDLE + 0.2)
    with engine.connect() as conn:
        second = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    assert second != first
    engine.dispose()
