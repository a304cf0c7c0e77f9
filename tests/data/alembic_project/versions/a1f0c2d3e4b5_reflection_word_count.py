"""Count the words of each reflection

Revision ID: a1f0c2d3e4b5
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "a1f0c2d3e4b5"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("reflections", sa.Column("word_count", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("reflections", "word_count")
