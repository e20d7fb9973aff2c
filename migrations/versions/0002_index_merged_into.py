"""index patient.merged_into: a merge looks up the patients merged into its source

Without it every A40 scanned the whole patient table (130 ms with a million patients).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_patient_merged_into", "patient", ["merged_into"])


def downgrade() -> None:
    op.drop_index("ix_patient_merged_into", table_name="patient")
