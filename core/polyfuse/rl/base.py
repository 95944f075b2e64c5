"""What every RL optimizer does the same way: config, budget, seeds, progress, checkpoints.

:class:`Algorithm` implements the bookkeeping half of
:class:`~polyfuse.training.RLOptimizer`; a subclass (directly, or through
:class:`~polyfuse.rl.on_policy.OnPolicyAlgorithm` or
:class:`~polyfuse.rl.off_policy.OffPolicyAlgorithm`) writes the learning half.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import gymnasium
import numpy as np
import torch

from polyfuse.components import ComponentConfig
from polyfuse.errors import PolyfuseError
from polyfuse.rewards import RewardBatch
from polyfuse.rl.rng import generator_state, set_generator_state
from polyfuse.training.api import Budget, Pipeline, Progress, RLOptimizer
from polyfuse.training.distributed import Ranks, average_gradients, broadcast_parameters, ranks

GeneratorKind = Literal["numpy", "torch"]


class Algorithm(RLOptimizer):
    """An RL optimizer's scaffolding.

    A subclass sets:

    - ``name``: its registry name, which errors name (``"dqn"``);
    - ``state_format``: the version of its :meth:`state_dict` layout, bumped
      when the layout changes incompatibly (a checkpoint of another format is
      refused with an error, not misread);
    - ``random_streams``: the generators it draws from, by name and kind
      (``{"explore": "numpy", "act": "torch"}``), built in ``setup`` as
      ``self.rng[name]`` from ``pipeline.seed`` and checkpointed here;

    and implements :meth:`_build` (networks, and ``self.adam``: a torch
    optimizer with one parameter group), :meth:`_iterate` (one unit of work),
    ``act``, ``action_logits`` and ``trainable_parameters``. It extends
    :meth:`_check_pipeline` with its own refusals, and :meth:`state_dict` and
    :meth:`load_state_dict` with its own entries (networks, buffers), calling
    ``super()`` first. :meth:`_start` runs before the first ``iterate``, after
    any warm start (target and reference networks copy the policy there).

    Progress: each gradient step goes through :meth:`_descend`, which clips
    gradients to ``config.max_grad_norm`` and counts ``gradient_steps`` and
    ``samples``; the subclass counts the environment steps it collects with
    :meth:`_count_env_steps`; ``iterations`` counts ``iterate`` calls.
    Rewards come from :meth:`_score`, which checks what the reward source
    returns.

    Data parallelism (``torchrun``, see :mod:`polyfuse.training.distributed`)
    needs nothing of a subclass: the networks start as rank 0's,
    :meth:`_descend` averages the gradients over the ranks, each rank draws
    its own random streams, and the counters count all ranks (each rank
    takes an equal share of every step). A decision taken on one rank's data
    (an early stop) must be agreed with
    :func:`~polyfuse.training.distributed.mean_over_ranks`.
    """

    name: ClassVar[str]
    state_format: ClassVar[int] = 1
    random_streams: ClassVar[Mapping[str, GeneratorKind]] = {}

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config
        self._budget: Budget | None = None
        self._pipeline: Pipeline | None = None
        self.rng: dict[str, Any] = {}
        self.adam: torch.optim.Optimizer | None = None
        self.env_steps = 0
        self.gradient_steps = 0
        self.samples = 0
        self.iterations = 0
        self._started = False
        self.ranks = Ranks()

    # --- budget and progress ----------------------------------------------------------------------

    def set_budget(self, budget: Budget) -> None:
        self._budget = budget

    @property
    def budget(self) -> Budget | None:
        """The run's budget, once :meth:`set_budget` has told it."""
        return self._budget

    def _require_budget(self, purpose: str, alternative: str) -> Budget:
        """The budget, or an error saying that ``purpose`` needs one and how else to do without."""
        if self._budget is None:
            raise PolyfuseError(
                f"{self.name}: {purpose} needs the run's budget, which the trainer gives through set_budget() "
                f"(trainer.total_steps); when driving {self.name} yourself, call set_budget(Budget(total, unit)) "
                f"before iterate(), or {alternative}"
            )
        return self._budget

    @property
    def progress(self) -> Progress:
        return Progress(self.env_steps, self.gradient_steps, self.samples)

    # --- set-up -----------------------------------------------------------------------------------

    def setup(self, pipeline: Pipeline) -> None:
        """Check the pipeline, derive the seeds, build (networks initialised from the seed alone).

        ``pipeline.seed`` is split into independent streams: the first seeds
        torch's global generator, forked for the duration of :meth:`_build`
        (so initialisation neither depends on nor disturbs it); the others
        seed ``self.rng``'s generators, in ``random_streams`` order (on
        ranks other than 0, from the seed and the rank: each rank samples
        its own actions and minibatches, while the networks start alike,
        then are made rank 0's to be sure).
        """
        self._check_pipeline(pipeline)
        self.ranks = ranks()
        network_seed, *stream_seeds = np.random.SeedSequence(pipeline.seed).spawn(1 + len(self.random_streams))
        self._seed_streams(stream_seeds if self.ranks.main else self._rank_streams(pipeline.seed, 0))
        self.env_steps = self.gradient_steps = self.samples = self.iterations = 0
        self._started = False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_integer(network_seed))
            self._build(pipeline)
        assert self.adam is not None
        broadcast_parameters(self.adam.param_groups[0]["params"])
        self._pipeline = pipeline

    def _seed_streams(self, seeds: list[np.random.SeedSequence]) -> None:
        self.rng = {name: _generator(kind, seed) for (name, kind), seed in zip(self.random_streams.items(), seeds)}

    def _rank_streams(self, seed: int, iterations: int) -> list[np.random.SeedSequence]:
        """This rank's own stream seeds, drawn anew on resume too (rank 0's checkpoint holds rank 0's streams)."""
        return np.random.SeedSequence([seed, self.ranks.rank, iterations]).spawn(len(self.random_streams))

    def _check_pipeline(self, pipeline: Pipeline) -> None:
        """Refuse a pipeline without what ``learns_from`` needs; subclasses add their own checks."""
        if self.learns_from == "dataset":
            if pipeline.dataset is None:
                raise PolyfuseError(
                    f"{self.name} learns from a dataset and this pipeline has none: name one in the config "
                    "(dataset: {name: ...})"
                )
            return
        if pipeline.envs is None:
            raise PolyfuseError(
                f"{self.name} learns from an environment and this pipeline has none: set env in the config "
                "(env: {id: ...})"
            )
        if pipeline.reward is None:
            raise PolyfuseError(
                f"{self.name} needs the pipeline's reward source and pipeline.reward is None: build the pipeline "
                "with Pipeline.for_envs (the environment's reward by default) or pass reward="
            )
        _check_same_step_autoreset(pipeline.envs, self.name)

    def _build(self, pipeline: Pipeline) -> None:
        """Build networks, ``self.adam`` and buffers (under a torch generator seeded from ``pipeline.seed``)."""
        raise NotImplementedError

    def _require_setup(self) -> None:
        if self._pipeline is None:
            raise RuntimeError(f"{self.name}: call setup(pipeline) first")

    @property
    def pipeline(self) -> Pipeline:
        self._require_setup()
        assert self._pipeline is not None
        return self._pipeline

    # --- learning ---------------------------------------------------------------------------------

    def iterate(self) -> dict[str, float]:
        self._require_setup()
        if not self._started:
            self._start()
            self._started = True
        metrics = self._iterate()
        self.iterations += 1
        return metrics

    def _start(self) -> None:
        """Called once, before the first ``iterate`` (after any warm start); not after a resume."""

    def _iterate(self) -> dict[str, float]:
        """One unit of work (see :meth:`RLOptimizer.iterate`); advances the progress counters."""
        raise NotImplementedError

    def _score(self, batch: RewardBatch) -> np.ndarray:
        """The pipeline's reward for each transition of ``batch``, checked: float32, shape ``(len(batch),)``."""
        reward = self.pipeline.reward
        assert reward is not None
        rewards = np.asarray(reward.score(batch), dtype=np.float32)
        if rewards.shape != (len(batch),):
            raise PolyfuseError(
                f"the reward source {type(reward).__name__} scored {len(batch)} transitions with an array of shape "
                f"{rewards.shape}; score() must return one reward per transition, shape ({len(batch)},)"
            )
        return rewards

    def _descend(self, loss: torch.Tensor, samples: int) -> None:
        """One Adam step on ``loss`` (gradients averaged over the ranks, then clipped to ``config.max_grad_norm``),
        learnt from ``samples`` samples (on each rank)."""
        assert self.adam is not None
        parameters = self.adam.param_groups[0]["params"]
        self.adam.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(parameters)
        torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        self.adam.step()
        self.gradient_steps += 1
        self.samples += int(samples) * self.ranks.size

    def _count_env_steps(self, steps: int) -> None:
        """Count ``steps`` environment steps taken on this rank (every rank takes as many)."""
        self.env_steps += int(steps) * self.ranks.size

    # --- checkpoints ------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Format, config, progress counters, generators and Adam; subclasses add their networks and buffers.

        Like ``torch.nn.Module.state_dict``, tensors and arrays may share
        memory with the live optimizer: save or copy them before training on.
        """
        self._require_setup()
        assert self.adam is not None
        return {
            "format": self.state_format,
            "config": self.config.model_dump(mode="json"),
            "counters": {
                "env_steps": self.env_steps,
                "gradient_steps": self.gradient_steps,
                "samples": self.samples,
                "iterations": self.iterations,
            },
            "rng": {name: generator_state(generator) for name, generator in self.rng.items()},
            "optimizer": self.adam.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` after :meth:`setup` (a state of another format is refused)."""
        self._require_setup()
        if state.get("format") != self.state_format:
            raise PolyfuseError(
                f"this {self.name} state has format {state.get('format')!r}; the installed {self.name} plugin "
                f"reads format {self.state_format}. Start a new run (another output_dir), or resume with the "
                f"version of the {self.name} plugin that saved it"
            )
        assert self.adam is not None
        counters = state["counters"]
        self.env_steps = int(counters["env_steps"])
        self.gradient_steps = int(counters["gradient_steps"])
        self.samples = int(counters["samples"])
        self.iterations = int(counters["iterations"])
        for name, generator in self.rng.items():
            set_generator_state(generator, state["rng"][name])
        if not self.ranks.main:
            self._seed_streams(self._rank_streams(self.pipeline.seed, self.iterations))
        self.adam.load_state_dict(state["optimizer"])
        self._started = True


def _integer(seed: np.random.SeedSequence) -> int:
    return int(seed.generate_state(1)[0])


def _generator(kind: GeneratorKind, seed: np.random.SeedSequence) -> Any:
    if kind == "numpy":
        return np.random.default_rng(seed)
    return torch.Generator().manual_seed(_integer(seed))


def _check_same_step_autoreset(envs: Any, who: str) -> None:
    """Refuse vector envs that autoreset on the next step: their transitions would mix episodes silently."""
    metadata = getattr(getattr(envs, "envs", envs), "metadata", None) or {}
    mode = metadata.get("autoreset_mode")
    if mode is None:
        return
    value = getattr(mode, "value", mode)
    if value != gymnasium.vector.AutoresetMode.SAME_STEP.value:
        raise PolyfuseError(
            f"{who} needs vector envs with autoreset_mode=SAME_STEP (final observations in infos['final_obs']); "
            f"these use {value}"
        )
