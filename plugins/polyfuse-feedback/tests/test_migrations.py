"""Schema migrations: a new store matches polyfuse_feedback.schema on both backends, an older store is upgraded
with its data, a newer one is refused with advice."""

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from polyfuse.feedback import Label
from polyfuse_feedback import migrations
from polyfuse_feedback.schema import metadata
from polyfuse_feedback.store import LabelStore, NewQuery, StoreError
from test_store import make_segment


def schema_differences(engine):
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)


def test_a_new_store_has_exactly_the_schema_modules_tables(store_url):
    with LabelStore(store_url) as store:
        assert schema_differences(store.engine) == []
        with store.engine.connect() as conn:
            assert migrations.current(conn) == migrations.head()


def test_revisions_are_numbered_in_a_chain():
    revisions = migrations._revision_files()
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations.HERE))
    script = ScriptDirectory.from_config(config)
    assert script.get_heads() == [migrations.head()]
    assert [r.revision for r in script.walk_revisions()] == revisions[::-1]


def test_a_store_written_before_migrations_is_upgraded_with_its_labels(tmp_path):
    """Schema 1 was created with CREATE TABLEs and a schema_version row, without Alembic's version table."""
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    engine = sa.create_engine(url)
    from alembic.operations import Operations

    with engine.begin() as conn:
        migrations_0001 = __import__("importlib").import_module("polyfuse_feedback.migrations.versions.0001_label_store")
        with Operations.context(MigrationContext.configure(conn)):
            migrations_0001.upgrade()
        conn.execute(sa.text("INSERT INTO store_meta VALUES ('schema_version', '1'), ('store_id', 'old-id')"))
        conn.execute(sa.text("INSERT INTO projects (name, created_at) VALUES ('run', 0)"))
    engine.dispose()
    with engine.connect() as conn:
        assert migrations.current(conn) == "0001"
    with LabelStore(url) as store:
        assert store.store_id == "old-id"
        first, second = store.add_segments("run", [make_segment(1), make_segment(2)])
        (query,) = store.post_queries("run", [NewQuery(first, second)])
        store.record_label(query, Label(preference=1.0), source="human", annotator="ann")
        assert [r.annotator for r in store.labels("run")] == ["ann"]
        assert schema_differences(store.engine) == []
        with store.engine.connect() as conn:
            keys = {row[0] for row in conn.execute(sa.text("SELECT key FROM store_meta"))}
    assert keys == {"store_id", "app_secret"}


def test_a_store_from_a_newer_version_is_refused_with_advice(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    LabelStore(url).close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer than this polyfuse-feedback's .*upgrade polyfuse-feedback"):
        LabelStore(url)
