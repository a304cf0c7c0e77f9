"""Reflections reference their users: foreign key NOT VALID, then validated

Revision ID: c3d2e1f0a9b8
Revises: b2e1d3c4f5a6
"""

from alembic import op

revision = "c3d2e1f0a9b8"
down_revision = "b2e1d3c4f5a6"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_foreign_key(
        "reflections_user_id_fkey",
        "reflections",
        "users",
        ["user_id"],
        ["id"],
        postgresql_not_valid=True,
    )
    with op.get_context().autocommit_block():
        op.execute("ALTER TABLE reflections VALIDATE CONSTRAINT reflections_user_id_fkey")


def downgrade() -> None:
    op.drop_constraint("reflections_user_id_fkey", "reflections", type_="foreignkey")
