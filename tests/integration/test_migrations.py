"""The Alembic migrations build exactly the schema the code declares, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pamfr.store.db import make_engine
from pamfr.store.schema import metadata


def test_migrated_schema_matches_the_declared_tables(db_url):
    engine = make_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        differences = compare_metadata(context, metadata)
        revision = context.get_current_revision()
    engine.dispose()
    assert differences == []
    assert revision == "0003"
