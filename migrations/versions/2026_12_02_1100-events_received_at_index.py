"""events: an index on received_at, for the retention purge (oldest events first)

Revision ID: a8c0e2f4b6d7
Revises: f7b9d1e3a5c6
Create Date: 2026-12-02 11:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a8c0e2f4b6d7"
down_revision: str | None = "f7b9d1e3a5c6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Built without locking out event writes on a large table (outside the transaction).
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_events_received_at",
                "events",
                ["received_at"],
                postgresql_concurrently=True,
                if_not_exists=True,
            )
    else:
        op.create_index("ix_events_received_at", "events", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_events_received_at", table_name="events")
