"""Training: the trainer loop and the interface RL optimizer plugins implement."""

from polyfuse.training.api import EpisodeRecord, Pipeline, RLOptimizer, TrackedVectorEnv

__all__ = ["EpisodeRecord", "Pipeline", "RLOptimizer", "TrackedVectorEnv"]
