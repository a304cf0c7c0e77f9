"""Note how many courses there were, read through a live connection

Revision ID: d4e3f2a1b0c9
Revises: c3d2e1f0a9b8
"""

import sqlalchemy as sa
from alembic import op

revision = "d4e3f2a1b0c9"
down_revision = "c3d2e1f0a9b8"
branch_labels = None
depends_on = None


def upgrade() -> None:
    courses = op.get_bind().execute(sa.text("SELECT count(*) FROM courses")).scalar_one()
    op.execute(f"COMMENT ON TABLE courses IS 'had {int(courses)} courses'")


def downgrade() -> None:
    op.execute("COMMENT ON TABLE courses IS NULL")
