"""What the worker needs: lease owners, renewal times, and indexes for its queries.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bridge.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("connections", sa.Column("renewed_at", UTCDateTime))
    op.create_index(
        "ix_connections_subscription_expires_at",
        "connections",
        ["subscription_expires_at"],
    )
    op.add_column("inbox", sa.Column("claimed_by", sa.String(64)))
    op.create_index("ix_inbox_state_received_at", "inbox", ["state", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_inbox_state_received_at", "inbox")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("claimed_by")
    op.drop_index("ix_connections_subscription_expires_at", "connections")
    with op.batch_alter_table("connections") as batch:
        batch.drop_column("renewed_at")
