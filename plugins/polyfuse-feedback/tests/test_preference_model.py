"""The preference model: Bradley–Terry loss, learning to rank on a small task, state round trip."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import FeedbackSource, Label, Query
from polyfuse.rewards import RewardBatch, RunContext, Segment
from polyfuse_feedback.model import PreferenceModel
from polyfuse_feedback.networks import Member, bradley_terry_loss, ordinal_loss
from polyfuse_feedback.plugin import PreferenceModelConfig, SyntheticConfig
from polyfuse_feedback.routing import Route, Router
from polyfuse_feedback.store import LabelStore
from polyfuse_feedback.synthetic import SyntheticAnnotator


def test_bradley_terry_loss_on_a_hand_example() -> None:
    first, second = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([math.log(3.0), 0.0, 1.0])
    # P(second) = 0.75, 0.5, 0.5: targets 1 (second better), 0 (first better), 0.5 (tie)
    loss = bradley_terry_loss(first, second, torch.tensor([1.0, 0.0, 0.5]))
    assert loss.item() == pytest.approx((-math.log(0.75) + math.log(2) + math.log(2)) / 3, rel=1e-6)
    weighted = bradley_terry_loss(first, second, torch.tensor([1.0, 0.0, 0.5]), torch.tensor([2.0, 0.0, 0.0]))
    assert weighted.item() == pytest.approx(-math.log(0.75), rel=1e-6)
    # a margin of log 3 asks R2 - R1 > log 3 for "second": the first pair now sits at P = 0.5
    margin = bradley_terry_loss(first[:2], second[:2], torch.tensor([1.0, 0.5]), margin=math.log(3.0))
    assert margin.item() == pytest.approx(math.log(2), rel=1e-6)


def bandit_segments(env: Any, rng: np.random.Generator, count: int) -> list[Segment]:
    """One-step episodes of the text bandit with random actions (reward 1 for the word's action)."""
    segments = []
    for _ in range(count):
        observation, _ = env.reset(seed=int(rng.integers(1 << 30)))
        action = int(rng.integers(env.action_space.n))
        _, reward, terminated, truncated, info = env.step(action)
        batch = {"vector": observation["vector"][None], "text": (observation["text"],)}
        segments.append(Segment(batch, np.array([action]), np.array([reward], np.float32), [info], terminated,
                                truncated, 0))
    return segments


def make_model(helpers: Any, tmp_path: Path, updates: int = 10, synthetic: dict[str, Any] | None = None,
               **params: Any) -> tuple[PreferenceModel, Any]:
    """A model on the text bandit asking the rational synthetic annotator, its labels in ``tmp_path``."""
    env = helpers.WordBandit(num_words=4)
    context = RunContext(env.observation_space, env.action_space,
                         lambda: helpers.make_network(env.observation_space), seed=0, run_dir=tmp_path,
                         planned_updates=updates)
    params = {"schedule": "constant", "gradient_steps": 30, "heldout_fraction": 0.25, **params}
    annotator = SyntheticAnnotator(SyntheticConfig(**(synthetic or {})), seed=1)
    router = Router(LabelStore.in_run(tmp_path), "test", [Route("synthetic", annotator)])
    return PreferenceModel(PreferenceModelConfig(**params), context, router), env


def pairwise_accuracy(model: PreferenceModel, segments: list[Segment]) -> float:
    """How often the model ranks two segments of different true reward the right way round."""
    batch = RewardBatch({"vector": np.concatenate([s.observations["vector"] for s in segments]),
                         "text": tuple(s.observations["text"][0] for s in segments)},
                        np.concatenate([s.actions for s in segments]), np.zeros(len(segments)),
                        np.ones(len(segments), bool), np.zeros(len(segments), bool))
    model.trained = True
    scores = model.score(batch)
    truth = np.array([s.env_rewards[0] for s in segments])
    good, bad = scores[truth == 1], scores[truth == 0]
    return float((good[:, None] > bad[None, :]).mean())


@pytest.mark.parametrize("selection", ["random", "disagreement", "entropy"])
def test_the_model_learns_to_rank(selection: str, helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=400, selection=selection)
    rng = np.random.default_rng(0)
    test = bandit_segments(env, rng, 200)
    before = pairwise_accuracy(model, test)
    model.observe(bandit_segments(env, rng, 400))
    metrics = {}
    for _ in range(10):
        metrics = model.update()
    after = pairwise_accuracy(model, test)
    assert metrics["labels"] == metrics["asked"] == 400
    assert after > 0.9 and after > before + 0.2, (before, after)
    assert metrics["heldout_accuracy"] > 0.8 and metrics["loss"] < math.log(2)  # ties alone cost log 2
    assert metrics["return_correlation"] > 0.7
    if selection == "disagreement":
        assert 0 < metrics["uncertainty"] <= 0.5
    if selection == "entropy":
        assert 0 < metrics["query_entropy"] <= math.log(2)
    assert metrics["feedback/synthetic/labelled"] == 400
    assert model.update()["labels"] == 400, "the label budget is not exceeded"


def test_state_round_trip_reads_labels_back_from_the_store(helpers: Any, tmp_path: Path) -> None:
    from polyfuse.rl.testing import assert_checkpointable

    model, env = make_model(helpers, tmp_path, max_labels=80, updates=2)
    rng = np.random.default_rng(1)
    model.observe(bandit_segments(env, rng, 100))
    model.update()
    state = model.state_dict()
    assert_checkpointable(state)
    model.close()
    restored, _ = make_model(helpers, tmp_path, max_labels=80, updates=2)
    restored.router.project = "the output_dir moved"  # the saved run's project wins: its labels, its budget
    restored.load_state_dict(state)
    assert restored.router.project == "test"
    restored.observe(bandit_segments(env, rng, 100))  # the pool of segments is not checkpointed
    restored.update()  # reads the stored labels; asks the second update's share
    assert len(restored.labels) == 80 and restored.router.asked() == 80
    first_rows = [(r.id, r.preference, r.heldout) for r in model.labels.rows]
    assert [(r.id, r.preference, r.heldout) for r in restored.labels.rows[: len(first_rows)]] == first_rows


def test_ratings_and_comparisons_train_one_model(helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=400, rating_share=0.5, rating_scale=2,
                            synthetic={"rating_range": (0.0, 1.0)})
    rng = np.random.default_rng(3)
    test = bandit_segments(env, rng, 200)
    model.observe(bandit_segments(env, rng, 400))
    for _ in range(10):
        model.update()
    rated = [r for r in model.labels.rows if r.rating is not None]
    assert 120 < len(rated) < 280 and {r.rating for r in rated} == {1, 2} and all(r.scale == 2 for r in rated)
    assert pairwise_accuracy(model, test) > 0.9


def test_ratings_alone_teach_the_ranking(helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=300, rating_share=1.0, rating_scale=5)
    rng = np.random.default_rng(4)
    test = bandit_segments(env, rng, 200)
    model.observe(bandit_segments(env, rng, 400))
    for _ in range(10):
        model.update()
    assert all(r.rating in (1, 5) for r in model.labels.rows), "returns 0/1 sit at the ends of the scale"
    assert pairwise_accuracy(model, test) > 0.9


def test_ordinal_loss_on_a_hand_example() -> None:
    thresholds = torch.tensor([0.0])  # good/bad: P(good) = sigmoid(R)
    returns = torch.tensor([math.log(3.0), 0.0])
    loss = ordinal_loss(returns, torch.tensor([2, 1]), thresholds)
    assert loss.item() == pytest.approx((-math.log(0.75) - math.log(0.5)) / 2, rel=1e-6)
    three = torch.tensor([-1.0, 1.0])
    probabilities = [ordinal_loss(torch.tensor([0.3]), torch.tensor([r]), three).neg().exp().item() for r in (1, 2, 3)]
    assert sum(probabilities) == pytest.approx(1.0, rel=1e-6)


def test_the_uncertainty_penalty_lowers_scores_by_the_ensemble_spread(helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=40, uncertainty_penalty=2.0)
    rng = np.random.default_rng(2)
    model.observe(bandit_segments(env, rng, 60))
    model.update()
    segments = bandit_segments(env, rng, 20)
    batch = RewardBatch({"vector": np.concatenate([s.observations["vector"] for s in segments]),
                         "text": tuple(s.observations["text"][0] for s in segments)},
                        np.concatenate([s.actions for s in segments]), np.zeros(20), np.ones(20, bool),
                        np.zeros(20, bool))
    penalised = model.score(batch)
    with torch.no_grad():
        rewards = model._step_rewards(batch.observations, batch.actions)
    plain = rewards.mean(0).numpy() / model.std
    spread = rewards.std(0, unbiased=False).numpy() / model.std
    np.testing.assert_allclose(penalised, plain - 2.0 * spread, rtol=1e-5, atol=1e-6)
    assert (spread > 0).all()


def test_the_concat_head_learns_too(helpers: Any, tmp_path: Path) -> None:
    model, env = make_model(helpers, tmp_path, max_labels=400, head="concat")
    rng = np.random.default_rng(0)
    model.observe(bandit_segments(env, rng, 400))
    for _ in range(10):
        model.update()
    assert pairwise_accuracy(model, bandit_segments(env, rng, 200)) > 0.8


class GatedSource(FeedbackSource):
    """An asynchronous source that answers only once the test opens the gate (a slow judge or person)."""

    asynchronous = True

    def __init__(self) -> None:
        self.gate = threading.Event()

    def label(self, queries: Any) -> list[Label | None]:
        self.gate.wait(30)
        return [Label(float(np.sum(q.second.env_rewards) > np.sum(q.first.env_rewards))) for q in queries]


def test_a_slow_source_never_blocks_an_update(helpers: Any, tmp_path: Path) -> None:
    env = helpers.WordBandit(num_words=4)
    context = RunContext(env.observation_space, env.action_space, lambda: helpers.make_network(env.observation_space),
                         seed=0, run_dir=tmp_path, planned_updates=4)
    source = GatedSource()
    router = Router(LabelStore.in_run(tmp_path), "test", [Route("slow", source)])
    model = PreferenceModel(PreferenceModelConfig(max_labels=40, schedule="constant"), context, router)
    model.observe(bandit_segments(env, np.random.default_rng(5), 50))
    started = time.monotonic()
    metrics = model.update()
    assert time.monotonic() - started < 10 and metrics["labels"] == 0 and metrics["asked"] == 4
    assert metrics["feedback/slow/waiting"] == 4
    source.gate.set()
    assert router.askers["slow"].wait(20)
    metrics = model.update()
    assert metrics["labels"] >= 4 and "loss" in metrics, "the labels that arrived are trained on"
    model.close()


def test_sources_mixed_by_share_take_the_least_certain_queries_and_weigh_their_labels(tmp_path: Path) -> None:
    one = Segment({}, np.zeros(1, np.int64), np.zeros(1, np.float32), [{}], True, False, 0)
    first, second = SyntheticAnnotator(SyntheticConfig(), 0), SyntheticAnnotator(SyntheticConfig(), 1)
    router = Router(LabelStore.in_run(tmp_path), "mix", [Route("judge", first, weight=0.5),
                                                         Route("expert", second, weight=2.0, share=0.2)])
    queries = [Query(one, one, priority=float(p)) for p in range(10)]
    routed = router.split(queries)
    assert [q.priority for q in routed["expert"]] == [9.0, 8.0]
    assert sorted(q.priority for q in routed["judge"]) == [float(p) for p in range(8)]
    router.ask(queries)
    weights = sorted(answer.weight for answer in router.collect())
    assert weights == [0.5] * 8 + [2.0] * 2
    router.close()


def test_shares_hold_over_the_run_when_rounds_are_small(tmp_path: Path) -> None:
    one = Segment({}, np.zeros(1, np.int64), np.zeros(1, np.float32), [{}], True, False, 0)
    router = Router(LabelStore.in_run(tmp_path), "mix", [Route("judge", SyntheticAnnotator(SyntheticConfig(), 0)),
                                                         Route("person", SyntheticAnnotator(SyntheticConfig(), 1),
                                                               share=0.1)])
    taken = sum(len(router.split([Query(one, one)] * 3)["person"]) for _ in range(100))
    assert taken == 30, "10% of 300 queries asked 3 at a time, not round(0.3) = 0 each time"
    router.close()


def test_the_reward_network_can_name_its_own_encoders_and_fuser(make_registry: Any, tmp_path: Path) -> None:
    import gymnasium as gym
    from polyfuse.config import validate_pipeline
    from polyfuse.envs.digits_vqa import observation_space
    from polyfuse.network import NetworkFactory

    registry = make_registry()
    if "sbert" not in registry.names("encoders") or "dqn" not in registry.names("optimizers"):
        pytest.skip("the pipeline reads questions with polyfuse-sbert and trains with polyfuse-dqn")
    config = validate_pipeline({
        "env": {"id": "polyfuse/DigitsVQA-v0"}, "optimizer": "dqn",
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": {"name": "gated", "params": {"hidden_dim": 16}},
        "reward": {"name": "preference-model", "params": {
            "modalities": {"image": {"encoder": "flatten"}, "question": {"encoder": "sbert"}},
            "fuser": {"name": "concat", "params": {"output_dim": 8}}, "ensemble_size": 2}},
    }, registry)
    factory = NetworkFactory(config, observation_space(), registry)
    policy = factory()
    reward = registry.create("rewards", "preference-model", config.reward.params, context=RunContext(
        observation_space(), gym.spaces.Discrete(12), factory, 0, tmp_path, planned_updates=4, registry=registry))
    network = reward.members[0].network
    assert type(network.encoders["image"]).__name__ != type(policy.encoders["image"]).__name__
    assert network.fuser.output_dim == 8 and policy.fuser.output_dim == 16
    assert network.encoders["question"] is policy.encoders["question"], "one sentence-transformer for the run"
    reward.close()


def test_a_named_projects_labels_are_learnt_without_asking_more(helpers: Any, tmp_path: Path) -> None:
    """max_labels 0 with store.project: the labels a deployment collected (polyfuse serve --log-feedback, then
    polyfuse feedback answer) are what a continued run learns from; nothing new is asked."""
    from polyfuse_feedback.plugin import build_preference_model
    from polyfuse_feedback.store import NewQuery

    env = helpers.WordBandit(num_words=4)
    segments = bandit_segments(env, np.random.default_rng(5), 60)
    url = f"sqlite:///{tmp_path / 'served.sqlite'}"
    with LabelStore(url) as store:
        ids = store.add_segments("served-run", segments)
        queries = store.post_queries("served-run", [NewQuery(i, None, 2, 0.0, "synthetic") for i in ids])
        store.record_labels([(q, Label(rating=2 if s.env_rewards[0] > 0 else 1)) for q, s in zip(queries, segments)],
                            source="synthetic")

    def model(**store: Any) -> PreferenceModel:
        context = RunContext(env.observation_space, env.action_space,
                             lambda: helpers.make_network(env.observation_space), seed=0, run_dir=tmp_path / "run",
                             planned_updates=4)
        return build_preference_model(PreferenceModelConfig(max_labels=0, store={"url": url, **store}), context)

    served = model(project="served-run")
    try:
        served.update()
        assert len(served.labels) == 60 and served.router.asked() == 60  # the deployment's queries, no new one
        assert {r.rating for r in served.labels.rows} == {1, 2}
    finally:
        served.close()
    unnamed = model()  # no project named: max_labels 0 reads and asks nothing
    unnamed.update()
    assert unnamed.router is None and len(unnamed.labels) == 0


def _named_model(helpers: Any, tmp_path: Path, action_names: tuple[str, ...] | None, action_text: str = "text",
                 frozen_text: bool = False) -> tuple[PreferenceModel, Any]:
    env = helpers.WordBandit(num_words=4)
    context = RunContext(env.observation_space, env.action_space,
                         lambda: helpers.make_network(env.observation_space, frozen_text=frozen_text),
                         seed=0, run_dir=tmp_path, planned_updates=10, action_names=action_names)
    params = PreferenceModelConfig(schedule="constant", gradient_steps=30, heldout_fraction=0.25, max_labels=400,
                                   head="named", action_text=action_text)
    router = Router(LabelStore.in_run(tmp_path), "test", [Route("synthetic", SyntheticAnnotator(SyntheticConfig(), 1))])
    return PreferenceModel(params, context, router), env


def test_the_named_head_scores_actions_through_their_names_and_learns(helpers: Any, tmp_path: Path) -> None:
    model, env = _named_model(helpers, tmp_path, ("left", "right", "up", "down"))
    assert model.members[0]._name_embeddings().shape[0] == 4
    rng = np.random.default_rng(0)
    model.observe(bandit_segments(env, rng, 400))
    for _ in range(10):
        model.update()
    assert pairwise_accuracy(model, bandit_segments(env, rng, 200)) > 0.8


def test_the_named_head_needs_named_actions_and_a_text_observation(helpers: Any, tmp_path: Path) -> None:
    with pytest.raises(PolyfuseError, match="name its 4 actions"):
        _named_model(helpers, tmp_path / "a", None)
    with pytest.raises(PolyfuseError, match="'vector' is not one"):
        _named_model(helpers, tmp_path / "b", ("left", "right", "up", "down"), action_text="vector")
    with pytest.raises(ValidationError, match="go together"):
        PreferenceModelConfig(head="named")
    with pytest.raises(ValidationError, match="go together"):
        PreferenceModelConfig(action_text="question")


def test_a_frozen_text_encoder_embeds_the_names_once(helpers: Any, tmp_path: Path) -> None:
    model, _ = _named_model(helpers, tmp_path, ("left", "right", "up", "down"), frozen_text=True)
    member = model.members[0]
    first = member._name_embeddings()
    assert member._name_embeddings() is first and not first.requires_grad


def test_the_named_head_reads_the_names(helpers: Any, tmp_path: Path) -> None:
    model, env = _named_model(helpers, tmp_path, ("left", "right", "up", "down"), frozen_text=True)
    member = model.members[0]
    observations = bandit_segments(env, np.random.default_rng(0), 8)
    batch = {"vector": np.concatenate([s.observations["vector"] for s in observations]),
             "text": tuple(s.observations["text"][0] for s in observations)}
    with torch.no_grad():
        rewards = member.action_rewards(batch)
        member.action_names, member._frozen_names = member.action_names[::-1], None
        reversed_rewards = member.action_rewards(batch)
    torch.testing.assert_close(reversed_rewards, rewards.flip(1))  # the bias is still zero: names alone decide


def test_the_named_head_needs_a_modality_that_reads_the_text(helpers: Any, tmp_path: Path) -> None:
    env = helpers.WordBandit(num_words=4)
    with pytest.raises(PolyfuseError, match="no modality of the reward network reads 'missing'"):
        Member(helpers.make_network(env.observation_space), 4, [8], "named", (), ("a", "b", "c", "d"), "missing")
