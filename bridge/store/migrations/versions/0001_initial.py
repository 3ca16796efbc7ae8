"""Connections, their subscription aliases, and the inbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bridge.store.schema import Id, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("resource_id", sa.BigInteger, nullable=False),
        sa.Column("coworker_id", sa.BigInteger),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("calendar_id", sa.String(512)),
        sa.Column("name", sa.String(255)),
        sa.Column("subscription_id", sa.String(64)),
        sa.Column("subscription_expires_at", UTCDateTime),
        sa.Column("client_state", sa.String(128)),
        sa.Column("nexudus_record_id", sa.BigInteger),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_connections"),
        sa.UniqueConstraint("subscription_id", name="uq_connections_subscription_id"),
    )
    op.create_index("ix_connections_state", "connections", ["state"])
    op.create_table(
        "subscription_aliases",
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("connection_id", Id, nullable=False),
        sa.Column("client_state", sa.String(128)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", name="pk_subscription_aliases"),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name="fk_subscription_aliases_connection_id_connections",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "inbox",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("connection_id", Id),
        sa.Column("change_type", sa.String(64)),
        sa.Column("lifecycle_event", sa.String(64)),
        sa.Column("resource", sa.Text),
        sa.Column("etag", sa.String(255)),
        sa.Column("subscription_expires_at", UTCDateTime),
        sa.Column("tenant_id", sa.String(64)),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime),
        sa.Column("leased_until", UTCDateTime),
        sa.Column("last_error", sa.Text),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("dedupe_key", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        sa.UniqueConstraint("dedupe_key", name="uq_inbox_dedupe_key"),
        sa.ForeignKeyConstraint(
            ["connection_id"],
            ["connections.id"],
            name="fk_inbox_connection_id_connections",
            ondelete="SET NULL",
        ),
    )
    op.create_index(
        "ix_inbox_state_next_attempt_at", "inbox", ["state", "next_attempt_at"]
    )
    op.create_index("ix_inbox_connection_id", "inbox", ["connection_id"])


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_table("subscription_aliases")
    op.drop_table("connections")
