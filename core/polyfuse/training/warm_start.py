"""Supervised warm start: behaviour cloning on the environment's expert labels before RL.

An environment that knows the right action reports it as
``info["expert_action"]`` (DigitsVQA's answer, the BabyAI bot's move). The
trainer follows the expert for a number of episodes, then fits the policy's
action logits to the labels with cross-entropy, so RL starts from a policy
that already mostly works instead of from chance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from polyfuse.config import EnvConfig, WarmStartConfig
from polyfuse.envs import make_vector_env
from polyfuse.errors import PolyfuseError
from polyfuse.observations import Batch, concatenate, copy_batch, take
from polyfuse.training.api import RLOptimizer



def collect_demonstrations(
    env: EnvConfig, episodes: int, seed: int, max_samples: int | None = None
) -> tuple[Batch, np.ndarray]:
    """Follow the expert for ``episodes`` episodes (or until ``max_samples`` labelled states).

    Returns the observations (a batch) and the expert's actions.
    """
    envs = make_vector_env(env.id, env.kwargs, num_envs=env.num_envs, seed=seed, expert=True)
    try:
        observations, infos = envs.reset(seed=seed)
        batches: list[Batch] = []
        labels: list[np.ndarray] = []
        finished = samples = 0
        while finished < episodes and (max_samples is None or samples < max_samples):
            actions = _expert_actions(infos, env.id)
            batches.append(copy_batch(observations))
            labels.append(actions)
            samples += len(actions)
            observations, _, terminated, truncated, infos = envs.step(actions)
            finished += int(np.sum(terminated | truncated))
    finally:
        envs.close()
    return concatenate(batches), np.concatenate(labels)


def _expert_actions(infos: Mapping[str, Any], env_id: str) -> np.ndarray:
    if "expert_action" not in infos or not np.all(infos.get("_expert_action", True)):
        raise PolyfuseError(
            f"{env_id} does not label its steps with info['expert_action'], so there is nothing to warm "
            "start from; remove trainer.warm_start (DigitsVQA and BabyAI levels have labels)"
        )
    return np.asarray(infos["expert_action"], dtype=np.int64)


def behaviour_cloning(
    optimizer: RLOptimizer, batch: Batch, labels: np.ndarray, config: WarmStartConfig, seed: int
) -> dict[str, float]:
    """Cross-entropy on ``optimizer.action_logits`` over ``optimizer.trainable_parameters()``.

    Returns the last epoch's mean loss and accuracy on the demonstrations.
    """
    parameters = optimizer.trainable_parameters()
    adam = torch.optim.Adam(parameters, lr=config.learning_rate)
    targets = torch.as_tensor(labels)
    order_rng = np.random.default_rng(seed)
    loss_sum, correct = 0.0, 0
    for _ in range(config.epochs):
        loss_sum, correct = 0.0, 0
        order = order_rng.permutation(len(labels))
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            logits = optimizer.action_logits(take(batch, index))
            loss = functional.cross_entropy(logits, targets[index])
            adam.zero_grad()
            loss.backward()
            adam.step()
            loss_sum += loss.item() * len(index)
            correct += int((logits.argmax(dim=-1) == targets[index]).sum())
    return {
        "warm_start/loss": loss_sum / len(labels),
        "warm_start/accuracy": correct / len(labels),
        "warm_start/samples": len(labels),
    }
