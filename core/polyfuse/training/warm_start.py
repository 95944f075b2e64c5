"""Supervised warm start: behaviour cloning on the environment's expert labels before RL.

An environment that knows the right action reports it as
``info["expert_action"]`` (DigitsVQA's answer, the BabyAI bot's move). The
trainer follows the expert for a number of episodes, then fits the policy's
action logits to the labels with cross-entropy, so RL starts from a policy
that already mostly works instead of from chance. A policy with memory
(``optimizer.params.memory``) is cloned on whole episodes, so it learns to
act on what it saw earlier, as the expert does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional

from polyfuse.config import EnvConfig, WarmStartConfig
from polyfuse.envs import make_vector_env
from polyfuse.errors import PolyfuseError
from polyfuse.observations import Batch, concatenate, copy_batch, take
from polyfuse.training.api import RLOptimizer


@dataclass
class Demonstrations:
    """The expert's labelled steps: observations (a batch), its actions, and each episode's rows in step order.

    The episodes still running when collection stopped are kept as the prefixes they are.
    """

    batch: Batch
    labels: np.ndarray
    episodes: list[np.ndarray]


def collect_demonstrations(env: EnvConfig, episodes: int, seed: int, max_samples: int | None = None) -> Demonstrations:
    """Follow the expert for ``episodes`` episodes (or until ``max_samples`` labelled states)."""
    envs = make_vector_env(env.id, env.kwargs, num_envs=env.num_envs, seed=seed, expert=True)
    try:
        observations, infos = envs.reset(seed=seed)
        batches: list[Batch] = []
        labels: list[np.ndarray] = []
        running: list[list[int]] = [[] for _ in range(env.num_envs)]
        ended: list[np.ndarray] = []
        samples = 0
        while len(ended) < episodes and (max_samples is None or samples < max_samples):
            actions = _expert_actions(infos, env.id)
            batches.append(copy_batch(observations))
            labels.append(actions)
            for index, rows in enumerate(running):
                rows.append(samples + index)
            samples += len(actions)
            observations, _, terminated, truncated, infos = envs.step(actions)
            for index in np.flatnonzero(terminated | truncated):
                ended.append(np.asarray(running[index]))
                running[index] = []
    finally:
        envs.close()
    ended += [np.asarray(rows) for rows in running if rows]
    return Demonstrations(concatenate(batches), np.concatenate(labels), ended)


def _expert_actions(infos: Mapping[str, Any], env_id: str) -> np.ndarray:
    if "expert_action" not in infos or not np.all(infos.get("_expert_action", True)):
        raise PolyfuseError(
            f"{env_id} does not label its steps with info['expert_action'], so there is nothing to warm "
            "start from; remove trainer.warm_start (DigitsVQA and BabyAI levels have labels)"
        )
    return np.asarray(infos["expert_action"], dtype=np.int64)


def behaviour_cloning(
    optimizer: RLOptimizer, demonstrations: Demonstrations, config: WarmStartConfig, seed: int
) -> dict[str, float]:
    """Cross-entropy of the policy's logits against the expert's actions, over ``optimizer.trainable_parameters()``.

    Minibatches of ``batch_size`` labelled steps (``action_logits``); for a
    policy with memory, of whole episodes holding about as many
    (``sequence_logits``). Returns the last epoch's mean loss and accuracy on the demonstrations.
    """
    adam = torch.optim.Adam(optimizer.trainable_parameters(), lr=config.learning_rate)
    targets = torch.as_tensor(demonstrations.labels)
    order_rng = np.random.default_rng(seed)
    batches = _episode_batches if optimizer.memory_size else _step_batches
    loss_sum, correct = 0.0, 0
    for _ in range(config.epochs):
        loss_sum, correct = 0.0, 0
        for logits, rows in batches(optimizer, demonstrations, config.batch_size, order_rng):
            loss = functional.cross_entropy(logits, targets[rows])
            adam.zero_grad()
            loss.backward()
            adam.step()
            loss_sum += loss.item() * len(rows)
            correct += int((logits.argmax(dim=-1) == targets[rows]).sum())
    total = len(demonstrations.labels)
    return {"warm_start/loss": loss_sum / total, "warm_start/accuracy": correct / total, "warm_start/samples": total}


def _step_batches(
    optimizer: RLOptimizer, demonstrations: Demonstrations, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled labelled steps: ``(logits, rows)`` per minibatch."""
    order = rng.permutation(len(demonstrations.labels))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        yield optimizer.action_logits(take(demonstrations.batch, rows)), torch.as_tensor(rows)


SIMILAR_LENGTHS = 32
"""Minibatches of episodes are formed within windows of this many minibatches' worth, sorted by length, so
that little of each unrolled block is padding."""


def _episode_batches(
    optimizer: RLOptimizer, demonstrations: Demonstrations, batch_size: int, rng: np.random.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled minibatches of whole episodes unrolled side by side: ``(logits, rows)`` of their real steps.

    Shorter episodes are padded to the longest by repeating their last step;
    the memory is causal, so padding after an episode never changes its
    logits, and its rows are left out.
    """
    episodes = demonstrations.episodes
    lengths = np.array([len(episode) for episode in episodes])
    per_batch = max(1, round(batch_size / lengths.mean()))
    order = rng.permutation(len(episodes))
    window = per_batch * SIMILAR_LENGTHS
    groups = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        groups += [chunk[i : i + per_batch] for i in range(0, len(chunk), per_batch)]
    for group in (groups[i] for i in rng.permutation(len(groups))):
        steps = int(lengths[group].max())
        block = np.stack([np.pad(episodes[j], (0, steps - lengths[j]), mode="edge") for j in group], axis=1)
        starts = torch.zeros(block.shape, dtype=torch.bool)
        starts[0] = True
        logits = optimizer.sequence_logits(take(demonstrations.batch, block.reshape(-1)), starts)
        real = torch.from_numpy((np.arange(steps)[:, None] < lengths[group][None, :]).reshape(-1))
        yield logits[real], torch.from_numpy(block.reshape(-1))[real]
