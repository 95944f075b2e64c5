"""A training run on another machine than the annotation app: the run's label store through the app's API."""

import pytest
from app_clients import free_port, kill, start_server
from polyfuse.feedback import Label
from polyfuse_feedback.access import issue_token
from polyfuse_feedback.remote import RemoteLabelStore
from polyfuse_feedback.store import LabelStore, NewQuery, StoreError
from test_store import assert_same_segment, make_segment


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """``(address, database URL, tokens)``: a served SQLite store with projects ``run`` and ``other``."""
    url = f"sqlite:///{tmp_path_factory.mktemp('app') / 'feedback.sqlite'}"
    with LabelStore(url) as store:
        tokens = {"trainer": issue_token(store, "trainer-box", project="run", role="trainer"),
                  "other": issue_token(store, "other-box", project="other", role="trainer"),
                  "annotator": issue_token(store, "ann", project="run")}
        store.add_segments("other", [make_segment(5)])
    port = free_port()
    server = start_server(url, port)
    yield f"http://127.0.0.1:{port}", url, tokens
    kill(server)


def test_a_run_uses_the_app_as_its_label_store(app):
    address, url, tokens = app
    remote = RemoteLabelStore(address, "run", tokens["trainer"])
    segments = [make_segment(s) for s in range(3)]
    ids = remote.add_segments("run", segments)
    for got, expected in zip(remote.segments(ids), segments):
        assert_same_segment(got, expected)
    queries = remote.post_queries("run", [NewQuery(ids[0], ids[1], priority=2.0, source="synthetic"),
                                          NewQuery(ids[2], None, 5, 1.0, "synthetic"),
                                          NewQuery(ids[1], ids[2], 0, 0.5, "human")])
    assert [q.id for q in remote.pending("run", source="synthetic")] == queries[:2]
    [loaded] = remote.queries([queries[0]])
    assert loaded.id == queries[0] and loaded.is_comparison
    assert_same_segment(loaded.second, segments[1])
    remote.record_labels([(queries[0], Label(preference=1.0, confidence=0.5)), (queries[1], None)], source="synthetic")
    remote.mark_failed([queries[2]], "judge down")
    assert remote.query_counts("run") == {"pending": 0, "answered": 1, "abstained": 1, "failed": 1}
    [label] = remote.labels("run")
    assert (label.query_id, label.preference, label.confidence, label.source) == (queries[0], 1.0, 0.5, "synthetic")
    assert remote.labels("run", after_id=label.id) == []
    remote.configure_project("run", display={"actions": ["a", "b"]}, overlap=0.25)
    remote.record_metrics("run", 3, {"heldout_accuracy": 0.75})
    with LabelStore(url) as store:
        assert store.project_settings("run").overlap == 0.25
        assert store.metric_history("run", "heldout_accuracy") == [(3, 0.75)]
    remote.close()


def test_tokens_keep_each_run_to_its_own_project(app):
    address, url, tokens = app
    with LabelStore(url) as store:
        other_segment = store.add_segments("other", [make_segment(6)])[0]
    remote = RemoteLabelStore(address, "run", tokens["trainer"])
    with pytest.raises(StoreError, match="refused .*404.*not every segments id"):
        remote.segments([other_segment])
    with pytest.raises(StoreError, match="403.*trainer token for project 'other'"):
        remote.add_segments("other", [make_segment(1)])
    with pytest.raises(StoreError, match="403"):
        RemoteLabelStore(address, "run", tokens["annotator"]).add_segments("run", [make_segment(1)])
    with pytest.raises(StoreError, match="401"):
        RemoteLabelStore(address, "run", "pf_1_" + "x" * 43).labels("run")


def test_garbage_segments_are_refused_with_the_reason(app):
    address, _, tokens = app
    remote = RemoteLabelStore(address, "run", tokens["trainer"])
    with pytest.raises(StoreError, match="422.*exactly the fields"):
        remote._request("POST", "/projects/run/segments", {"segments": [{"length": 1}]})
    with pytest.raises(StoreError, match="422.*does not decode"):
        remote._request("POST", "/projects/run/segments", {"segments": [{
            "length": 1, "layout": "{}", "infos": "[]", "terminated": False, "truncated": False, "env_index": 0,
            "arrays": "bm90IGEgemlw"}]})


def test_setup_errors_say_what_to_do(app, monkeypatch):
    monkeypatch.delenv("POLYFUSE_FEEDBACK_TOKEN", raising=False)
    with pytest.raises(StoreError, match="needs a trainer token: set store.token or POLYFUSE_FEEDBACK_TOKEN"):
        RemoteLabelStore("http://127.0.0.1:9", "run")
    with pytest.raises(StoreError, match="not the address"):
        RemoteLabelStore("ftp://x", "run", "t")
    unreachable = RemoteLabelStore(f"http://127.0.0.1:{free_port()}", "run", "pf_1_" + "x" * 43, retry_s=0.5)
    with pytest.raises(StoreError, match="did not answer GET"):
        unreachable.labels("run")


def test_an_rlhf_run_on_another_machine_stores_its_labels_in_the_app(app, make_registry, tmp_path, monkeypatch):
    pytest.importorskip("polyfuse_dqn", reason="the end-to-end run needs an optimizer plugin (polyfuse-dqn)")
    from polyfuse.training.trainer import Trainer
    from rlhf_runs import rlhf_config

    address, url, _ = app
    with LabelStore(url) as store:
        monkeypatch.setenv("POLYFUSE_FEEDBACK_TOKEN", issue_token(store, "gpu-box", project="digits", role="trainer"))
    registry = make_registry()
    config = rlhf_config(registry, tmp_path / "run")
    config.reward.params["store"] = {"url": address, "project": "digits"}
    config = type(config).model_validate(config.model_dump(mode="json"), context={"registry": registry})
    Trainer(config, registry, progress=False).run()
    assert not (tmp_path / "run" / "feedback.sqlite").exists(), "nothing stored beside the run"
    with LabelStore(url) as store:
        assert len([r for r in store.labels("digits") if r.source == "synthetic"]) == 100
