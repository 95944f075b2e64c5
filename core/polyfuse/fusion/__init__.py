"""Fusion modules: combine per-modality features into one vector."""

from polyfuse.fusion.base import Fuser, PresenceMask

__all__ = ["Fuser", "PresenceMask"]
