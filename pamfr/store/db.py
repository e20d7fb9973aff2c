"""Engine set-up for the two supported databases, and schema migration through Alembic."""

from __future__ import annotations

import logging
import sqlite3
import time
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from pamfr.settings.location import default_folder, sqlite_path
from pamfr.store import pgpipeline
from pamfr.store.filemodes import private_dir, private_file

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT = 30.0  # seconds a writer waits for another one's lock before failing
PING_AFTER_IDLE = 1.0  # seconds a pooled PostgreSQL connection may sit unused before a check


class DatabaseUrlError(ValueError):
    """A database URL pamfr cannot use; the text says why in one line."""


class DatabaseMissing(FileNotFoundError):
    """A command that only reads was pointed at a SQLite file that does not exist."""


def database_url(url: str) -> URL:
    """The URL as pamfr opens it: sqlite, or postgresql through psycopg (postgres:// and
    postgresql:// are taken as postgresql+psycopg://)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(
            f"cannot read {url!r} as a database URL "
            "(sqlite:///path.db or postgresql+psycopg://user@host/db)"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
            raise DatabaseUrlError(f"unsupported SQLite driver {parsed.drivername!r}: sqlite:///")
        return parsed
    if backend != "postgresql":
        raise DatabaseUrlError(
            f"unsupported database {parsed.drivername!r}: pamfr stores into sqlite:/// or "
            "postgresql+psycopg://"
        )
    if parsed.drivername != "postgresql+psycopg":
        raise DatabaseUrlError(
            f"unsupported PostgreSQL driver {parsed.drivername!r}: write postgresql+psycopg://"
        )
    if find_spec("psycopg") is None:
        raise DatabaseUrlError(
            "a PostgreSQL store needs psycopg, which is not installed: pip install 'pamfr[pg]'"
        )
    return parsed


def _prepare_sqlite_folder(url: str) -> None:
    """The folder of a SQLite file must exist: a mistyped path must not start an empty store
    nobody reads. pamfr's default folder (settings/location.py) is created 0700, and the store's
    file 0600 before SQLite creates it with the umask's modes (its -wal and -shm files take the
    database file's mode)."""
    path = sqlite_path(url)
    if path is None:
        return
    folder = path.parent
    if not folder.is_dir():
        if folder.exists():
            raise DatabaseUrlError(f"{folder} is not a folder: check the path of the SQLite file")
        default = default_folder()
        if folder.absolute() != default.absolute():
            raise DatabaseUrlError(
                f"the folder {folder} does not exist: check the path, or create the folder "
                f"(pamfr creates only its default one, {default})"
            )
        private_dir(folder)
    private_file(path)


def make_engine(
    url: str,
    *,
    synchronous: str = "FULL",
    busy_timeout: float | None = None,
    read_only: bool = False,
) -> Engine:
    """An engine with the durability settings pamfr relies on.

    SQLite: WAL, synchronous=FULL, a busy timeout so several pamfr processes share one file,
    and BEGIN IMMEDIATE so a writer takes the write lock up front instead of failing later.
    `busy_timeout` (seconds) is how long a writer waits for a lock held by another connection
    before the transaction fails (the messages then get AR 207); by default the URL's
    ``?timeout=`` (the pysqlite option), else SQLITE_BUSY_TIMEOUT.
    With `read_only` (the commands that only read), a SQLite file is opened in read-only mode
    and must exist (DatabaseMissing): reading never creates a database.
    A URL pamfr cannot use raises DatabaseUrlError.
    """
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if busy_timeout is None:
            busy_timeout = float(parsed.query.get("timeout", SQLITE_BUSY_TIMEOUT))
        busy_timeout_ms = int(busy_timeout * 1000)
        if read_only:
            engine = _read_only_sqlite(parsed, busy_timeout)
        else:
            _prepare_sqlite_folder(url)
            engine = create_engine(
                url,
                connect_args={"timeout": busy_timeout, "check_same_thread": False},
                hide_parameters=True,
            )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record) -> None:
            dbapi_conn.isolation_level = None  # let SQLAlchemy's events drive BEGIN
            cursor = dbapi_conn.cursor()
            if not read_only:  # a read-only connection finds the file's mode as it is
                cursor.execute("PRAGMA journal_mode=WAL")
                # deleted rows (a purge's raw bytes) are overwritten with zeros, not left in
                # free pages, whatever SQLite was built with
                cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
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
    pgpipeline.own_begin(engine)
    return engine


def make_read_engine(url: str, *, busy_timeout: float | None = None) -> Engine:
    """An engine for the read side of a running store (the HTTP read API): never the write
    lock. SQLite: the file opened read-only (it must exist: DatabaseMissing), each transaction
    a deferred BEGIN, so one request reads one snapshot while the writer goes on in WAL.
    PostgreSQL: an engine like make_engine's; fhirquery.reading() makes its transactions
    read-only snapshots."""
    parsed = database_url(url)
    if parsed.get_backend_name() != "sqlite":
        return make_engine(url)
    if busy_timeout is None:
        busy_timeout = float(parsed.query.get("timeout", SQLITE_BUSY_TIMEOUT))
    busy_timeout_ms = int(busy_timeout * 1000)
    engine = _read_only_sqlite(parsed, busy_timeout)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's events drive BEGIN
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql("BEGIN")  # deferred: a read snapshot, no lock taken up front

    return engine


def _read_only_sqlite(parsed: URL, busy_timeout: float) -> Engine:
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise DatabaseUrlError(f"a command that reads needs a SQLite file, not {database!r}")
    path = Path(database).expanduser()
    if not path.is_file():
        raise DatabaseMissing(f"no SQLite database at {path}")
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=busy_timeout, check_same_thread=False)

    return create_engine("sqlite://", creator=connect, hide_parameters=True)


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


class SchemaError(ValueError):
    """A revision pamfr cannot upgrade to (unknown, or below the database's: a downgrade)."""


def current_revision(url: str) -> str | None:
    """The schema revision the database is at; None for an empty database."""
    from alembic.runtime.migration import MigrationContext

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


class SchemaNotAtHead(ValueError):
    """A store whose schema is not the one this pamfr writes (serve --no-migrate)."""


def check_at_head(url: str) -> None:
    """Raise SchemaNotAtHead unless the database is at the newest revision."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    quiet = logging.getLogger("alembic.runtime.migration")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its INFO lines say nothing when nothing is migrated
    try:
        current = current_revision(url)
    finally:
        quiet.setLevel(level)
    if current != head:
        at = f"at schema revision {current}" if current else "empty (no pamfr schema)"
        raise SchemaNotAtHead(
            f"the store is {at}, this pamfr needs {head}: run `pamfr db upgrade` first "
            "(or start without --no-migrate)"
        )


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`: the only way pamfr creates or changes tables.
    Never goes down: a revision below the database's raises SchemaError."""
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        _prepare_sqlite_folder(url)
    cfg = alembic_config(parsed.render_as_string(hide_password=False))
    if revision != "head":
        script = ScriptDirectory.from_config(cfg)
        try:
            target = script.get_revision(revision)
        except CommandError:
            target = None
        if target is None:
            known = ", ".join(sorted(r.revision for r in script.walk_revisions()))
            raise SchemaError(f"unknown revision {revision!r} (known: {known}, head)")
        current = current_revision(url)
        if current is not None and current != target.revision:
            below = {r.revision for r in script.iterate_revisions(current, "base")}
            if target.revision in below:
                raise SchemaError(
                    f"the database is at {current}, above {target.revision}: "
                    "pamfr upgrades, it never downgrades"
                )
    command.upgrade(cfg, revision)


def brief_error(exc: BaseException) -> str:
    """The first line of the driver's error: no SQL, no parameters, no DETAIL with key values
    (they hold identifiers and names, which INFO and ERROR lines never show)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {lines[0]}" if lines else type(orig).__name__
