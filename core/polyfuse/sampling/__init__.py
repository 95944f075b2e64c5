"""Sampling environments in other processes than the learner's (``env.vectorization: pipelined``)."""

from polyfuse.sampling.sampler import PipelinedSampler, default_workers

__all__ = ["PipelinedSampler", "default_workers"]
