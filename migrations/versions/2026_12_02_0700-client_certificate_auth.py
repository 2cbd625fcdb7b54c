"""client authentication by certificate (RFC 8705, section 2): each client's method, and the
subject or the self-signed certificates that identify it

Revision ID: d5f7b9c1e3a4
Revises: c4e6a8b0d2f3
Create Date: 2026-12-02 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d5f7b9c1e3a4"
down_revision: str | None = "c4e6a8b0d2f3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(
            sa.Column("auth_method", sa.String(40), nullable=False, server_default="client_secret")
        )
        batch.add_column(sa.Column("tls_subject_dn", sa.Text(), nullable=True))
        batch.add_column(sa.Column("tls_thumbprints", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("tls_thumbprints")
        batch.drop_column("tls_subject_dn")
        batch.drop_column("auth_method")
