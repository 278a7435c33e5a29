"""When a call was connected (calls.connected_at).

A call whose two phones both answered can still fail (their offer/answer exchange fails,
e.g. 488 when they share no codec): the callee's answer time does not say the call was
connected. Calls recorded before this revision that ended in the controller's ``ended``
state were connected when the callee answered (the exchange follows within a round trip).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("connected_at", sa.Float(), nullable=True))
    op.execute(
        "UPDATE calls SET connected_at = callee_answered_at"
        " WHERE state IN ('connected', 'ended') AND callee_answered_at IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("connected_at")
