"""Training: the trainer loop and the interface RL optimizer plugins implement."""

from polyfuse.training.api import Budget, Pipeline, Progress, RLOptimizer
from polyfuse.training.vector_env import EpisodeRecord, TrackedVectorEnv

__all__ = ["Budget", "EpisodeRecord", "Pipeline", "Progress", "RLOptimizer", "TrackedVectorEnv"]
