"""The label store as first released: projects, segments, queries, labels.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = ("pending", "answered", "abstained", "failed")


def upgrade() -> None:
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "segments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False, index=True),
        sa.Column("length", sa.Integer, nullable=False),
        sa.Column("arrays", sa.LargeBinary, nullable=False),
        sa.Column("layout", sa.Text, nullable=False),
        sa.Column("infos", sa.Text, nullable=False),
        sa.Column("terminated", sa.Boolean, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("env_index", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "queries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("first_id", sa.Integer, sa.ForeignKey("segments.id"), nullable=False),
        sa.Column("second_id", sa.Integer, sa.ForeignKey("segments.id"), nullable=True),
        sa.Column("scale", sa.Integer, nullable=False),
        sa.Column("priority", sa.Float, nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.CheckConstraint(f"status IN {STATUSES!r}", name="query_status"),
    )
    op.create_index("queries_by_status", "queries", ["project_id", "status", "priority"])
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("query_id", sa.Integer, sa.ForeignKey("queries.id"), nullable=False, index=True),
        sa.Column("preference", sa.Float, nullable=True),
        sa.Column("rating", sa.Integer, nullable=True),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("annotator", sa.String(255), nullable=True),
        sa.Column("key", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("labels", "queries", "segments", "projects", "store_meta"):
        op.drop_table(table)
