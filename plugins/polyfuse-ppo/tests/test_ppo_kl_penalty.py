"""The KL penalty towards a frozen reference policy (RLHF-style fine-tuning)."""

from __future__ import annotations

from typing import Any

import torch
from polyfuse.rl.distributions import kl_divergence
from polyfuse_ppo.plugin import PPOConfig
from polyfuse_ppo.ppo import PPO
from torch.nn import functional as F

SMALL = dict(n_steps=8, n_epochs=4, batch_size=16, learning_rate=3e-3, ent_coef=0.0, hidden_sizes=[16])


def probe(words: tuple[str, ...] = ("go left", "go right")) -> dict[str, Any]:
    """A fixed batch of bandit observations to compare policies on."""
    texts = words * 8
    return {"vector": torch.linspace(-1, 1, 4 * len(texts)).reshape(len(texts), 4).numpy(), "text": texts}


def test_without_kl_coef_no_reference_is_built(make_pipeline: Any) -> None:
    ppo = PPO(PPOConfig(**SMALL))
    ppo.setup(make_pipeline())
    metrics = ppo.iterate()
    assert ppo.reference is None
    assert "kl_to_reference" not in metrics
    assert ppo.state_dict()["reference"] is None


def test_reference_is_the_policy_at_the_first_iterate_after_warm_start(make_pipeline: Any) -> None:
    ppo = PPO(PPOConfig(**SMALL, kl_coef=0.1))
    ppo.setup(make_pipeline())
    assert ppo.reference is None  # not yet: a warm start may still change the policy
    observations = probe()
    initial = ppo.action_logits(observations).detach()

    # Supervised warm start, as the trainer's behaviour cloning does it (a few steps towards always answering 1).
    adam = torch.optim.Adam(ppo.trainable_parameters(), lr=0.01)
    for _ in range(3):
        loss = F.cross_entropy(ppo.action_logits(observations), torch.ones(len(observations["text"]), dtype=torch.long))
        adam.zero_grad()
        loss.backward()
        adam.step()
    warm = ppo.action_logits(observations).detach()
    assert not torch.allclose(initial, warm)

    first = ppo.iterate()
    assert ppo.reference is not None
    torch.testing.assert_close(ppo.reference(observations), warm)
    assert all(not p.requires_grad for p in ppo.reference.parameters())
    assert first["kl_to_reference"] >= 0
    for _ in range(3):
        metrics = ppo.iterate()
    torch.testing.assert_close(ppo.reference(observations), warm)  # frozen: RL does not move it
    assert metrics["kl_to_reference"] > 1e-3  # the policy did move


def kl_from_start_after_training(make_pipeline: Any, kl_coef: float, iterations: int = 8) -> tuple[float, float]:
    ppo = PPO(PPOConfig(**SMALL, kl_coef=kl_coef))
    ppo.setup(make_pipeline(num_envs=8, seed=1))
    observations = probe()
    start = ppo.action_logits(observations).detach()
    metrics = [ppo.iterate() for _ in range(iterations)]
    end = ppo.action_logits(observations).detach()
    drift = kl_divergence(end, start, (2,)).mean().item()
    success = sum(e.success for e in ppo.envs.pop_episodes()[-64:]) / 64
    if kl_coef > 0:
        assert abs(metrics[-1]["kl_to_reference"] - drift) < 0.5  # what it reports is that drift, on rollouts
    return drift, success


def test_a_policy_that_drifts_from_the_reference_is_penalised(make_pipeline: Any) -> None:
    free_drift, free_success = kl_from_start_after_training(make_pipeline, kl_coef=0.0)
    tied_drift, _ = kl_from_start_after_training(make_pipeline, kl_coef=3.0)
    assert free_success > 0.8 and free_drift > 0.2  # without the penalty the policy leaves its start behind
    assert tied_drift < 0.3 * free_drift


def test_reference_shares_frozen_encoders_instead_of_copying_them(make_pipeline: Any) -> None:
    ppo = PPO(PPOConfig(**SMALL, kl_coef=0.1))
    ppo.setup(make_pipeline(frozen_text=True))
    ppo.iterate()
    policy_trunk, reference_trunk = ppo.model.policy.trunk, ppo.reference.trunk
    assert reference_trunk.encoders["text"] is policy_trunk.encoders["text"]
    assert reference_trunk.encoders["vector"] is not policy_trunk.encoders["vector"]
    assert policy_trunk.encoders["vector"].layer.weight.requires_grad  # freezing the copy left the policy alone
