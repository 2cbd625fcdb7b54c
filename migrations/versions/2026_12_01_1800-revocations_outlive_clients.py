"""revocations outlive their client (no foreign key from revoked_tokens to clients)

Deleting a client cascaded to its revocations, so a revoked token of a client deleted (and its
id used again) was accepted once more after a restart. A revocation now lasts until its token
expires whatever happens to the client; the poll purges it after that, as before.

Revision ID: a1c3e5f7b9d2
Revises: b2d4f6a8c0e1
Create Date: 2026-12-01 18:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "a1c3e5f7b9d2"
# After event_ids_per_client (b2d4f6a8c0e1), which reached main first from the same parent:
# one line of history, not two heads.
down_revision: str | None = "b2d4f6a8c0e1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_revoked_tokens_client_id_clients"


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table; PostgreSQL runs a plain ALTER TABLE.
    with op.batch_alter_table("revoked_tokens") as batch:
        batch.drop_constraint(FK, type_="foreignkey")


def downgrade() -> None:
    # Revocations whose client is gone would stop the constraint from being created.
    op.execute("DELETE FROM revoked_tokens WHERE client_id NOT IN (SELECT client_id FROM clients)")
    with op.batch_alter_table("revoked_tokens") as batch:
        batch.create_foreign_key(FK, "clients", ["client_id"], ["client_id"], ondelete="CASCADE")
