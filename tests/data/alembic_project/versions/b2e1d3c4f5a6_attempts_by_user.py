"""Index quiz attempts by user, built concurrently

Revision ID: b2e1d3c4f5a6
Revises: a1f0c2d3e4b5
"""

from alembic import op

revision = "b2e1d3c4f5a6"
down_revision = "a1f0c2d3e4b5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index(
            "quiz_attempts_user_id_idx",
            "quiz_attempts",
            ["user_id"],
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "quiz_attempts_user_id_idx",
            table_name="quiz_attempts",
            postgresql_concurrently=True,
        )
