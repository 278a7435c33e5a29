"""Call traces: the SIP messages of each call (call_traces, call_trace_messages).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_traces",
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("byte_count", sa.Integer(), nullable=False),
        sa.Column("dropped", sa.Integer(), nullable=False),
        sa.Column("last_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_call_traces")),
    )
    op.create_index(op.f("ix_call_traces_last_at_ms"), "call_traces", ["last_at_ms"], unique=False)
    op.create_table(
        "call_trace_messages",
        sa.Column("call_id", sa.String(32), nullable=False),
        sa.Column("first_index", sa.Integer(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("call_id", "first_index", name=op.f("pk_call_trace_messages")),
    )


def downgrade() -> None:
    op.drop_table("call_trace_messages")
    op.drop_index(op.f("ix_call_traces_last_at_ms"), table_name="call_traces")
    op.drop_table("call_traces")
