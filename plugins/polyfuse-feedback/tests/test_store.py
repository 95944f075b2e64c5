"""The durable label store: round-trips, idempotency, polling, JSONL moves between backends, durability, errors."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import Label
from polyfuse.rewards import Segment
from polyfuse_feedback.store import LabelStore, NewQuery, StoreError


def make_segment(seed=0, length=3):
    rng = np.random.default_rng(seed)
    return Segment(
        observations={"image": rng.integers(0, 256, (length, 8, 8, 1), dtype=np.uint8),
                      "features": rng.normal(size=(length, 4)).astype(np.float32),
                      "question": tuple(f"is it {n}? ünï\x00" for n in range(length))},
        actions=rng.integers(0, 12, length),
        env_rewards=rng.normal(size=length).astype(np.float32),
        infos=[{"step": t, "name": "x", "score": np.float32(0.5), "array": np.zeros(2), "nan": float("nan")}
               for t in range(length)],
        terminated=bool(seed % 2), truncated=False, env_index=seed)


def assert_same_segment(got, expected):
    assert list(got.observations) == list(expected.observations)
    for key, value in expected.observations.items():
        if isinstance(value, tuple):
            assert got.observations[key] == value and all(type(v) is str for v in got.observations[key])
        else:
            assert got.observations[key].dtype == value.dtype
            np.testing.assert_array_equal(got.observations[key], value)
    for name in ("actions", "env_rewards"):
        assert getattr(got, name).dtype == getattr(expected, name).dtype
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name))
    assert list(got.infos) == [{"step": t, "name": "x", "score": 0.5} for t in range(len(expected))]
    assert (got.terminated, got.truncated, got.env_index) == (expected.terminated, expected.truncated,
                                                              expected.env_index)


def fill(store, project="run"):
    """Three segments; a comparison answered, a rating answered, a comparison abstained, one pending."""
    ids = store.add_segments(project, [make_segment(s) for s in range(3)])
    q = store.post_queries(project, [NewQuery(ids[0], ids[1], priority=1.0, source="synthetic"),
                                     NewQuery(ids[2], None, scale=5, priority=3.0, source="judge"),
                                     NewQuery(ids[1], ids[2], source="synthetic"),
                                     NewQuery(ids[0], ids[2], priority=2.0, source="synthetic")])
    store.record_label(q[0], Label(preference=1.0, confidence=0.75), source="synthetic", key="a")
    store.record_label(q[1], Label(rating=4), source="judge", annotator="ana", key="b")
    store.record_label(q[2], None, source="synthetic", key="c")
    return ids, q


def test_segments_round_trip_exactly(store_url):
    store = LabelStore(store_url)
    segments = [make_segment(s, length=s + 1) for s in range(3)]
    ids = store.add_segments("run", segments)
    for got, expected in zip(store.segments(ids[::-1]), segments[::-1]):
        assert_same_segment(got, expected)


def test_queries_labels_and_statuses(store_url):
    store = LabelStore(store_url)
    ids, q = fill(store)
    assert store.status(q) == {q[0]: "answered", q[1]: "answered", q[2]: "abstained", q[3]: "pending"}
    assert [p.id for p in store.pending("run")] == [q[3]]
    records = store.labels("run")
    assert [(r.query_id, r.first, r.second, r.preference, r.rating, r.scale, r.confidence, r.source, r.annotator)
            for r in records] == [(q[0], ids[0], ids[1], 1.0, None, 0, 0.75, "synthetic", None),
                                  (q[1], ids[2], None, None, 4, 5, 1.0, "judge", "ana")]
    assert records[1].label == Label(rating=4)
    assert [r.key for r in store.labels("run", abstentions=True)] == ["a", "b", "c"]
    loaded = store.queries([q[1], q[0]])
    assert (loaded[0].id, loaded[0].scale, loaded[0].second, loaded[1].is_comparison) == (q[1], 5, None, True)
    assert_same_segment(loaded[1].second, make_segment(1))
    [info] = store.projects()
    assert (info.name, info.segments, info.queries, info.pending, info.labels) == ("run", 3, 4, 1, 3)


def test_pending_is_highest_priority_first_per_source(store_url):
    store = LabelStore(store_url)
    ids = store.add_segments("run", [make_segment(0), make_segment(1)])
    q = store.post_queries("run", [(ids[0], ids[1], 0, 0.5, "a"), (ids[0], None, 2, 9.0, "b"),
                                   (ids[1], ids[0], 0, 2.0, "a"), (ids[1], ids[0], 0, 2.0, "a")])
    assert [p.id for p in store.pending("run")] == [q[1], q[2], q[3], q[0]]
    assert [p.id for p in store.pending("run", source="a", limit=2)] == [q[2], q[3]]
    assert store.pending("other") == []
    store.mark_failed([q[2]], "the judge timed out")
    assert [p.id for p in store.pending("run", source="a")] == [q[3], q[0]]
    assert store.retry_failed("run", source="a") == 1
    assert store.status([q[2]]) == {q[2]: "pending"}


def test_keys_make_labels_idempotent_and_polling_sees_only_new_ones(store_url):
    store = LabelStore(store_url)
    ids = store.add_segments("run", [make_segment(0), make_segment(1)])
    q = store.post_queries("run", [(ids[0], ids[1])] * 3)
    first = store.record_label(q[0], Label(preference=0.0), source="s", key="web-42")
    assert store.record_label(q[0], Label(preference=1.0), source="s", key="web-42") == first
    assert [r.preference for r in store.labels("run")] == [0.0]
    seen = store.labels("run")[-1].id
    store.record_label(q[1], Label(preference=0.5), source="s")
    store.record_label(q[2], Label(preference=1.0), source="s", annotator="bo")
    new = store.labels("run", after_id=seen)
    assert [r.query_id for r in new] == [q[1], q[2]] and new[0].id > seen
    assert store.labels("run", after_id=new[-1].id) == []


def test_the_same_key_from_several_threads_at_once_is_one_label(store_url):
    store = LabelStore(store_url)
    ids = store.add_segments("run", [make_segment(0), make_segment(1)])
    [q] = store.post_queries("run", [(ids[0], ids[1])])
    barrier, results, errors = threading.Barrier(4), [], []

    def submit(n):
        try:
            barrier.wait()
            project = store.project(f"new-{n % 2}")  # two threads create each project at once
            results.append((store.record_label(q, Label(preference=1.0), source="web", key="retried"), project))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({label_id for label_id, _ in results}) == 1 and len(store.labels("run")) == 1
    assert sorted(p.name for p in store.projects()) == ["new-0", "new-1", "run"]


def test_record_labels_records_a_batch_all_or_none(store_url):
    store = LabelStore(store_url)
    ids = store.add_segments("run", [make_segment(0), make_segment(1)])
    q = store.post_queries("run", [(ids[0], ids[1]), (ids[0], None, 3), (ids[1], ids[0])])
    with pytest.raises(StoreError, match="rating from 1 to 3"):
        store.record_labels([(q[0], Label(preference=1.0)), (q[1], Label(rating=7))], source="judge")
    assert store.labels("run", abstentions=True) == []
    label_ids = store.record_labels([(q[0], Label(preference=1.0)), (q[1], Label(rating=3)), (q[2], None)],
                                    source="judge", annotator="model-v2")
    assert [r.id for r in store.labels("run", abstentions=True)] == label_ids
    assert {r.annotator for r in store.labels("run", abstentions=True)} == {"model-v2"}
    status = store.status(q)
    assert [status[i] for i in q] == ["answered", "answered", "abstained"]


def test_wrong_answers_and_unknown_ids_are_clear_errors(store_url):
    store = LabelStore(store_url)
    ids = store.add_segments("run", [make_segment(0), make_segment(1)])
    compare, rate = store.post_queries("run", [(ids[0], ids[1]), (ids[0], None, 3)])
    with pytest.raises(StoreError, match="compares two segments but the answer is a rating"):
        store.record_label(compare, Label(rating=2), source="s")
    with pytest.raises(StoreError, match="rating from 1 to 3, the answer is 4"):
        store.record_label(rate, Label(rating=4), source="s")
    with pytest.raises(StoreError, match="no query with id"):
        store.record_label(10_000, Label(rating=1), source="s")
    with pytest.raises(StoreError, match="not in this project"):
        store.post_queries("elsewhere", [(ids[0], ids[1])])
    with pytest.raises(StoreError, match="scale of at least 2"):
        store.post_queries("run", [(ids[0], None, 1)])
    with pytest.raises(StoreError, match="no segment with id"):
        store.segments([10_000])
    assert store.status([compare, rate]) == {compare: "pending", rate: "pending"}
    assert store.labels("run", abstentions=True) == []


def test_abstaining_after_an_answer_keeps_it_answered(tmp_path):
    store = LabelStore.in_run(tmp_path)
    ids = store.add_segments("run", [make_segment(0), make_segment(1)])
    [q] = store.post_queries("run", [(ids[0], ids[1])])
    store.record_label(q, Label(preference=1.0), source="people", annotator="ana")
    store.record_label(q, None, source="people", annotator="bo")
    assert store.status([q]) == {q: "answered"}
    assert (tmp_path / "feedback.sqlite").exists()


def test_reopening_keeps_everything_and_tables_are_created_once(tmp_path):
    with LabelStore.in_run(tmp_path) as store:
        fill(store)
        store_id = store.store_id
    again = LabelStore.in_run(tmp_path)
    assert again.store_id == store_id
    assert [r.key for r in again.labels("run", abstentions=True)] == ["a", "b", "c"]
    with again.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


@pytest.mark.parametrize("target_backend", ["sqlite", "postgresql"])
def test_export_then_import_moves_labels_between_backends(store_url, target_backend, tmp_path, request):
    source = LabelStore(store_url)
    ids, _ = fill(source)
    path = tmp_path / "labels.jsonl"
    assert source.export_jsonl("run", path) == 3
    line = json.loads(path.read_text().splitlines()[0])
    assert line["first"]["observations"]["question"][0] == "is it 0? ünï\x00"
    assert line["first"]["observations"]["image"]["shape"] == [3, 8, 8, 1]

    target_url = (f"sqlite:///{tmp_path / 'target.sqlite'}" if target_backend == "sqlite"
                  else request.getfixturevalue("new_postgresql_url")())
    target = LabelStore(target_url)
    assert target.import_jsonl(path, "copy") == 3
    assert target.import_jsonl(path, "copy") == 0  # idempotent
    got, expected = target.labels("copy", abstentions=True), source.labels("run", abstentions=True)
    strip = lambda r: (r.preference, r.rating, r.scale, r.confidence, r.source, r.annotator, r.key, r.created_at)
    assert [strip(r) for r in got] == [strip(r) for r in expected]
    moved = target.segments([got[0].first, got[0].second, got[1].first])
    for segment, original in zip(moved, source.segments([ids[0], ids[1], ids[2]])):
        assert_same_segment(segment, original)
    [info] = target.projects()
    assert (info.segments, info.queries, info.labels) == (3, 3, 3)
    assert source.import_jsonl(path, "run") == 0  # back where it came from: nothing new
    assert source.import_jsonl(path, "copy") == 3, "a copy into another project of the same database"
    assert source.import_jsonl(path, "copy") == 0
    assert [r.key for r in source.labels("copy", abstentions=True)] == [f"copy/{r.key}" for r in expected]


def test_import_refuses_a_file_that_is_not_an_export_naming_the_line(tmp_path):
    store = LabelStore.in_run(tmp_path)
    fill(store)
    good = tmp_path / "labels.jsonl"
    store.export_jsonl("run", good)
    lines = good.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + "\n\n" + '{"pairs": 3}\n')
    with pytest.raises(PolyfuseError, match=r"bad.jsonl:3 is not a polyfuse label export"):
        store.import_jsonl(bad, "copy")
    bad.write_text("not json\n")
    with pytest.raises(StoreError, match=r"bad.jsonl:1 is not a polyfuse label export: not JSON"):
        store.import_jsonl(bad, "copy")
    damaged = json.loads(lines[1])
    damaged["rating"], damaged["key"] = 9, "new"  # a new key: a known one is skipped before any check
    bad.write_text(lines[0] + "\n" + json.dumps(damaged) + "\n")
    with pytest.raises(StoreError, match=r"bad.jsonl:2: cannot record the label: .* from 1 to 5, the answer is 9"):
        store.import_jsonl(bad, "copy")
    assert [p.name for p in store.projects()] == ["run"]  # all or nothing


def test_an_unreachable_database_names_the_url_without_its_password():
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'polyfuse-feedback[postgresql]'")
    with pytest.raises(StoreError) as error:
        LabelStore("postgresql+psycopg://ana:s3cret@127.0.0.1:1/labels?connect_timeout=5")
    message = str(error.value)
    assert "s3cret" not in message and "ana:***@127.0.0.1:1/labels" in message
    assert "check that the database server is running" in message


def test_an_unusable_sqlite_path_is_clear(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"cannot create its folder .*file/sub \(Not a directory\); give a path"):
        LabelStore(f"sqlite:///{tmp_path / 'file' / 'sub' / 'feedback.sqlite'}")
    with pytest.raises(StoreError, match="cannot open the label store at .*: unable to open database file; check"):
        LabelStore(f"sqlite:///{tmp_path}")  # a folder, not a database file
    (tmp_path / "notes.txt").write_text("not a database, but long enough to have a header " * 4)
    with pytest.raises(StoreError, match="cannot open the label store at .*notes.txt: file is not a database"):
        LabelStore(f"sqlite:///{tmp_path / 'notes.txt'}")


def test_a_missing_driver_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    with pytest.raises(StoreError, match=r"pip install 'polyfuse-feedback\[postgresql\]'"):
        LabelStore("postgresql://ana:pw@localhost/labels")


def test_not_a_url_and_unknown_databases_are_clear():
    with pytest.raises(StoreError, match="not a database URL"):
        LabelStore("feedback.sqlite")
    with pytest.raises(StoreError, match="supports sqlite:/// and postgresql"):
        LabelStore("nosuchdb://x/y")
    with pytest.raises(StoreError, match="in-memory database, gone with its connection"):
        LabelStore("sqlite://")


def test_text_in_numeric_arrays_of_objects_is_refused(tmp_path):
    store = LabelStore.in_run(tmp_path)
    segment = make_segment(0)
    bad = Segment(segment.observations, np.array([{}, {}, {}], dtype=object), segment.env_rewards, segment.infos,
                  False, False, 0)
    with pytest.raises(StoreError, match="actions holds object values"):
        store.add_segments("run", [bad])


WRITER = textwrap.dedent("""
    import sys
    from polyfuse.feedback import Label
    from polyfuse_feedback.store import LabelStore
    store = LabelStore(sys.argv[1])
    ids = [int(i) for i in sys.argv[2].split(",")]
    for n, query_id in enumerate(ids):
        key = f"{sys.argv[3]}-{n}"
        store.record_label(query_id, Label(preference=float(n % 2)), source="writer", key=key)
        print(key, flush=True)
""")


def spawn_writer(url, query_ids, prefix):
    return subprocess.Popen([sys.executable, "-c", WRITER, url, ",".join(map(str, query_ids)), prefix],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})


def test_acknowledged_labels_survive_kill_9_of_the_writer(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    store = LabelStore(url)
    ids = store.add_segments("run", [make_segment(0), make_segment(1)])
    queries = store.post_queries("run", [(ids[0], ids[1])] * 2000)
    writer = spawn_writer(url, queries, "k")
    acknowledged = []
    for line in writer.stdout:
        acknowledged.append(line.strip())
        if len(acknowledged) == 300:
            os.kill(writer.pid, signal.SIGKILL)  # mid-stream: it was writing the next label
            break
    acknowledged += [line.strip() for line in writer.stdout]  # printed before the kill
    writer.wait()
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read()
    reopened = LabelStore(url)
    keys = [r.key for r in reopened.labels("run")]
    assert len(keys) == len(set(keys))
    assert set(acknowledged) <= set(keys)
    assert len(keys) - len(acknowledged) <= 1  # at most the label being committed when it died
    assert len(acknowledged) < 2000


def test_concurrent_writers_never_see_database_is_locked(tmp_path):
    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    store = LabelStore(url)
    ids = store.add_segments("run", [make_segment(0), make_segment(1)])
    queries = store.post_queries("run", [(ids[0], ids[1])] * 600)
    writers = [spawn_writer(url, queries[n * 200:(n + 1) * 200], f"p{n}") for n in range(2)]
    for writer in writers:
        writer.stdout.readline()  # both processes are writing: now the threads join in
    errors = []

    def thread_writer(n):
        try:
            for m, query_id in enumerate(queries[400 + n * 100:500 + n * 100]):
                store.record_label(query_id, Label(preference=0.5), source="thread", key=f"t{n}-{m}")
                store.labels("run", after_id=m, limit=10)  # readers interleaved with the writes
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outputs = [writer.communicate() for writer in writers]
    assert errors == []
    assert [writer.returncode for writer in writers] == [0, 0], [err for _, err in outputs]
    records = store.labels("run")
    assert len({r.key for r in records}) == len(records) == 600
    assert set(store.status(queries).values()) == {"answered"}


def test_the_server_finder_prefers_path_then_the_newest_debian_version(find_postgres_binary, tmp_path):
    roots = str(tmp_path / "lib" / "postgresql" / "*" / "bin")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_postgres_binary("initdb", path=str(empty), roots=roots) is None  # missing: the tests skip
    for version in ("9.6", "13", "15"):
        binary = tmp_path / "lib" / "postgresql" / version / "bin" / "initdb"
        binary.parent.mkdir(parents=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    assert find_postgres_binary("initdb", path=str(empty), roots=roots).endswith("/15/bin/initdb")
    on_path = tmp_path / "bin" / "initdb"
    on_path.parent.mkdir()
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(0o755)
    assert find_postgres_binary("initdb", path=str(on_path.parent), roots=roots) == str(on_path)


def test_the_set_up_never_fails_without_apt(tmp_path):
    script = Path(__file__).parents[3] / "scripts" / "install-test-services.sh"
    if not script.is_file():
        pytest.skip("the repository's scripts/ is not beside this plugin (installed elsewhere)")
    bare = tmp_path / "bin"  # a PATH with bash and id, but neither initdb nor apt-get
    bare.mkdir()
    for tool in ("bash", "id"):
        (bare / tool).symlink_to(shutil.which(tool))
    done = subprocess.run([str(bare / "bash"), str(script)], check=False, capture_output=True, text=True,
                          env={"PATH": str(bare), "PG_BIN_GLOB": str(tmp_path / "none"),
                               "CHROMIUM": "no-such-browser"})
    assert done.returncode == 0
    assert "apt-get install postgresql chromium" in done.stderr
