"""PostgreSQL: the writes of a batch sent in one round trip (psycopg pipeline mode).

On a database over the network, or on a busy machine, each statement's round trip costs more
than its execution; a batch's inserts and updates need no answer, so they travel together.
The rows get their ids beforehand from the tables' sequences (one query for all of them).
"""

from __future__ import annotations

from sqlalchemy import Connection, Executable, bindparam, text
from sqlalchemy.exc import DBAPIError

_NEXT_IDS = text(
    "SELECT ARRAY(SELECT nextval(pg_get_serial_sequence('patient', 'id'))"
    " FROM generate_series(1, :patients)),"
    " ARRAY(SELECT nextval(pg_get_serial_sequence('message', 'id'))"
    " FROM generate_series(1, :messages))"
).bindparams(bindparam("patients"), bindparam("messages"))

_compiled: dict[tuple[int, tuple[str, ...]], tuple[Executable, str]] = {}


def next_ids(conn: Connection, patients: int, messages: int) -> tuple[list[int], list[int]]:
    """Ids for new patient and message rows; an id left unused is a gap, as after a rollback."""
    row = conn.execute(_NEXT_IDS, {"patients": patients, "messages": messages}).one()
    return list(row[0]), list(row[1])


def _sql(conn: Connection, statement: Executable, keys: tuple[str, ...]) -> str:
    cache_key = (id(statement), keys)
    cached = _compiled.get(cache_key)
    if cached is None or cached[0] is not statement:
        compiled = statement.compile(dialect=conn.dialect, column_keys=list(keys))
        cached = _compiled[cache_key] = (statement, compiled.string)
    return cached[1]


def send(conn: Connection, writes: list[tuple[Executable, list[dict]]]) -> None:
    """Run each statement over its rows, all in one pipeline, inside the caller's transaction.
    A failure comes out as the SQLAlchemy exception the same statement would have raised."""
    driver = conn.connection.driver_connection
    batches = [(_sql(conn, stmt, tuple(rows[0])), rows) for stmt, rows in writes if rows]
    try:
        with driver.pipeline(), driver.cursor() as cursor:
            for sql, rows in batches:
                cursor.executemany(sql, rows)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise DBAPIError.instance(
            ";\n".join(sql for sql, _ in batches),
            None,
            exc,
            conn.dialect.loaded_dbapi.Error,
            hide_parameters=True,
            dialect=conn.dialect,
            ismulti=True,
        ) from exc
