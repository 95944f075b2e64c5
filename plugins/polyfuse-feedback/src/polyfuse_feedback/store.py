"""Where labels live: a durable store of segments, queries and labels over SQLAlchemy (SQLite or PostgreSQL).

A training run keeps its labels in ``<run_dir>/feedback.sqlite`` (:meth:`LabelStore.in_run`); a
team points several runs and the annotation web app at one PostgreSQL database
(``postgresql+psycopg://user:password@host/db``). Every method checks out its own connection and
commits before it returns, so one store may be shared by threads (each gets its own connection) and
an acknowledged label survives ``kill -9`` of the writer.

The tables are described in :mod:`polyfuse_feedback.schema`; opening a store applies the schema's
migrations (:mod:`polyfuse_feedback.migrations`), so a database written by an older version is upgraded.

Labels move between databases as JSONL (:meth:`LabelStore.export_jsonl`, see :mod:`polyfuse_feedback.exchange`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import Label, Query, answer_problem
from polyfuse.observations import is_text
from polyfuse.rewards import Segment

from polyfuse_feedback import migrations
from polyfuse_feedback.schema import STATUSES, labels, project_metrics, projects, queries, segments, store_meta

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

LABEL_WRITE_LOCK = 7102027  # PostgreSQL advisory lock key serialising label writes
SCHEMA_LOCK = 7102026  # and the first open's migrations
INSTALL_POSTGRESQL = "pip install 'polyfuse-feedback[postgresql]'"


class StoreError(PolyfuseError):
    """The label store cannot do what was asked: an unreachable database, a missing driver, a bad label."""


class NewQuery(NamedTuple):
    """A query to post: ``second`` ``None`` asks for a rating of ``first`` on ``scale`` levels."""

    first: int
    second: int | None = None
    scale: int = 0
    priority: float = 0.0
    source: str = ""


@dataclass(frozen=True)
class StoredQuery:
    """A query row; ``scale`` is 0 for a comparison."""

    id: int
    first: int
    second: int | None
    scale: int
    priority: float
    source: str
    status: str


@dataclass(frozen=True)
class LabelRecord:
    """A stored answer; ``preference`` and ``rating`` both ``None`` is an abstention."""

    id: int
    query_id: int
    first: int
    second: int | None
    preference: float | None
    rating: int | None
    scale: int
    confidence: float
    source: str
    annotator: str | None
    key: str
    created_at: float  # seconds since the epoch (UTC)

    @property
    def label(self) -> Label | None:
        """The :class:`Label` this record holds, ``None`` for an abstention."""
        if self.preference is None and self.rating is None:
            return None
        return Label(preference=self.preference, rating=self.rating, confidence=self.confidence)


@dataclass(frozen=True)
class ProjectSettings:
    """How the annotation app shows a project; see :meth:`LabelStore.configure_project`."""

    id: int
    name: str
    display: dict[str, Any]
    instructions: str
    overlap: float


@dataclass(frozen=True)
class ProjectInfo:
    id: int
    name: str
    segments: int
    queries: int
    pending: int
    labels: int


# -- segments as rows -------------------------------------------------------------------------------

def _json_scalar(value: Any) -> tuple[bool, Any]:
    """``(keep, value)``: infos keep JSON scalars only (numpy scalars as Python ones, finite floats)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return True, value
    if isinstance(value, float) and math.isfinite(value):
        return True, value
    return False, None


def clean_infos(infos: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each step's info entries that JSON holds exactly (arrays, objects and NaN are left out)."""
    cleaned = []
    for info in infos:
        step = {}
        for key, value in info.items():
            keep, value = _json_scalar(value)
            if keep:
                step[str(key)] = value
        cleaned.append(step)
    return cleaned


def _numeric(value: Any, what: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        raise StoreError(f"{what} holds {array.dtype} values; the label store keeps numbers and text only")
    return array


def encode_segment(segment: Segment) -> dict[str, Any]:
    """The ``segments`` columns of ``segment`` (without ``project_id`` and ``created_at``)."""
    arrays = {"actions": _numeric(segment.actions, "actions"),
              "env_rewards": _numeric(segment.env_rewards, "env_rewards")}
    text = {}
    for i, (key, value) in enumerate(segment.observations.items()):
        if is_text(value):
            text[key] = [str(v) for v in value]
        else:
            arrays[f"obs{i}"] = _numeric(value, f"observation {key!r}")
    blob = io.BytesIO()
    np.savez(blob, allow_pickle=False, **arrays)
    return {
        "length": len(segment.actions), "arrays": blob.getvalue(),
        "layout": json.dumps({"keys": [str(k) for k in segment.observations], "text": text}),
        "infos": json.dumps(clean_infos(segment.infos)), "terminated": bool(segment.terminated),
        "truncated": bool(segment.truncated), "env_index": int(segment.env_index),
    }


# np.load parses each array's header with ast.literal_eval, which CPython 3.11 cannot run in two threads
# at once ("SystemError: AST constructor recursion depth mismatch", seen under the app's 32 annotators).
_DECODING = threading.Lock()


def decode_segment(row: Any) -> Segment:
    """The :class:`Segment` of a ``segments`` row; text observations come back as tuples of ``str``."""
    with _DECODING, np.load(io.BytesIO(row.arrays), allow_pickle=False) as blob:
        arrays = {name: blob[name] for name in blob.files}
    layout = json.loads(row.layout)
    observations = {key: tuple(layout["text"][key]) if key in layout["text"] else arrays[f"obs{i}"]
                    for i, key in enumerate(layout["keys"])}
    return Segment(observations=observations, actions=arrays["actions"], env_rewards=arrays["env_rewards"],
                   infos=json.loads(row.infos), terminated=bool(row.terminated), truncated=bool(row.truncated),
                   env_index=int(row.env_index))


_PLACEHOLDER = Segment({}, np.zeros(0), np.zeros(0), (), False, False, 0)


def _query_shape(query_id: int, second: int | None, scale: int) -> Query:
    """A :class:`Query` with the row's shape (segments not loaded), for :func:`answer_problem`."""
    return Query(_PLACEHOLDER, None if second is None else _PLACEHOLDER, id=query_id, scale=scale)


def queries_with_segments(store: Any, ids: Sequence[int]) -> list[Query]:
    """``store``'s queries ``ids`` with their segments loaded (a :class:`LabelStore` or its remote client)."""
    rows = store.stored_queries(ids)
    segment_ids = sorted({s for row in rows for s in (row.first, row.second) if s is not None})
    loaded = dict(zip(segment_ids, store.segments(segment_ids)))
    return [Query(loaded[row.first], None if row.second is None else loaded[row.second], id=row.id, scale=row.scale,
                  priority=row.priority) for row in rows]


# -- opening ----------------------------------------------------------------------------------------

def _shown(url: sa.URL) -> str:
    return url.render_as_string(hide_password=True)


def _engine(url_text: str) -> sa.Engine:
    try:
        url = sa.make_url(url_text)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"{url_text!r} is not a database URL ({exc}); use sqlite:///PATH/feedback.sqlite or "
                         "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE") from None
    if url.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2; we depend on psycopg 3
        url = url.set(drivername="postgresql+psycopg")
    try:
        if url.get_backend_name() == "sqlite":
            on_disk = url.database not in (None, "", ":memory:")  # the app's threads each hold a connection
            engine = sa.create_engine(url, connect_args={"timeout": 60},
                                      **({"pool_size": 16, "max_overflow": 32} if on_disk else {}))
            _configure_sqlite(engine, url)
        else:
            timeout = {} if "connect_timeout" in url.query else {"connect_timeout": 10}  # not the OS's minutes
            engine = sa.create_engine(url, pool_pre_ping=True, connect_args=timeout, pool_size=16, max_overflow=32)
    except ImportError as exc:
        raise StoreError(f"the database driver for {_shown(url)} is not installed ({exc}); "
                         f"for PostgreSQL: {INSTALL_POSTGRESQL}") from None
    except sa.exc.NoSuchModuleError as exc:
        raise StoreError(f"{_shown(url)}: {exc}; the label store supports sqlite:/// and "
                         "postgresql+psycopg:// URLs") from None
    return engine


def _configure_sqlite(engine: sa.Engine, url: sa.URL) -> None:
    """WAL, ``synchronous=FULL``, a busy timeout, foreign keys, and writes that take the lock up front.

    ``synchronous=FULL`` syncs the WAL at every commit, so an acknowledged label survives a power
    loss as well as ``kill -9`` (NORMAL would survive ``kill -9`` too but may lose the last commits
    on an OS crash); labels are few and costly, an fsync each is cheap beside them. Write
    transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue on the busy timeout
    instead of failing with "database is locked" when a read transaction tries to upgrade.
    """
    if not url.database or url.database == ":memory:":
        raise StoreError(f"{_shown(url)} is an in-memory database, gone with its connection; give a file: "
                         "sqlite:///PATH/feedback.sqlite")
    folder = Path(url.database).expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot open the label store at {_shown(url)}: cannot create its folder {folder} "
                         f"({exc.strerror}); give a path in a writable folder") from None

    @sa.event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 60000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("polyfuse_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class LabelStore:
    """Projects, segments, queries and labels in a SQL database; see the module docstring for the schema."""

    def __init__(self, url: str) -> None:
        self.engine = _engine(url)
        self._writer = self.engine.execution_options(polyfuse_write=True)
        self._write_lock = threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        self.url = _shown(self.engine.url)
        try:
            with self.writing() as conn:
                if conn.dialect.name == "postgresql":  # serialise concurrent first opens
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": SCHEMA_LOCK})
                migrations.upgrade(conn)
                rows = dict(conn.execute(sa.select(store_meta.c.key, store_meta.c.value)).all())
                new = {key: make() for key, make in (("store_id", lambda: uuid.uuid4().hex),
                                                     ("app_secret", lambda: secrets.token_hex(32)))
                       if key not in rows}
                if new:
                    conn.execute(store_meta.insert(), [{"key": k, "value": v} for k, v in new.items()])
                    rows.update(new)
        except sa.exc.DBAPIError as exc:  # unreachable, refused, no such database, not a database file
            self.engine.dispose()
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            raise StoreError(f"cannot open the label store at {self.url}: {reason}; check that the database "
                             "server is running and the URL's host, port, user, password and database name "
                             "(for SQLite: that the folder is writable)") from None
        except LookupError as exc:
            self.engine.dispose()
            raise StoreError(f"the label store at {self.url} is at schema revision {exc.args[0]}, newer than this "
                             f"polyfuse-feedback's {migrations.head()}: upgrade polyfuse-feedback") from None
        self.store_id = rows["store_id"]
        self.app_secret = bytes.fromhex(rows["app_secret"])  # the annotation app's CSRF key, shared by its workers

    app_url: str | None = None  # a database, not the annotation app's API (see polyfuse_feedback.remote)

    @property
    def database_url(self) -> str:
        """The URL with its password, to open the same database elsewhere (the app); never print it."""
        return self.engine.url.render_as_string(hide_password=False)

    @classmethod
    def in_run(cls, run_dir: str | Path) -> LabelStore:
        """The store of a training run: ``<run_dir>/feedback.sqlite``."""
        return cls(f"sqlite:///{Path(run_dir).resolve() / 'feedback.sqlite'}")

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> LabelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[Connection]:
        """A transaction that writes (SQLite: ``BEGIN IMMEDIATE``), committed when the block ends.

        On SQLite, this process's writers also queue on a lock of their own: SQLite's busy handler
        waits by sleeping in growing steps, so threads contending for its lock would wait far longer
        than the writes take (other processes still meet the busy timeout).
        """
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    def reading(self) -> Any:
        """A transaction that only reads, for modules that query the tables (:mod:`polyfuse_feedback.access`)."""
        return self.engine.begin()

    # -- projects -----------------------------------------------------------------------------------

    def project(self, name: str) -> int:
        """The id of project ``name``, created on first use."""
        with self.reading() as conn:
            found = conn.execute(sa.select(projects.c.id).where(projects.c.name == name)).scalar()
        if found is not None:
            return int(found)
        with self.writing() as conn:
            return self._project(conn, name)

    @staticmethod
    def _project(conn: Connection, name: str) -> int:
        select = sa.select(projects.c.id).where(projects.c.name == name)
        found = conn.execute(select).scalar()
        if found is None:
            try:
                with conn.begin_nested():  # another writer may create it meanwhile (PostgreSQL)
                    found = conn.execute(projects.insert().values(name=name, created_at=time.time())
                                         ).inserted_primary_key[0]
            except sa.exc.IntegrityError:
                found = conn.execute(select).scalar_one()
        return int(found)

    def projects(self) -> list[ProjectInfo]:
        """Every project with its counts of segments, queries, pending queries and labels (abstentions included)."""
        def count(table: sa.Table, column: sa.ColumnElement, *where: Any) -> Any:
            return sa.select(sa.func.count()).select_from(table).where(column == projects.c.id, *where) \
                .scalar_subquery()

        joined = labels.join(queries, labels.c.query_id == queries.c.id)
        statement = sa.select(
            projects.c.id, projects.c.name, count(segments, segments.c.project_id),
            count(queries, queries.c.project_id), count(queries, queries.c.project_id, queries.c.status == "pending"),
            count(joined, queries.c.project_id),
        ).order_by(projects.c.id)
        with self.reading() as conn:
            return [ProjectInfo(*row) for row in conn.execute(statement)]

    def configure_project(self, name: str, *, display: Mapping[str, Any] | None = None,
                          instructions: str | None = None, overlap: float | None = None) -> None:
        """Set how the annotation app shows ``name`` (created if new); ``None`` leaves a setting as it is.

        ``display``: JSON-able, see :mod:`polyfuse_feedback.rendering`; ``instructions``: what
        annotators are asked; ``overlap``: the share of queries given to two annotators (agreement).
        """
        values: dict[str, Any] = {}
        if display is not None:
            values["display"] = json.dumps(display)
        if instructions is not None:
            values["instructions"] = instructions
        if overlap is not None:
            if not 0.0 <= overlap <= 1.0:
                raise StoreError(f"overlap must be in [0, 1], got {overlap}")
            values["overlap"] = float(overlap)
        with self.writing() as conn:
            project_id = self._project(conn, name)
            if values:
                conn.execute(projects.update().where(projects.c.id == project_id).values(**values))

    def project_settings(self, name: str) -> ProjectSettings | None:
        """``name``'s display, instructions and overlap; ``None`` if there is no such project."""
        with self.reading() as conn:
            row = conn.execute(sa.select(projects.c.id, projects.c.name, projects.c.display, projects.c.instructions,
                                         projects.c.overlap).where(projects.c.name == name)).one_or_none()
        if row is None:
            return None
        return ProjectSettings(row.id, row.name, json.loads(row.display) if row.display else {},
                               row.instructions or "", float(row.overlap))

    def record_metrics(self, project: str, step: int, values: Mapping[str, float]) -> None:
        """Keep a training run's figures (the reward model's held-out accuracy...) for the admin page."""
        now = time.time()
        rows = [{"step": int(step), "name": str(name)[:64], "value": float(value), "created_at": now}
                for name, value in values.items() if math.isfinite(float(value))]
        with self.writing() as conn:
            project_id = self._project(conn, project)
            if rows:
                conn.execute(project_metrics.insert(), [{"project_id": project_id, **row} for row in rows])

    def metric_history(self, project: str, name: str) -> list[tuple[int, float]]:
        """``(step, value)`` of one figure over the run, in step order."""
        statement = (sa.select(project_metrics.c.step, project_metrics.c.value)
                     .join(projects, projects.c.id == project_metrics.c.project_id)
                     .where(projects.c.name == project, project_metrics.c.name == name)
                     .order_by(project_metrics.c.step, project_metrics.c.id))
        with self.reading() as conn:
            return [(int(step), float(value)) for step, value in conn.execute(statement)]

    # -- segments -----------------------------------------------------------------------------------

    def add_segments(self, project: str, new: Iterable[Segment]) -> list[int]:
        """Store segments in ``project``; their ids, in order."""
        rows = [encode_segment(segment) for segment in new]
        with self.writing() as conn:
            return self._add_segments(conn, self._project(conn, project), rows)

    @staticmethod
    def _add_segments(conn: Connection, project_id: int, rows: Sequence[dict[str, Any]]) -> list[int]:
        now = time.time()
        return [int(conn.execute(segments.insert().values(project_id=project_id, created_at=now, **row))
                    .inserted_primary_key[0]) for row in rows]

    def segments(self, ids: Sequence[int]) -> list[Segment]:
        """The segments ``ids``, in that order."""
        with self.reading() as conn:
            rows = {row.id: row for row in conn.execute(sa.select(segments).where(segments.c.id.in_(set(ids))))}
        missing = sorted(set(ids) - set(rows))
        if missing:
            raise StoreError(f"no segment with id {missing} in the label store at {self.url}")
        return [decode_segment(rows[i]) for i in ids]

    # -- queries ------------------------------------------------------------------------------------

    def post_queries(self, project: str, items: Iterable[NewQuery | tuple]) -> list[int]:
        """Post queries (:class:`NewQuery` or tuples of its fields) as pending; their ids, in order."""
        items = [NewQuery(*item) for item in items]
        with self.writing() as conn:
            project_id = self._project(conn, project)
            return self._post_queries(conn, project_id, items)

    def _post_queries(self, conn: Connection, project_id: int, items: Sequence[NewQuery]) -> list[int]:
        wanted = {i for item in items for i in (item.first, item.second) if i is not None}
        found = set(conn.execute(sa.select(segments.c.id).where(
            segments.c.id.in_(wanted), segments.c.project_id == project_id)).scalars())
        if wanted - found:
            raise StoreError(f"segments {sorted(wanted - found)} are not in this project of {self.url}: "
                             "add them with add_segments first")
        now, ids = time.time(), []
        for item in items:
            if item.second is None and item.scale < 2:
                raise StoreError(f"a rating query needs a scale of at least 2 levels, got {item.scale}")
            ids.append(int(conn.execute(queries.insert().values(
                project_id=project_id, first_id=item.first, second_id=item.second,
                scale=0 if item.second is not None else int(item.scale), priority=float(item.priority),
                source=item.source, status="pending", created_at=now, updated_at=now)).inserted_primary_key[0]))
        return ids

    def pending(self, project: str, source: str | None = None, limit: int | None = None) -> list[StoredQuery]:
        """Pending queries of ``project`` (of one ``source`` if given), highest priority first, then oldest."""
        return self._queries(project, ["pending"], source, limit)

    def _queries(self, project: str, statuses: Sequence[str], source: str | None, limit: int | None
                 ) -> list[StoredQuery]:
        statement = (sa.select(queries.c.id, queries.c.first_id, queries.c.second_id, queries.c.scale,
                               queries.c.priority, queries.c.source, queries.c.status)
                     .join(projects, projects.c.id == queries.c.project_id)
                     .where(projects.c.name == project, queries.c.status.in_(statuses))
                     .order_by(queries.c.priority.desc(), queries.c.id).limit(limit))
        if source is not None:
            statement = statement.where(queries.c.source == source)
        with self.reading() as conn:
            return [StoredQuery(*row) for row in conn.execute(statement)]

    def stored_queries(self, ids: Sequence[int]) -> list[StoredQuery]:
        """The query rows ``ids``, in that order."""
        with self.reading() as conn:
            rows = {row[0]: StoredQuery(*row) for row in conn.execute(
                sa.select(queries.c.id, queries.c.first_id, queries.c.second_id, queries.c.scale, queries.c.priority,
                          queries.c.source, queries.c.status).where(queries.c.id.in_(set(ids))))}
        missing = sorted(set(ids) - set(rows))
        if missing:
            raise StoreError(f"no query with id {missing} in the label store at {self.url}")
        return [rows[i] for i in ids]

    def queries(self, ids: Sequence[int]) -> list[Query]:
        """The queries ``ids`` as :class:`polyfuse.feedback.Query` (segments loaded, ``id`` the query id)."""
        return queries_with_segments(self, ids)

    def belong(self, project: str, kind: str, ids: Sequence[int]) -> bool:
        """Whether every id of ``kind`` (``segments`` or ``queries``) is in ``project``."""
        table = {"segments": segments, "queries": queries}[kind]
        statement = (sa.select(sa.func.count()).select_from(table).join(projects, projects.c.id == table.c.project_id)
                     .where(projects.c.name == project, table.c.id.in_(set(ids))))
        with self.reading() as conn:
            return int(conn.execute(statement).scalar_one()) == len(set(ids))

    def query_counts(self, project: str, source: str | None = None) -> dict[str, int]:
        """How many of ``project``'s queries (of one ``source``) are in each status."""
        statement = (sa.select(queries.c.status, sa.func.count()).join(projects, projects.c.id == queries.c.project_id)
                     .where(projects.c.name == project).group_by(queries.c.status))
        if source is not None:
            statement = statement.where(queries.c.source == source)
        with self.reading() as conn:
            found = dict(conn.execute(statement).all())
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def status(self, query_ids: Sequence[int]) -> dict[int, str]:
        """Each query's status."""
        with self.reading() as conn:
            return dict(conn.execute(sa.select(queries.c.id, queries.c.status)
                                     .where(queries.c.id.in_(set(query_ids)))).all())

    def mark_failed(self, query_ids: Sequence[int], error: str) -> None:
        """Mark pending queries failed (a source that raised or answered wrongly), with the reason."""
        with self.writing() as conn:
            conn.execute(queries.update().where(queries.c.id.in_(set(query_ids)), queries.c.status == "pending")
                         .values(status="failed", error=error[:2000], updated_at=time.time()))

    def retry_failed(self, project: str, source: str | None = None) -> int:
        """Put the failed queries of ``project`` (of one ``source``) back to pending; how many."""
        ids = [q.id for q in self._queries(project, ["failed"], source, None)]
        with self.writing() as conn:
            conn.execute(queries.update().where(queries.c.id.in_(ids))
                         .values(status="pending", error=None, updated_at=time.time()))
        return len(ids)

    # -- labels -------------------------------------------------------------------------------------

    def record_label(self, query_id: int, label: Label | None, *, source: str, annotator: str | None = None,
                     key: str | None = None) -> int:
        """Record an answer (``None``: abstain) and commit; the label's id.

        Durable once returned. ``key`` makes a submission idempotent: a key already stored returns the
        label recorded under it and changes nothing (a retried web request, a re-imported file).
        """
        with self.writing() as conn:
            return self.record_label_in(conn, query_id, label, source, annotator, key)

    def record_labels(self, answers: Iterable[tuple[int, Label | None]], *, source: str,
                      annotator: str | None = None) -> list[int]:
        """Record several answers ``(query_id, label or None)`` in one transaction (one sync): all or none."""
        with self.writing() as conn:
            return [self.record_label_in(conn, query_id, label, source, annotator, None) for query_id, label in answers]

    def record_label_in(self, conn: Connection, query_id: int, label: Label | None, source: str,
                        annotator: str | None, key: str | None, created_at: float | None = None) -> int:
        """:meth:`record_label` inside the caller's write transaction (:meth:`writing`), with other writes."""
        if conn.dialect.name == "postgresql":  # label ids in commit order: see labels()
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:lock)"), {"lock": LABEL_WRITE_LOCK})
        if key is not None:
            existing = conn.execute(sa.select(labels.c.id).where(labels.c.key == key)).scalar()
            if existing is not None:
                return int(existing)
        query = conn.execute(sa.select(queries.c.second_id, queries.c.scale, queries.c.status)
                             .where(queries.c.id == query_id)).one_or_none()
        if query is None:
            raise StoreError(f"no query with id {query_id} in the label store at {self.url}")
        if label is not None:
            if not isinstance(label, Label):
                raise StoreError(f"query {query_id}: an answer must be a polyfuse.feedback.Label or None, "
                                 f"got {type(label).__name__}")
            problem = answer_problem(_query_shape(query_id, query.second_id, query.scale), label)
            if problem:
                raise StoreError(f"cannot record the label: {problem}")
        now = time.time()
        try:
            with conn.begin_nested():  # the same key may be submitted meanwhile (PostgreSQL)
                label_id = conn.execute(labels.insert().values(
                    query_id=query_id, preference=None if label is None else label.preference,
                    rating=None if label is None else label.rating,
                    confidence=0.0 if label is None else label.confidence, source=source, annotator=annotator,
                    key=key or uuid.uuid4().hex, created_at=now if created_at is None else created_at,
                )).inserted_primary_key[0]
        except sa.exc.IntegrityError:
            if key is None:
                raise
            return int(conn.execute(sa.select(labels.c.id).where(labels.c.key == key)).scalar_one())
        if label is not None:
            status = "answered"
        else:  # an abstention does not undo someone else's answer
            status = "answered" if query.status == "answered" else "abstained"
        conn.execute(queries.update().where(queries.c.id == query_id).values(status=status, error=None,
                                                                             updated_at=now))
        return int(label_id)

    def labels(self, project: str, after_id: int = 0, *, abstentions: bool = False,
               limit: int | None = None) -> list[LabelRecord]:
        """Labels of ``project`` with an id above ``after_id``, in id order: poll with the last id seen.

        Ids are given in commit order, so a poller never skips a label committed late: SQLite runs one
        writer at a time, and on PostgreSQL label writes hold a transaction-level advisory lock.
        """
        statement = (sa.select(labels.c.id, labels.c.query_id, queries.c.first_id, queries.c.second_id,
                               labels.c.preference, labels.c.rating, queries.c.scale, labels.c.confidence,
                               labels.c.source, labels.c.annotator, labels.c.key, labels.c.created_at)
                     .join(queries, queries.c.id == labels.c.query_id)
                     .join(projects, projects.c.id == queries.c.project_id)
                     .where(projects.c.name == project, labels.c.id > after_id)
                     .order_by(labels.c.id).limit(limit))
        if not abstentions:
            statement = statement.where(sa.or_(labels.c.preference.is_not(None), labels.c.rating.is_not(None)))
        with self.reading() as conn:
            return [LabelRecord(*row) for row in conn.execute(statement)]

    # -- moving label sets --------------------------------------------------------------------------

    def export_jsonl(self, project: str, path: str | Path) -> int:
        """Write ``project``'s labels (abstentions included) with their segments inline; how many."""
        from polyfuse_feedback.exchange import export_jsonl

        return export_jsonl(self, project, Path(path))

    def import_jsonl(self, path: str | Path, project: str) -> int:
        """Add the labels of an export to ``project`` in one transaction; how many were new."""
        from polyfuse_feedback.exchange import import_jsonl

        return import_jsonl(self, Path(path), project)
