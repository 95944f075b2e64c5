"""Human annotation: annotators, hashed tokens, query leases, project display settings, reward-model metrics.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROLES = ("annotator", "admin", "trainer")


def upgrade() -> None:
    op.add_column("projects", sa.Column("display", sa.Text, nullable=True))
    op.add_column("projects", sa.Column("instructions", sa.Text, nullable=True))
    op.add_column("projects", sa.Column("overlap", sa.Float, nullable=False, server_default="0"))
    op.create_index("queries_to_serve", "queries", ["project_id", "source", "status", sa.text("priority DESC"), "id"])
    op.create_table(
        "annotators",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False, index=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.CheckConstraint(f"role IN {ROLES!r}", name="token_role"),
    )
    op.create_table(
        "leases",
        sa.Column("query_id", sa.Integer, sa.ForeignKey("queries.id"), primary_key=True),
        sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("skipped", sa.Boolean, nullable=False),
    )
    op.create_index("leases_by_annotator", "leases", ["annotator_id", "expires_at"])
    op.create_table(
        "project_metrics",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("project_metrics_by_name", "project_metrics", ["project_id", "name", "step"])
    op.execute("DELETE FROM store_meta WHERE key = 'schema_version'")  # the Alembic revision says it now


def downgrade() -> None:
    op.execute("INSERT INTO store_meta (key, value) VALUES ('schema_version', '1')")
    for table in ("project_metrics", "leases", "tokens", "annotators"):
        op.drop_table(table)
    op.drop_index("queries_to_serve", "queries")
    with op.batch_alter_table("projects") as batch:  # SQLite drops columns by copying the table
        for column in ("overlap", "instructions", "display"):
            batch.drop_column(column)
