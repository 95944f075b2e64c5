"""Env runners in other processes than the learner's: ``env.vectorization: pipelined`` (worker processes of
this machine) and ``env.vectorization: ray`` (Ray actors, :mod:`polyfuse.sampling.ray_sampler`, imported on use)."""

from polyfuse.config import PipelineConfig
from polyfuse.sampling.pipelined import PipelinedSampler
from polyfuse.sampling.sampler import Sampler, default_workers


def make_sampler(config: PipelineConfig, seed: int) -> Sampler:
    """The sampler ``config.env.vectorization`` (pipelined or ray) names, its runners started."""
    assert config.env is not None and config.env.vectorization in ("pipelined", "ray")
    if config.env.vectorization == "ray":
        from polyfuse.sampling.ray_sampler import RaySampler

        return RaySampler(config, seed)
    return PipelinedSampler(config, seed)


__all__ = ["PipelinedSampler", "Sampler", "default_workers", "make_sampler"]
