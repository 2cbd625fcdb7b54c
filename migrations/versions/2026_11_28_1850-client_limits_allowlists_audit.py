"""client rate limits and allowlists; the audit log

Revision ID: 5b0d3e7a91c4
Revises: 27c82f2be8e1
Create Date: 2026-11-28 18:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5b0d3e7a91c4"
down_revision: str | None = "27c82f2be8e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("rate_limit_rps", sa.Float(), nullable=True))
        batch.add_column(sa.Column("rate_limit_burst", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("allowed_networks", sa.Text(), nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("details", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_table("audit_events")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("allowed_networks")
        batch.drop_column("rate_limit_burst")
        batch.drop_column("rate_limit_rps")
