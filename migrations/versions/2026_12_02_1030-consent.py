"""consent: consent per purpose on profiles, its history, and each client's default purpose

Revision ID: f7b9d1e3a5c6
Revises: e6a8c0d2f4b5
Create Date: 2026-12-02 10:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "f7b9d1e3a5c6"
down_revision: str | None = "e6a8c0d2f4b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    # Every existing profile starts with no decision recorded: {}. A plain ALTER TABLE, not
    # batch mode: rebuilding profiles on SQLite would cascade-delete its events.
    op.add_column("profiles", sa.Column("consent", JSON, nullable=False, server_default="{}"))
    op.create_table(
        "consent_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("profile_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(100), nullable=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["profiles.id"],
            name=op.f("fk_consent_history_profile_id_profiles"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_history")),
    )
    op.create_index("ix_consent_history_profile_id", "consent_history", ["profile_id", "id"])
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("default_purpose", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("default_purpose")
    op.drop_index("ix_consent_history_profile_id", table_name="consent_history")
    op.drop_table("consent_history")
    op.drop_column("profiles", "consent")  # (SQLite 3.35+ drops a column in place)
