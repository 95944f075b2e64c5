"""Network helpers optimizers share: twins that share frozen encoders, their state, fast mode switches."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from polyfuse.encoders.vector import VectorEncoder
from polyfuse.feature_cache import FeatureCache
from polyfuse.fusion.concat import ConcatFuser
from polyfuse.network import ModeSwitch, MultimodalNetwork, frozen_twin, load_own_state, own_state

torch.set_num_threads(1)


class FrozenEncoder(VectorEncoder):
    """A frozen vector MLP that names its identity, so the feature cache wraps it."""

    def identity(self) -> str:
        return f"frozen-test:{id(self)}"


class Policy(nn.Module):
    def __init__(self, trunk: MultimodalNetwork) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = nn.Linear(trunk.output_dim, 2)

    def forward(self, observations):
        return self.head(self.trunk(observations))


def make_policy() -> Policy:
    torch.manual_seed(0)
    frozen = FrozenEncoder((3,), [4], 5).requires_grad_(False)
    trained = VectorEncoder((2,), [], 3)
    trunk = MultimodalNetwork(
        {"text_like": frozen, "state": trained}, {"text_like": "a", "state": "b"},
        ConcatFuser({"text_like": 5, "state": 3}), feature_store=FeatureCache(100),
    )
    return Policy(trunk)


def observations(n: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"a": rng.normal(size=(n, 3)).astype(np.float32), "b": rng.normal(size=(n, 2)).astype(np.float32)}


def test_twin_shares_frozen_encoders_and_copies_the_rest() -> None:
    policy = make_policy()
    twin, prefixes = frozen_twin(policy)
    assert twin.trunk.encoders["text_like"] is policy.trunk.encoders["text_like"]
    assert twin.trunk.cached_encoders["text_like"] is policy.trunk.cached_encoders["text_like"], "one cache"
    assert twin.trunk.encoders["state"] is not policy.trunk.encoders["state"]
    assert prefixes == ["trunk.encoders.text_like."]
    assert not any(p.requires_grad for p in twin.parameters())
    assert all(p.requires_grad for p in policy.head.parameters()), "the original keeps training"
    torch.testing.assert_close(twin(observations()), policy(observations()))
    with torch.no_grad():
        policy.head.weight.add_(1.0)
    assert not torch.allclose(twin(observations()), policy(observations())), "the head is a copy"


def test_own_state_leaves_out_shared_encoders_and_loads_back() -> None:
    policy = make_policy()
    twin, prefixes = frozen_twin(policy)
    state = own_state(twin, prefixes)
    assert state and not any(key.startswith("trunk.encoders.text_like.") for key in state)
    assert "trunk.encoders.state.mlp.0.weight" in state
    fresh, fresh_prefixes = frozen_twin(make_policy())
    with torch.no_grad():
        fresh.head.weight.zero_()
    load_own_state(fresh, state, fresh_prefixes)
    torch.testing.assert_close(fresh.head.weight, twin.head.weight)
    with pytest.raises(RuntimeError, match="missing"):
        load_own_state(fresh, {k: v for k, v in state.items() if not k.startswith("head.")}, fresh_prefixes)


class KeepsInnerInEval(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Dropout(0.5)
        self.calls: list[bool] = []

    def train(self, mode: bool = True) -> KeepsInnerInEval:
        self.calls.append(mode)
        self.training = mode
        self.inner.eval()
        return self


def test_mode_switch_matches_module_train() -> None:
    tree = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(0.1), KeepsInnerInEval()), nn.BatchNorm1d(2))
    switch = ModeSwitch(tree)
    for mode in (False, True, False, True):
        reference = copy.deepcopy(tree).train(mode)
        switch(mode)
        assert [m.training for m in tree.modules()] == [m.training for m in reference.modules()]
    assert tree[1][1].calls == [False, True, False, True], "custom train() methods are still called"
    assert not tree[1][1].inner.training



def test_bounds_that_mean_unbounded_are_not_rescaled() -> None:
    """CartPole's Box says float32's maximum for "no bound": dividing by it would zero the input."""
    huge = np.finfo(np.float32).max
    encoder = VectorEncoder((3,), [], None, low=np.array([-huge, -np.inf, 0.0]), high=np.array([huge, np.inf, 2.0]))
    out = encoder(torch.tensor([[0.5, -3.0, 2.0]]))
    assert torch.allclose(out, torch.tensor([[0.5, -3.0, 1.0]]))


def test_a_variant_builds_other_registry_names_and_shares_frozen_encoders_configured_alike() -> None:
    """A reward model's own network: another fuser and encoders; frozen encoders configured the same are shared."""
    from gymnasium import spaces

    from polyfuse.config import PipelineConfig
    from polyfuse.network import NetworkFactory

    space = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 1), np.uint8), "state": spaces.Box(-1, 1, (3,))})
    config = PipelineConfig.model_validate({
        "env": {"id": "polyfuse/DigitsVQA-v0"}, "optimizer": "any",
        "modalities": {"image": {"encoder": "flatten"}, "state": {"encoder": "vector"}}, "fuser": "concat"})
    factory = NetworkFactory(config, space)
    policy = factory()
    variant = factory.variant(fuser={"name": "gated", "params": {"hidden_dim": 8}},
                              modalities={"image": {"encoder": "flatten"}, "state": {"encoder": "flatten"}})
    reward = variant()
    assert type(reward.fuser).__name__ != type(policy.fuser).__name__
    assert reward.encoders["image"] is policy.encoders["image"], "the same frozen encoder, built once"
    assert reward.encoders["state"] is not policy.encoders["state"]
    assert factory.networks == [policy, reward], "the run sees every network (checkpoints, cache counts)"
    unscaled = factory.variant(modalities={"image": {"encoder": {"name": "flatten", "params": {"rescale": False}}},
                                           "state": {"encoder": "vector"}})()
    assert unscaled.encoders["image"] is not policy.encoders["image"], "other params: another encoder"
