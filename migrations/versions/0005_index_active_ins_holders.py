"""the active holders of an INS found by one index on (ins_value, active)

Every message stating an INS asks which active patients hold it (the collision rule). With
the INS index on ins_value alone, SQLite's planner chose ix_patient_active_status for
"ins_value = ? AND active IS 1" (both equalities, and that index has more columns), which
reads every active patient: a message took time in proportion to the store's size. An index
on (ins_value, active) matches both, and still serves a look-up by INS alone.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_patient_ins_value_active", "patient", ["ins_value", "active"])
    op.drop_index("ix_patient_ins_value", table_name="patient")


def downgrade() -> None:
    op.create_index("ix_patient_ins_value", "patient", ["ins_value"])
    op.drop_index("ix_patient_ins_value_active", table_name="patient")
