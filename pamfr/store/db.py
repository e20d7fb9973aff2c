"""Engine set-up for the two supported databases, and schema migration through Alembic."""

from __future__ import annotations

import logging
import time
from importlib import resources
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT = 30.0  # seconds a writer waits for another one's lock before failing
PING_AFTER_IDLE = 1.0  # seconds a pooled PostgreSQL connection may sit unused before a check


def _prepare_sqlite_folder(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def make_engine(
    url: str, *, synchronous: str = "FULL", busy_timeout: float | None = None
) -> Engine:
    """An engine with the durability settings pamfr relies on.

    SQLite: WAL, synchronous=FULL, a busy timeout so several pamfr processes share one file,
    and BEGIN IMMEDIATE so a writer takes the write lock up front instead of failing later.
    `busy_timeout` (seconds) is how long a writer waits for a lock held by another connection
    before the transaction fails (the messages then get AR 207); by default the URL's
    ``?timeout=`` (the pysqlite option), else SQLITE_BUSY_TIMEOUT.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_folder(url)
        if busy_timeout is None:
            busy_timeout = float(parsed.query.get("timeout", SQLITE_BUSY_TIMEOUT))
        busy_timeout_ms = int(busy_timeout * 1000)
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout, "check_same_thread": False},
            hide_parameters=True,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's events drive BEGIN
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # A server that stops answering (rather than refusing) must fail fast too, so that the
    # messages get AR 207 instead of waiting for the kernel's TCP timeouts; the URL may override.
    connect_args = {
        "connect_timeout": 10,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    connect_args = {k: v for k, v in connect_args.items() if k not in parsed.query}
    # hide_parameters: an error's text never carries the values (identifiers, names).
    engine = create_engine(parsed, hide_parameters=True, connect_args=connect_args)
    _ping_after_idle(engine)
    return engine


def _ping_after_idle(engine: Engine, idle: float = PING_AFTER_IDLE) -> None:
    """Check a pooled connection before use when it sat idle (the server may have restarted
    or dropped it meanwhile): a dead one is replaced instead of failing a batch. Unlike
    pool_pre_ping, a busy writer's connection is not pinged before every batch."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn, record, _proxy) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < idle:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError("connection lost while idle") from exc


def alembic_config(url: str):
    from alembic.config import Config

    script_location = resources.files("pamfr.migrations")
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`: the only way pamfr creates or changes tables."""
    from alembic import command

    if make_url(url).get_backend_name() == "sqlite":
        _prepare_sqlite_folder(url)
    command.upgrade(alembic_config(url), revision)
