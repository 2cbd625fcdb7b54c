"""event ids per client, with a digest of each processed event

An event_id was global: a second client reusing one had its event dropped as a "duplicate"
and was told the first client's profile id. Both ledgers are now keyed by (client_id,
event_id), and processed_events keeps a SHA-256 of the canonical event, so the same id with
another body is a 409 rather than a duplicate.

Which client sent an event before this revision was never stored. Those rows get the
client_id "*" (app.core.models.profiles.ANY_CLIENT), and an id that has such a row stays a
duplicate for every client: exactly as before the upgrade, so no delivery retried across the
upgrade is counted twice. Such a duplicate answers without a profile id (the caller may not be
the client that sent it). The rows can be deleted once no retry of them can come any more.

Revision ID: b2d4f6a8c0e1
Revises: 9e4f2c6d8a13
Create Date: 2026-12-01 18:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b2d4f6a8c0e1"
down_revision: str | None = "9e4f2c6d8a13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ANY_CLIENT = "*"
TABLES = ("events", "processed_events")


def upgrade() -> None:
    # batch mode: SQLite rebuilds each table; PostgreSQL runs plain ALTER TABLEs (adding a
    # NOT NULL column with a constant default rewrites no rows there).
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("client_id", sa.String(128), nullable=False, server_default=ANY_CLIENT)
            )
            if table == "processed_events":
                batch.add_column(sa.Column("digest", sa.String(64), nullable=True))
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", ["client_id", "event_id"])
        # New rows name their client; the default only filled in the old ones.
        with op.batch_alter_table(table) as batch:
            batch.alter_column("client_id", server_default=None)


def downgrade() -> None:
    # Ids are global again: keep one row per event_id (different clients' events may share it).
    for table in TABLES:
        op.execute(
            f"DELETE FROM {table} WHERE EXISTS (SELECT 1 FROM {table} AS other "
            f"WHERE other.event_id = {table}.event_id AND other.client_id < {table}.client_id)"
        )
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"pk_{table}", type_="primary")
            batch.create_primary_key(f"pk_{table}", ["event_id"])
            if table == "processed_events":
                batch.drop_column("digest")
            batch.drop_column("client_id")
