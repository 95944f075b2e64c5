"""Same-context comparisons (``pairing: same-context``): two actions in one context, the other one replayed by the env."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from polyfuse.errors import PolyfuseError
from polyfuse.rewards import RunContext, Segment
from polyfuse.rl.testing import WordBandit
from polyfuse.training.replay import ReplayableSegment
from polyfuse.training.vector_env import TrackedVectorEnv
from polyfuse_feedback.model import PreferenceModel
from polyfuse_feedback.plugin import PreferenceModelConfig, SyntheticConfig
from polyfuse_feedback.routing import Route, Router
from polyfuse_feedback.store import LabelStore
from polyfuse_feedback.synthetic import SyntheticAnnotator

WORDS = 4


class ReplayableWordBandit(WordBandit):
    """The text bandit with the optional state protocol: its episode (the paying word) can be restored."""

    def get_state(self) -> dict[str, Any]:
        return {"target": self._target}

    def set_state(self, state: dict[str, Any]) -> None:
        self._target = int(state["target"])


def bandit_segments(count: int, seed: int = 0) -> list[Segment]:
    """One-step episodes with random actions, recorded by the trainer's tracked env (so replayable)."""
    envs = TrackedVectorEnv(SyncVectorEnv([lambda: ReplayableWordBandit(WORDS)] * 4,
                                          autoreset_mode=AutoresetMode.SAME_STEP), segment_length=0)
    envs.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(count // 4):
        envs.step(rng.integers(0, WORDS, 4))
    return envs.pop_segments()


def make_model(helpers: Any, tmp_path: Path, **params: Any) -> PreferenceModel:
    env = ReplayableWordBandit(WORDS)
    context = RunContext(env.observation_space, env.action_space, lambda: helpers.make_network(env.observation_space),
                         seed=0, run_dir=tmp_path, planned_updates=10, env_id="word-bandit")
    router = Router(LabelStore.in_run(tmp_path), "test",
                    [Route("synthetic", SyntheticAnnotator(SyntheticConfig(), seed=1))])
    config = PreferenceModelConfig(pairing="same-context", schedule="constant", gradient_steps=30,
                                   heldout_fraction=0.0, **params)
    return PreferenceModel(config, context, router)


def words(segment: Segment) -> str:
    return segment.observations["text"][0]


def test_each_query_compares_two_actions_in_one_context_scored_by_the_env(helpers: Any, tmp_path: Path) -> None:
    model = make_model(helpers, tmp_path, max_labels=200)
    model.observe(bandit_segments(400))
    for _ in range(10):
        metrics = model.update()
    assert metrics["labels"] == 200
    store, strict = model.router.store, 0
    stored = store.labels("test")
    assert len(stored) == 200
    for label, query in zip(stored, store.queries([label.query_id for label in stored])):
        first, second = query.first, query.second
        assert second is not None and len(first) == len(second) == 1
        assert words(first) == words(second)
        np.testing.assert_array_equal(first.observations["vector"], second.observations["vector"])
        assert first.actions[0] != second.actions[0], "two different actions"
        target = WordBandit.WORDS.index(words(first).removeprefix("go "))
        for segment in (first, second):  # each outcome is the environment's own, the replayed one too
            assert segment.env_rewards[0] == float(segment.actions[0] == target)
        strict += first.env_rewards[0] != second.env_rewards[0]
        assert label.preference == {(1, 0): 0.0, (0, 1): 1.0}.get((first.env_rewards[0], second.env_rewards[0]), 0.5)
    # once trained, the other action is the model's best after the one taken: mostly the paying one
    assert strict > 150, strict


def test_same_context_labels_teach_the_best_action_in_each_context(helpers: Any, tmp_path: Path) -> None:
    model = make_model(helpers, tmp_path, max_labels=150)
    model.observe(bandit_segments(400))
    for _ in range(10):
        model.update()
    test = bandit_segments(200, seed=7)
    rewards = model._segment_action_rewards(test).mean(0)  # (contexts, actions)
    targets = [WordBandit.WORDS.index(words(s).removeprefix("go ")) for s in test]
    assert (rewards.argmax(1) == targets).mean() > 0.95


def test_a_temperature_draws_other_actions_by_the_models_odds(helpers: Any, tmp_path: Path) -> None:
    rewards = np.tile(np.array([0.0, 0.0, -10.0, 1.0]), (1, 4000, 1))  # (members, contexts, actions)
    taken = np.zeros(4000, np.int64)
    at = {t: make_model(helpers, tmp_path / str(t), alternative_epsilon=0.0, alternative_temperature=t)
          for t in (0.0, 1.0, 100.0)}
    assert (at[0.0]._alternatives(taken, rewards.copy()) == 3).all()  # 0: the best after the taken one
    counts = np.bincount(at[1.0]._alternatives(taken, rewards.copy()), minlength=4)
    assert counts[0] == 0 and counts[2] < 5  # never the taken one, hardly ever the poor one
    assert 2.3 < counts[3] / counts[1] < 3.2  # odds e : 1 between rewards one apart
    counts = np.bincount(at[100.0]._alternatives(taken, rewards.copy()), minlength=4)
    assert counts[0] == 0 and (np.abs(counts[1:] / 4000 - 1 / 3) < 0.05).all()  # hot: near uniform


def test_a_share_of_same_context_pairs_leaves_the_rest_random_pairs(helpers: Any, tmp_path: Path) -> None:
    model = make_model(helpers, tmp_path, max_labels=200, same_context_share=0.5)
    model.observe(bandit_segments(400))
    for _ in range(10):
        model.update()
    store = model.router.store
    queries = store.queries([label.query_id for label in store.labels("test")])
    same = sum(words(q.first) == words(q.second) and q.first.env_index == q.second.env_index
               and np.array_equal(q.first.observations["vector"], q.second.observations["vector"]) for q in queries)
    assert len(queries) == 200 and 70 <= same <= 130, same  # binomial(200, 0.5), and the rest from the pool


def test_disagreement_selection_works_with_same_context_pairs(helpers: Any, tmp_path: Path) -> None:
    model = make_model(helpers, tmp_path, max_labels=100, selection="disagreement")
    model.observe(bandit_segments(200))
    for _ in range(4):
        metrics = model.update()
    assert metrics["labels"] == metrics["asked"] and 0 < metrics["uncertainty"] <= 0.5


def test_entropy_selection_asks_about_the_contexts_the_model_is_least_sure_of(helpers: Any, tmp_path: Path) -> None:
    model = make_model(helpers, tmp_path, max_labels=40, selection="entropy")
    model.observe(bandit_segments(400))
    for _ in range(3):
        metrics = model.update()
    everywhere = model._segment_action_rewards(list(model.pool)).mean(0)
    probabilities = np.exp(everywhere - everywhere.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    entropy = -(probabilities * np.log(probabilities)).sum(1)
    pairs, chosen = model._same_context_pairs(20, active=True)
    assert len(pairs) == 20 and 0 < metrics["query_entropy"] <= np.log(WORDS)
    assert chosen.min() >= np.quantile(entropy, 0.5), (chosen.min(), np.quantile(entropy, [0.5, 0.9]))


def test_an_environment_that_cannot_replay_is_a_clear_error(helpers: Any, tmp_path: Path) -> None:
    plain = [Segment({"vector": np.zeros((1, 4), np.float32), "text": ("go up",)}, np.array([0]),
                     np.zeros(1, np.float32), [{}], True, False, 0)]
    with pytest.raises(PolyfuseError, match=r"pairing: same-context .* word-bandit cannot .* pairing: random"):
        make_model(helpers, tmp_path).observe(plain)


def test_a_model_that_asks_nothing_learns_from_stored_same_context_labels(helpers: Any, tmp_path: Path) -> None:
    env = ReplayableWordBandit(WORDS)
    context = RunContext(env.observation_space, env.action_space, lambda: helpers.make_network(env.observation_space),
                         seed=0, run_dir=tmp_path, planned_updates=1)
    offline = PreferenceModel(PreferenceModelConfig(pairing="same-context", max_labels=0), context, router=None)
    offline.observe([Segment(**{k: v for k, v in s.__dict__.items() if k not in ("start_state", "replayer")})
                     for s in bandit_segments(8)])  # as read back from the label store: nothing to replay
    assert len(offline.pool) == 8


def test_segments_of_several_steps_are_a_clear_error(helpers: Any, tmp_path: Path) -> None:
    long = bandit_segments(8)
    two_steps = [ReplayableSegment(**{**long[0].__dict__, "actions": np.array([0, 1]),
                                      "env_rewards": np.zeros(2, np.float32)})]
    with pytest.raises(PolyfuseError, match="one-step segments .* fragment_length: 1"):
        make_model(helpers, tmp_path).observe(two_steps)


def test_pairing_is_validated() -> None:
    with pytest.raises(ValueError, match="pairing"):
        PreferenceModelConfig(pairing="same-image")
    assert PreferenceModelConfig().pairing == "random"


def test_an_env_without_the_state_protocol_records_plain_segments() -> None:
    envs = TrackedVectorEnv(SyncVectorEnv([lambda: WordBandit(WORDS)] * 2, autoreset_mode=AutoresetMode.SAME_STEP),
                            segment_length=0)
    envs.reset(seed=0)
    envs.step(np.zeros(2, np.int64))
    assert [type(s) for s in envs.pop_segments()] == [Segment, Segment]


def test_the_annotation_app_shows_one_context_with_two_answers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from polyfuse.envs import DIGITS_VQA_ID, make_vector_env
    from polyfuse.envs.digits_vqa import ANSWERS
    from polyfuse_feedback.access import issue_token
    from polyfuse_feedback.app import create_app
    from polyfuse_feedback.rendering import describe_observations
    from polyfuse_feedback.store import NewQuery

    envs = TrackedVectorEnv(make_vector_env(DIGITS_VQA_ID, {}, num_envs=1, vectorization="native", seed=0), 0)
    envs.reset(seed=0)
    envs.step(np.array([3]))
    (taken,) = envs.pop_segments()
    other = taken.replay([10])  # "yes"
    with LabelStore(f"sqlite:///{tmp_path / 'labels.sqlite'}") as store:
        store.configure_project("run", display={"env": DIGITS_VQA_ID, "actions": list(ANSWERS), "observations":
                                                describe_observations(envs.single_observation_space, DIGITS_VQA_ID)})
        first, second = store.add_segments("run", [taken, other])
        (query_id,) = store.post_queries("run", [NewQuery(first, second, source="human")])
        token = issue_token(store, "ann", project="run")
        with TestClient(create_app(store.database_url)) as client:
            shown = client.get("/api/v1/projects/run/next", headers={"Authorization": f"Bearer {token}"}).json()
            left, right = shown["query"]["segments"]
            assert shown["query"]["id"] == query_id and shown["query"]["kind"] == "comparison"
            assert left["images"] == right["images"] and left["images"]["image"]["still"].startswith("data:image/png")
            assert left["texts"] == right["texts"] == {"question": [taken.observations["question"][0]]}
            assert (left["actions"], right["actions"]) == (["3"], ["yes"])
            csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
            assert client.post("/login", data={"token": token, "csrf": csrf}, follow_redirects=False).status_code == 303
            page = client.get("/projects/run").text  # the annotate page: the same scan twice, the two answers
            assert page.count(left["images"]["image"]["still"]) == 2
            assert '<span class="action">3</span>' in page and '<span class="action">yes</span>' in page
