"""identity rules of PAM FR 2.11.1 and operating the message log

* message: the warnings an AA carried (ERR severity W), every ERR code (for filtering), a hash
  of the content (a reused control id with other content is told apart from a resend), the
  message a reprocessed one repeats, and when its raw bytes were purged;
* patient: an INS held by two active patients is flagged, usable on neither; an index counts
  the active identities by status and collision (the /metrics scrape);
* patient_history: the notes of a change (what was dropped or kept, and why);
* authority: assigning authorities seen with both namespace and OID, so that a GAM naming one
  by namespace only is the same authority;
* merge chains flattened: a merged record points at its final survivor.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not batch mode: on SQLite a batch copies and drops the table, which the
    # rows of other tables referencing it forbid.
    op.add_column("message", sa.Column("warnings", sa.Text(), nullable=True))
    op.add_column("message", sa.Column("err_codes", sa.String(255), nullable=True))
    op.add_column("message", sa.Column("content_sha256", sa.String(64), nullable=True))
    # The message a reprocessed one repeats (no foreign key: SQLite cannot add one in place).
    op.add_column("message", sa.Column("reprocess_of", sa.Integer(), nullable=True))
    op.add_column("message", sa.Column("raw_purged_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_message_received_at", "message", ["received_at"])
    op.add_column(
        "patient",
        sa.Column("ins_collision", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("patient_history", sa.Column("notes", sa.Text(), nullable=True))
    # Identities by status and INS collisions, counted at each /metrics scrape from this index.
    op.create_index("ix_patient_active_status", "patient", ["active", "status", "ins_collision"])
    op.create_table(
        "authority",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("namespace", sa.String(255), nullable=False, unique=True),
        sa.Column("oid", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Flatten merge chains: A -> B -> C becomes A -> C (a chain is short; loop until stable).
    conn = op.get_bind()
    for _ in range(100):
        moved = conn.execute(
            sa.text(
                "UPDATE patient SET merged_into = (SELECT p2.merged_into FROM patient p2 "
                "WHERE p2.id = patient.merged_into) "
                "WHERE merged_into IN (SELECT id FROM patient WHERE merged_into IS NOT NULL)"
            )
        ).rowcount
        if not moved:
            break


def downgrade() -> None:
    op.drop_table("authority")
    with op.batch_alter_table("patient_history") as batch:
        batch.drop_column("notes")
    op.drop_index("ix_patient_active_status", table_name="patient")
    with op.batch_alter_table("patient") as batch:
        batch.drop_column("ins_collision")
    op.drop_index("ix_message_received_at", table_name="message")
    with op.batch_alter_table("message") as batch:
        for column in ("raw_purged_at", "reprocess_of", "content_sha256", "err_codes", "warnings"):
            batch.drop_column(column)
