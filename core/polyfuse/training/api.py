"""What the trainer hands an RL optimizer plugin, and what it expects back.

The trainer owns the run (seeding, budget, progress, evaluation, metrics,
checkpoints, resume); an optimizer owns the learning (networks, rollouts,
replay or datasets, updates). They meet here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

import numpy as np

from polyfuse.rewards import RewardSource
from polyfuse.training.vector_env import TrackedVectorEnv

if TYPE_CHECKING:
    import torch

    from polyfuse.datasets import Dataset
    from polyfuse.network import MultimodalNetwork

BudgetUnit = Literal["env_steps", "gradient_steps", "samples"]
BUDGET_UNITS: tuple[str, ...] = get_args(BudgetUnit)


@dataclass(frozen=True)
class Progress:
    """How far an optimizer has come, in each unit a budget may be expressed in.

    ``env_steps``: environment steps taken (summed over the vector envs);
    ``gradient_steps``: parameter updates; ``samples``: training samples
    consumed by updates (transitions, rollout samples, dataset items, each
    counted once per update that used it).
    """

    env_steps: int = 0
    gradient_steps: int = 0
    samples: int = 0

    def of(self, unit: BudgetUnit) -> int:
        return int(getattr(self, unit))

    def as_dict(self) -> dict[str, int]:
        return {"env_steps": self.env_steps, "gradient_steps": self.gradient_steps, "samples": self.samples}


@dataclass(frozen=True)
class Budget:
    """The run's budget: ``total`` of ``unit`` (``trainer.total_steps`` and ``trainer.budget_unit``)."""

    total: int
    unit: BudgetUnit = "env_steps"

    def __post_init__(self) -> None:
        if self.total <= 0:
            raise ValueError(f"a budget must be positive, got {self.total}")
        if self.unit not in BUDGET_UNITS:
            raise ValueError(f"budget unit must be one of {BUDGET_UNITS}, got {self.unit!r}")

    def fraction(self, progress: Progress) -> float:
        """The share of the budget spent, in [0, 1] (schedules anneal over it)."""
        return min(1.0, progress.of(self.unit) / self.total)


@dataclass
class Pipeline:
    """Everything an optimizer needs to train.

    ``envs`` is ``None`` when the pipeline has no environment (the optimizer
    learns from ``dataset``); ``dataset`` is ``None`` unless the config names
    one. ``reward`` scores transitions where the optimizer consumes them.
    ``make_network()`` builds the encoders and fuser (frozen encoders shared
    between all networks of the run).
    """

    make_network: Callable[[], MultimodalNetwork]
    seed: int
    observation_space: Any
    action_space: Any
    envs: TrackedVectorEnv | None = None
    reward: RewardSource | None = None
    dataset: Dataset | None = None

    @classmethod
    def for_envs(
        cls, envs: TrackedVectorEnv, make_network: Callable[[], MultimodalNetwork], seed: int,
        reward: RewardSource | None = None, dataset: Dataset | None = None,
    ) -> Pipeline:
        """A pipeline over ``envs`` (the environment's own reward unless ``reward`` is given)."""
        from polyfuse.rewards import EnvReward

        return cls(make_network, seed, envs.single_observation_space, envs.single_action_space, envs,
                   reward if reward is not None else EnvReward(), dataset)


class RLOptimizer:
    """Base class of RL optimizer plugins (DQN, PPO, DPO, …).

    The trainer calls ``set_budget`` and ``setup`` once, then ``iterate``
    until ``progress`` reaches the budget, evaluating with ``act`` and
    checkpointing with ``state_dict`` in between. Each ``iterate`` must
    advance ``progress`` in the budget's unit; one that does not is stopped
    with an error rather than looping forever. ``action_logits`` serves
    supervised warm start (behaviour cloning), which the trainer runs before
    the first ``iterate``.

    ``learns_from`` says what ``setup`` needs: ``"env"`` (``pipeline.envs``)
    or ``"dataset"`` (``pipeline.dataset``; an environment, when configured,
    serves evaluation only).
    """

    learns_from: ClassVar[Literal["env", "dataset"]] = "env"

    def set_budget(self, budget: Budget) -> None:
        """The run's budget, told before ``setup`` and again on resume (a longer run may change it).

        For schedules (learning-rate annealing, exploration); optimizers without one ignore it.
        """

    def setup(self, pipeline: Pipeline) -> None:
        """Build networks, optimizers and buffers; reset the environments."""
        raise NotImplementedError

    def iterate(self) -> dict[str, float]:
        """One unit of work: a rollout and its epochs, some env steps and gradient steps, a few batches.

        Returns scalar training metrics (losses, entropy, epsilon, …).
        """
        raise NotImplementedError

    @property
    def progress(self) -> Progress:
        """Env steps, gradient steps and samples so far (restored by ``load_state_dict``)."""
        raise NotImplementedError

    def act(self, observations: Mapping[str, Any], deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of observations (evaluation and deployment)."""
        raise NotImplementedError

    def action_logits(self, observations: Mapping[str, Any]) -> torch.Tensor:
        """Unnormalised action preferences, differentiable w.r.t. ``trainable_parameters``."""
        raise NotImplementedError

    @property
    def memory_size(self) -> int:
        """The size of the policy's memory of the episode so far; 0 (the default) for a memoryless policy.

        A policy with memory acts on sequences: ``act`` continues the episodes
        :meth:`reset_memory` started, and warm start clones whole episodes
        through :meth:`sequence_logits` instead of :meth:`action_logits`.
        """
        return 0

    def reset_memory(self, batch: int) -> None:
        """Forget the episodes ``act`` was continuing: the next call starts ``batch`` new ones (evaluation rounds)."""

    def step_logits(self, observations: Mapping[str, Any], memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, n)`` of one step of ``B`` episodes, each from its row of ``memory`` ``(B, memory_size)``
        (zeros: a new episode), and the memories after the step. The caller keeps the memories, so one
        policy can continue any number of episodes (serving, export). Only a policy with memory has it."""
        raise NotImplementedError

    def sequence_logits(self, observations: Mapping[str, Any], starts: torch.Tensor) -> torch.Tensor:
        """Logits ``(L * B, n)`` of ``B`` episodes of ``L`` steps, rows time-major, each from an empty memory;
        ``starts`` ``(L, B)`` marks where episodes begin. Only a policy with memory (``memory_size > 0``) has it."""
        raise NotImplementedError

    def action_probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """The distribution ``act(deterministic=False)`` samples, from :meth:`action_logits`' output (serving).

        A softmax for a policy's logits; a value method overrides it with its behaviour policy (DQN:
        epsilon-greedy), since a softmax over its values is a policy it never trained.
        """
        import torch

        return torch.softmax(logits, dim=-1)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters warm start may update."""
        raise NotImplementedError

    def load_policy(self, weights: Mapping[str, torch.Tensor]) -> None:
        """Start from a saved policy (after ``setup``): a :class:`~polyfuse.rl.heads.PolicyNetwork`'s
        ``trunk.*`` and ``head.*`` weights, read by :func:`polyfuse.training.continuation.read_policy_weights`.

        Only the policy: the optimizer's own state (Adam, counters, critic, buffers) stays fresh, a new learning
        phase; networks derived from the policy (a KL reference) are taken from it at the first ``iterate``.
        Optimizers without such a policy refuse.
        """
        from polyfuse.errors import PolyfuseError

        name = getattr(self, "name", type(self).__name__)
        raise PolyfuseError(f"optimizer {name!r} cannot start from a saved policy (trainer.continue_from): it has "
                            "no policy network to load; continue with ppo, a2c or dpo")

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: a nested dict of tensors, numpy arrays and JSON values."""
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (after ``setup``)."""
        raise NotImplementedError
