"""Writes prepared as (statement, rows) pairs: sent one statement after another here, or all
together with the COMMIT by the PostgreSQL strategy (store/pgpipeline)."""

from __future__ import annotations

from sqlalchemy import Connection, Executable

Writes = list[tuple[Executable, list[dict]]]


def execute(conn: Connection, writes: Writes) -> None:
    for statement, rows in writes:
        if rows:
            conn.execute(statement, rows)
