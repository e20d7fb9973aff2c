"""the desk's access log and the "not a doublon" decisions

Every patient card viewed, list exported and action taken on the identity-vigilance desk is
written with the token's name and the internal patient id (who saw which health data). A
pair of identities judged not to be one person is recorded with who, when and why, and
leaves the potential-doublon worklist.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "desk_access",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("token_name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("patient_id", sa.Integer, nullable=True),
        sa.Column("message_id", sa.Integer, nullable=True),
        sa.Column("detail", sa.String(255), nullable=False, server_default=""),
    )
    op.create_index("ix_desk_access_patient", "desk_access", ["patient_id"])
    op.create_table(
        "doublon_decision",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("patient_a", sa.Integer, sa.ForeignKey("patient.id"), nullable=False),
        sa.Column("patient_b", sa.Integer, sa.ForeignKey("patient.id"), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index(
        "ux_doublon_decision_pair", "doublon_decision", ["patient_a", "patient_b"], unique=True
    )


def downgrade() -> None:
    op.drop_table("doublon_decision")
    op.drop_table("desk_access")
