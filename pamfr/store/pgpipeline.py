"""PostgreSQL: a batch's statements sent together (psycopg pipeline mode).

On a database over the network, or on a busy machine, each statement's round trip costs more
than its execution. A batch's look-ups go in one round trip (`read`) and its writes with the
COMMIT in another (`send_and_commit`): the rows get their ids beforehand from the tables'
sequences, so no write waits for another's answer. The server still runs the statements one
after another.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Connection, Engine, Executable, bindparam, event, text
from sqlalchemy.exc import DBAPIError

# Ids for new patient and message rows; one left unused is a gap, as after a rollback.
NEXT_IDS = text(
    "SELECT ARRAY(SELECT nextval(pg_get_serial_sequence('patient', 'id'))"
    " FROM generate_series(1, :patients)) AS patient_ids,"
    " ARRAY(SELECT nextval(pg_get_serial_sequence('message', 'id'))"
    " FROM generate_series(1, :messages)) AS message_ids"
).bindparams(bindparam("patients"), bindparam("messages"))

_compiled: dict[tuple[int, tuple[str, ...]], tuple[Executable, str, dict]] = {}

# The execution option that marks a connection whose transaction sends its own BEGIN.
_OWN_BEGIN = "pamfr_own_begin"


def begin_with_first_round_trip(conn: Connection) -> bool:
    """Make the transaction `conn` is about to begin send its BEGIN with its first statements
    (PostgreSQL with pipelines; call before `conn.begin()`); whether it applies.

    psycopg starts a transaction by sending BEGIN on its own and waiting for the answer (in a
    pipeline, a Sync), one round trip before the first statement. Here the connection is put
    in autocommit (SQLAlchemy sets it back when the connection returns to the pool) and the
    BEGIN is sent by pamfr: as the first statement of the pipeline (`read`, `send_and_commit`)
    when the transaction's first statements go as one, otherwise right before the first
    statement SQLAlchemy executes (`_begin_first`: the round trip psycopg would have taken).
    Nothing runs outside the transaction: every statement finds it open. The commit and the
    rollback are psycopg's (they act on the server's transaction status, not on autocommit),
    or the COMMIT statement `send_and_commit` ends the pipeline with."""
    if not applies(conn) or not event.contains(conn.engine, "before_cursor_execute", _begin_first):
        return False  # an engine not made by store/db.make_engine: psycopg sends BEGIN
    conn.execution_options(isolation_level="AUTOCOMMIT", **{_OWN_BEGIN: True})
    return True


def own_begin(engine: Engine) -> None:
    """Let the engine's writer transactions send their own BEGIN (begin_with_first_round_trip).
    Registered once, when the engine is made and before any thread uses it: SQLAlchemy's
    listen() must not run while another thread dispatches the event. The rollback of such a
    transaction, and the reset of its connection when it returns to the pool, are psycopg's
    rollback() called while the connection is still in autocommit: they need the dialect to
    roll back in autocommit too (its default; checked here)."""
    if engine.dialect.skip_autocommit_rollback:
        raise ValueError("an engine with skip_autocommit_rollback cannot send its own BEGIN")
    event.listen(engine, "before_cursor_execute", _begin_first)


def _begin_pending(conn: Connection) -> bool:
    """Whether the connection's transaction sends its own BEGIN and has not sent it yet."""
    from psycopg.pq import TransactionStatus

    return bool(
        conn.get_execution_options().get(_OWN_BEGIN)
        and conn.connection.driver_connection.pgconn.transaction_status == TransactionStatus.IDLE
    )


def _begin_first(conn: Connection, _cursor, _statement, _params, _context, _many) -> None:
    """Before a statement SQLAlchemy executes: the BEGIN, when it is still to be sent."""
    if _begin_pending(conn):
        conn.connection.driver_connection.execute("BEGIN")


def read(conn: Connection, queries: list[tuple[Executable, dict]]) -> list[list[dict]]:
    """The rows of each query, sent together inside the caller's transaction. Each statement
    still sees what was committed before it started (READ COMMITTED), locks included. The
    transaction's BEGIN goes first when it is still to be sent (begin_with_first_round_trip)."""
    from psycopg.rows import dict_row  # psycopg is the pg extra: imported when used

    driver = conn.connection.driver_connection
    cursors = []
    compiled = [_sql(conn, stmt, tuple(params)) for stmt, params in queries]
    sqls = [sql for sql, _ in compiled]
    begin = _begin_pending(conn)
    try:
        with driver.pipeline():
            if begin:
                driver.execute("BEGIN")
            for (sql, literals), (_, params) in zip(compiled, queries, strict=True):
                cursor = driver.cursor(row_factory=dict_row)
                cursor.execute(sql, {**literals, **params})
                cursors.append(cursor)
        return [cursor.fetchall() for cursor in cursors]
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sqls, exc) from exc
    finally:
        for cursor in cursors:
            cursor.close()


class _NotCommitted(Exception):
    def __init__(self, answer: str | None) -> None:
        super().__init__(f"the server answered {answer!r} to COMMIT: nothing was committed")


def _wrapped(conn: Connection, sqls: list[str], exc: Exception) -> DBAPIError:
    return DBAPIError.instance(
        ";\n".join(sqls),
        None,
        exc,
        conn.dialect.loaded_dbapi.Error,
        hide_parameters=True,
        dialect=conn.dialect,
        ismulti=True,
    )


@cache
def supported() -> bool:
    """Pipeline mode needs libpq 14 or later (psycopg[binary] ships one; a system libpq may
    be older): without it, batches take the one-statement-at-a-time path."""
    from psycopg import Pipeline

    return Pipeline.is_supported()


def _sql(conn: Connection, statement: Executable, keys: tuple[str, ...]) -> tuple[str, dict]:
    """The statement as psycopg takes it, and the values of the literals it binds."""
    cache_key = (id(statement), keys)
    cached = _compiled.get(cache_key)
    if cached is None or cached[0] is not statement:
        compiled = statement.compile(dialect=conn.dialect, column_keys=list(keys))
        literals = {k: v for k, v in compiled.params.items() if k not in keys}
        cached = _compiled[cache_key] = (statement, compiled.string, literals)
    return cached[1], cached[2]


def applies(conn: Connection) -> bool:
    """Whether the PostgreSQL strategy runs on this connection (PostgreSQL with pipelines):
    the transaction's own BEGIN, the look-aheads, the writes sent together and the COMMIT
    with the last of them."""
    return conn.dialect.name == "postgresql" and supported()


def send_and_commit(conn: Connection, writes: list[tuple[Executable, list[dict]]]) -> None:
    """Run each statement over its rows, then COMMIT, all in one pipeline: the caller's
    transaction ends here (SQLAlchemy's own commit afterwards finds nothing left to do:
    psycopg's commit outside a transaction sends nothing), so this is the last thing the
    caller does in it; store/sink's `commit` is its one caller. A failure comes out as
    the SQLAlchemy exception the same statement would have raised, and the transaction is
    rolled back. The COMMIT is a statement of the pipeline: psycopg's commit() would sync the
    pipeline itself before its exit syncs again, two round trips instead of one."""
    send(conn, writes, commit=True)


def send(
    conn: Connection, writes: list[tuple[Executable, list[dict]]], commit: bool = False
) -> None:
    """Run each statement over its rows in one pipeline, one round trip, inside the caller's
    transaction (ended by a COMMIT when `commit`). A failure comes out as the SQLAlchemy
    exception the same statement would have raised."""
    driver = conn.connection.driver_connection
    batches = [(_sql(conn, stmt, tuple(rows[0])), rows) for stmt, rows in writes if rows]
    begin = _begin_pending(conn)
    try:
        with driver.pipeline(), driver.cursor() as cursor:
            if begin:
                cursor.execute("BEGIN")
            for (sql, literals), rows in batches:
                cursor.executemany(sql, [{**literals, **row} for row in rows] if literals else rows)
            if commit:
                cursor.execute("COMMIT")
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, [sql for (sql, _), _ in batches], exc) from exc
    if commit and cursor.statusmessage != "COMMIT":
        # A COMMIT in a transaction that already failed is answered ROLLBACK, without an
        # error: the caller must not answer AA for writes that were rolled back.
        raise _wrapped(conn, ["COMMIT"], _NotCommitted(cursor.statusmessage))
