"""Calls to telephone numbers (calls.number, destination_class, trunk, refusal) and the
daily count of each user's outbound calls (outbound_counts): docs/dialplan.md.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("number", sa.String(16), nullable=True))
        batch.add_column(sa.Column("destination_class", sa.String(16), nullable=True))
        batch.add_column(sa.Column("trunk", sa.String(64), nullable=True))
        batch.add_column(sa.Column("refusal", sa.String(255), nullable=True))
    op.create_table(
        "outbound_counts",
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("username", "day", name=op.f("pk_outbound_counts")),
    )


def downgrade() -> None:
    op.drop_table("outbound_counts")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("refusal")
        batch.drop_column("trunk")
        batch.drop_column("destination_class")
        batch.drop_column("number")
