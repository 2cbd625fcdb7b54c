"""identifiers without a foreign key to profiles (erasure deletes them itself)

Every identifier row a bulk import writes paid for a foreign-key check against profiles (a
lookup per row, about a third of the database's time in an import). The engines that write
identifiers create or lock the profile in the same transaction, and erasure now deletes a
profile's identifiers explicitly, so the constraint guarded nothing the code does not.

Revision ID: 9e4f2c6d8a13
Revises: 5b0d3e7a91c4
Create Date: 2026-11-28 20:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9e4f2c6d8a13"
down_revision: str | None = "5b0d3e7a91c4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FK = "fk_identifiers_profile_id_profiles"


def upgrade() -> None:
    # batch mode: SQLite rebuilds the table; PostgreSQL runs a plain ALTER TABLE.
    with op.batch_alter_table("identifiers") as batch:
        batch.drop_constraint(FK, type_="foreignkey")


def downgrade() -> None:
    # Identifiers whose profile is gone would stop the constraint from being created.
    op.execute("DELETE FROM identifiers WHERE profile_id NOT IN (SELECT id FROM profiles)")
    with op.batch_alter_table("identifiers") as batch:
        batch.create_foreign_key(FK, "profiles", ["profile_id"], ["id"], ondelete="CASCADE")
