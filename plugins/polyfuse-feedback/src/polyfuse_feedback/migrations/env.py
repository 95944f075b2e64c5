"""Alembic's entry point: migrations run on the connection :func:`polyfuse_feedback.migrations.upgrade` passes."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the label store's migrations with `polyfuse feedback migrate --db URL`")
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
