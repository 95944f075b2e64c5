"""polyfuse: multimodal reinforcement learning from human and AI feedback.

Importing this package is cheap: torch and the plugins' heavy dependencies are
imported only when a component is built.
"""

from __future__ import annotations

from polyfuse.components import Component, ComponentConfig, Kind
from polyfuse.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["Component", "ComponentConfig", "Kind", "__version__", "hookimpl"]
