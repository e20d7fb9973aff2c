"""Shared fixtures: real databases (a SQLite file per test, a PostgreSQL database per run)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from pamfr.path.receiver import Receiver
from pamfr.store.db import make_engine, upgrade
from tests.helpers import pamfr_server
from tests.mllp_harness import Feed

# CI explores the same inputs on every run (a gate must not flip on luck); a developer's run
# draws new ones, and anything it finds is a real bug to fix.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

PG_ADMIN_URL = os.environ.get(
    "PAMFR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


REPO = Path(__file__).resolve().parent.parent
PUBLIC_CORPUS = REPO / "tests" / "corpus" / "public"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    name = f"pamfr_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        # Once for the session (pytest keeps a session fixture's outcome): every PostgreSQL
        # test is skipped with this one reason instead of a traceback each.
        admin.dispose()
        reason = str(exc.orig or exc).strip().splitlines()[0]
        pytest.skip(
            f"PostgreSQL tests not run: no server at {safe_url(PG_ADMIN_URL)} ({reason}); "
            "start it or point PAMFR_TEST_PG_URL at one"
        )
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _fresh_pg_schema(pg_server_url: str) -> str:
    """Each test gets its own schema in the run's database (search_path in the URL)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    return f"{pg_server_url}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path: Path) -> str:
    """A migrated, empty store: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pamfr.db'}"
    else:
        url = _fresh_pg_schema(request.getfixturevalue("pg_server_url"))
    upgrade(url)
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'pamfr.db'}"
    upgrade(url)
    return url


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The test's store through make_engine, disposed after the test: `db_url`'s when the test
    takes it (a SQLite file in tmp_path, then a PostgreSQL schema), else `sqlite_url`'s file."""
    url = request.getfixturevalue("db_url" if "db_url" in request.fixturenames else "sqlite_url")
    made = make_engine(url)
    yield made
    made.dispose()


@pytest.fixture
def receiver(db_url: str, engine: Engine) -> Receiver:
    return Receiver(engine)


@pytest.fixture
def feed(db_url: str) -> Iterator[Feed]:
    """A real MLLP server on the test store, and `pamfr patient` reading it back."""
    with pamfr_server(db_url) as server:
        yield Feed(server.port, db_url)
