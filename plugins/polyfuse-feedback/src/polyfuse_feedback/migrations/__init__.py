"""The label store's schema migrations (Alembic); :func:`upgrade` brings a database to this code's schema.

A database written before migrations existed (schema 1, tables created directly) is recognised by its
tables and stamped as revision ``0001`` before upgrading. Adding a table or column means a new revision
in ``versions/`` (``down_revision`` the previous head) and the same change in :mod:`polyfuse_feedback.schema`;
``tests/test_migrations.py`` fails when the two disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

HERE = Path(__file__).parent
VERSION_TABLE = "alembic_version"


def _revision_files() -> list[str]:
    return sorted(p.stem.split("_", 1)[0] for p in (HERE / "versions").glob("[0-9]*_*.py"))


def head() -> str:
    """This code's newest revision (revisions are numbered in order: ``0001``, ``0002``...)."""
    return _revision_files()[-1]


def current(conn: Connection) -> str | None:
    """The database's revision; ``"0001"`` for a schema-1 store made before migrations; ``None`` if empty."""
    inspector = sa.inspect(conn)
    if inspector.has_table(VERSION_TABLE):
        found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        if found is not None:
            return str(found)
    return "0001" if inspector.has_table("store_meta") else None


def _config(conn: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = conn
    return config


def upgrade(conn: Connection) -> tuple[str | None, str]:
    """Bring the database on ``conn`` to :func:`head` inside the caller's transaction; (from, to) revisions.

    Raises ``LookupError`` when the database is at a revision this code does not know (a newer
    polyfuse-feedback wrote it).
    """
    found, newest = current(conn), head()
    if found == newest:
        return found, newest
    if found is not None and found not in _revision_files():
        raise LookupError(found)
    from alembic import command

    config = _config(conn)
    if found is not None and not sa.inspect(conn).has_table(VERSION_TABLE):
        command.stamp(config, found)
    command.upgrade(config, "head")
    return found, newest
