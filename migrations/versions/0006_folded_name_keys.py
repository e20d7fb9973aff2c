"""the names FHIR searches, folded, each with its index

FHIR string search (family, given, name) ignores case and accents and matches a prefix:
`family=leveque` finds LÉVÊQUE. SQL's lower() does not fold accents (and SQLite's lowers
ASCII only), so each searched name gets a key column holding it folded
(pamfr.identity.names.fold), indexed, in byte order on PostgreSQL too: a prefix is then a
range of one index. Existing rows are backfilled here.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from pamfr.identity.names import fold

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEYS = {
    "birth_name": "birth_name_key",
    "used_name": "used_name_key",
    "first_given_name": "first_given_key",
    "used_given_name": "used_given_key",
}
BATCH = 5000


def upgrade() -> None:
    key_type = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
    for key in KEYS.values():  # ALTER TABLE ADD COLUMN: the table is not rebuilt
        op.add_column("patient", sa.Column(key, key_type, nullable=True))
    conn = op.get_bind()
    patient = sa.table("patient", sa.column("id"), *map(sa.column, [*KEYS, *KEYS.values()]))
    names = [patient.c[n] for n in KEYS]
    update = (
        patient.update()
        .where(patient.c.id == sa.bindparam("pid"))
        .values({key: sa.bindparam(f"v_{key}") for key in KEYS.values()})
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(patient.c.id, *names)
            .where(patient.c.id > last)
            .order_by(patient.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        conn.execute(
            update,
            [
                {"pid": row[0], **{f"v_{KEYS[n]}": fold(row[i + 1]) for i, n in enumerate(KEYS)}}
                for row in rows
            ],
        )
        last = rows[-1][0]
    for key in KEYS.values():
        op.create_index(f"ix_patient_{key}", "patient", [key])


def downgrade() -> None:
    for key in KEYS.values():
        op.drop_index(f"ix_patient_{key}", table_name="patient")
    with op.batch_alter_table("patient") as batch:
        for key in KEYS.values():
            batch.drop_column(key)
