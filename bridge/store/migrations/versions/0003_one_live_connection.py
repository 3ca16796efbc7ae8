"""At most one live connection per mailbox calendar and Nexudus resource.

Two connects of the same calendar at the same moment (two web processes, say)
both find nothing and both insert; the index makes the second insert fail, and
`connect` then answers with the first. Orphaned and disconnected connections are
history: the calendar may be connected again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LIVE = sa.text("state NOT IN ('orphaned', 'disconnected')")


def upgrade() -> None:
    op.create_index(
        "ux_connections_live_target",
        "connections",
        ["user_id", "calendar_id", "resource_id"],
        unique=True,
        sqlite_where=LIVE,
        postgresql_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index("ux_connections_live_target", "connections")
