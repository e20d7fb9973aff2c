"""PostgreSQL: the receiver's connection keeps its statements prepared. A prepared statement may
be planned once, while the tables are young and have no statistics, and that plan is reused
until the next ANALYZE. The look-ups of every batch must use their index however much the
tables have grown since: a plan that scans the table makes each batch cost more than the last.
"""

from __future__ import annotations

from psycopg import sql
from sqlalchemy import Connection, Executable
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

from pamfr.identity.model import IPP_TYPE
from pamfr.store import messagelog, statements
from pamfr.store.db import make_engine, upgrade
from tests.conftest import _fresh_pg_schema

ROWS = 5000

GROW = f"""
INSERT INTO patient (created_at, updated_at) SELECT now(), now() FROM generate_series(1, {ROWS});
INSERT INTO identifier (patient_id, value, type, authority, oid, authority_key)
    SELECT id, 'IPP' || id, '{IPP_TYPE}', '', '', 'AUTH' FROM patient;
INSERT INTO message (received_at, door, raw, raw_size, outcome, dedup_key)
    SELECT now(), 'mllp', '\\x00', 1, 'AA', 'APP|FAC|' || g FROM generate_series(1, {ROWS}) g;
"""

IPP = {"k": "AUTH", "v": "IPP42", "t": IPP_TYPE}
LOOKUPS: dict[str, tuple[Executable, dict]] = {
    "duplicate": messagelog.processed_queries(["APP|FAC|7"])[0],
    "patient_by_ipp_locked": (statements.LOAD_BY_IPP_FOR_UPDATE, IPP),
    "identifiers_by_ipp": (statements.IDENTIFIERS_BY_IPP, IPP),
}


def _prepare(conn: Connection, name: str, statement: Executable, params: dict) -> tuple:
    """PREPARE the statement as SQL (positional parameters); the values to EXECUTE it with."""
    expanded = statement.compile(dialect=PGDialect_asyncpg()).construct_expanded_state(params)
    conn.exec_driver_sql(f"PREPARE {name} AS {expanded.statement}")
    return tuple(expanded.positional_parameters)


def _execute(conn: Connection, name: str, values: tuple, explain: bool = False) -> str:
    literals = sql.SQL(", ").join(sql.Literal(v) for v in values)
    query = sql.SQL("EXECUTE {}({})").format(sql.Identifier(name), literals)
    text = ("EXPLAIN " if explain else "") + query.as_string(conn.connection.driver_connection)
    return "\n".join(str(row[0]) for row in conn.exec_driver_sql(text))


def test_batch_lookups_planned_on_young_tables_still_use_their_index(pg_server_url) -> None:
    url = _fresh_pg_schema(pg_server_url)
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        # The worst case of the plan cache: the plan made at the first EXECUTE is kept.
        conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
        values = {name: _prepare(conn, name, *lookup) for name, lookup in LOOKUPS.items()}
        for name in LOOKUPS:
            _execute(conn, name, values[name])  # planned now, on empty tables
        conn.exec_driver_sql(GROW)
        plans = {name: _execute(conn, name, values[name], explain=True) for name in LOOKUPS}
    engine.dispose()

    scans = {name: plan for name, plan in plans.items() if "Seq Scan" in plan}
    assert not scans, scans
    assert all("Index" in plan for plan in plans.values()), plans
