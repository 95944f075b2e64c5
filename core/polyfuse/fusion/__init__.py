"""Fusion modules: combine per-modality features (and, for spatial fusers, feature maps) into one vector."""

from polyfuse.fusion.base import FeatureMaps, Fuser, MapShape, PresenceMask

__all__ = ["FeatureMaps", "Fuser", "MapShape", "PresenceMask"]
