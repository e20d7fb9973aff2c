"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pamfr.store.db import make_engine, upgrade
from pamfr.store.schema import metadata


def test_migrated_schema_matches_the_declared_tables(db_url, engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        differences = compare_metadata(context, metadata)
        revision = context.get_current_revision()
    engine.dispose()
    assert differences == []
    assert revision == "0007"


def test_0003_flattens_merge_chains(tmp_path, pg_server_url):
    """A→B→C stored before 0003 (merges left chains) becomes A→C and B→C, in a store with
    rows that reference the patients."""
    from sqlalchemy import text

    from pamfr.store.db import upgrade
    from tests.conftest import _fresh_pg_schema

    for url in (f"sqlite:///{tmp_path / 'old.db'}", _fresh_pg_schema(pg_server_url)):
        upgrade(url, "0002")
        engine = make_engine(url)
        with engine.begin() as conn:
            for pid, into in ((3, None), (2, 3), (1, 2), (4, None)):
                conn.execute(
                    text(
                        "INSERT INTO patient (id, active, merged_into, status, attributes, "
                        "other_status_codes, created_at, updated_at) VALUES (:id, :active, :into, "
                        "'provisoire', '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                    ),
                    {"id": pid, "active": into is None, "into": into},
                )
            # Rows referencing patient: a migration that rebuilds the table would fail on them.
            conn.execute(
                text(
                    "INSERT INTO identifier (patient_id, value, type, authority, oid, "
                    "authority_key) VALUES (3, 'IPP3', 'PI', 'CHU-X', '1.2.3', '1.2.3')"
                )
            )
        upgrade(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, merged_into FROM patient ORDER BY id")).all()
        engine.dispose()
        assert [tuple(r) for r in rows] == [(1, 3), (2, 3), (3, None), (4, None)], url


def test_the_active_holders_of_an_ins_are_found_by_the_ins_index_on_sqlite(tmp_path):
    """The collision rule's look-up must not read every active patient (the status index
    matches `active` too): it goes through the index on (ins_value, active)."""
    from pamfr.store import statements

    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    engine = make_engine(url)
    sql = str(statements.ACTIVE_HOLDERS.compile(dialect=engine.dialect))
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ("NIR",)).all()
    engine.dispose()
    assert [row[-1] for row in plan] == [
        "SEARCH patient USING INDEX ix_patient_ins_value_active (ins_value=? AND active=?)"
    ]


def test_0006_backfills_the_folded_name_keys(tmp_path, pg_server_url):
    """Patients stored before 0006 are found by an accent-insensitive name search after it."""
    from sqlalchemy import text

    from tests.conftest import _fresh_pg_schema

    for url in (f"sqlite:///{tmp_path / 'names.db'}", _fresh_pg_schema(pg_server_url)):
        upgrade(url, "0005")
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO patient (id, active, birth_name, first_given_name, used_name, "
                    "status, attributes, other_status_codes, created_at, updated_at) VALUES "
                    "(1, true, 'LÉVÊQUE', 'HÉLÈNE', NULL, 'provisoire', '', '', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        upgrade(url)
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT birth_name_key, first_given_key, used_name_key, used_given_key "
                    "FROM patient WHERE birth_name_key >= 'lev' AND birth_name_key < 'lew'"
                )
            ).one()
        engine.dispose()
        assert tuple(row) == ("leveque", "helene", None, None), url
