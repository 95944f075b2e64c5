"""The label store's tables, shared by training runs and the annotation app; changed only through migrations.

Every change to these tables comes with an Alembic revision in :mod:`polyfuse_feedback.migrations`
(``versions/``), which :class:`polyfuse_feedback.store.LabelStore` applies when it opens a database.

- ``projects``: one per training run; ``display`` (JSON) says how the app shows its observations and
  actions, ``instructions`` what annotators are asked, ``overlap`` the share of queries given to two
  annotators to measure their agreement;
- ``segments``: trajectory segments; numeric observations, actions and rewards in an ``np.savez``
  blob read with ``allow_pickle=False``, text observations and the keys' order as JSON, infos as JSON;
- ``queries``: a comparison of two segments or a rating of one (``scale`` levels), with a
  ``priority`` (higher first), the feedback ``source`` asked and a ``status``;
- ``labels``: answers, each with its ``source``, ``annotator`` (a person's name, or none), a unique
  idempotency ``key`` and ``created_at``; an abstention is a label without preference or rating;
- ``annotators`` and ``tokens``: people and their access tokens (a SHA-256 of the secret only),
  scoped to one project or, for admins, to all;
- ``leases``: which annotator holds (or skipped) which query, so two people are not shown the same one;
- ``project_metrics``: the reward model's figures over a run (held-out accuracy...), for the admin page.
"""

from __future__ import annotations

import sqlalchemy as sa

STATUSES = ("pending", "answered", "abstained", "failed")
ROLES = ("annotator", "admin", "trainer")

metadata = sa.MetaData()
store_meta = sa.Table(
    "store_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)
projects = sa.Table(
    "projects", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("display", sa.Text, nullable=True),
    sa.Column("instructions", sa.Text, nullable=True),
    sa.Column("overlap", sa.Float, nullable=False, server_default="0"),
)
segments = sa.Table(
    "segments", metadata,
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
queries = sa.Table(
    "queries", metadata,
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
    sa.Index("queries_by_status", "project_id", "status", "priority"),
)
# The annotation app's next query: a walk in serving order that stops at the first open one.
sa.Index("queries_to_serve", queries.c.project_id, queries.c.source, queries.c.status, queries.c.priority.desc(),
         queries.c.id)
labels = sa.Table(
    "labels", metadata,
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
annotators = sa.Table(
    "annotators", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),
    sa.Column("created_at", sa.Float, nullable=False),
)
tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), nullable=False, index=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=True),  # null: every project
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),  # hex SHA-256 of the secret
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.CheckConstraint(f"role IN {ROLES!r}", name="token_role"),
)
leases = sa.Table(
    "leases", metadata,
    sa.Column("query_id", sa.Integer, sa.ForeignKey("queries.id"), primary_key=True),
    sa.Column("annotator_id", sa.Integer, sa.ForeignKey("annotators.id"), primary_key=True),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("skipped", sa.Boolean, nullable=False),
    sa.Index("leases_by_annotator", "annotator_id", "expires_at"),
)
project_metrics = sa.Table(
    "project_metrics", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("project_metrics_by_name", "project_id", "name", "step"),
)
