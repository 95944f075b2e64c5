"""The core's datasets, registered through the same hook as any plugin's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from polyfuse import ComponentConfig, hookimpl


class PreferencesConfig(ComponentConfig):
    path: Path = Field(description="A preferences folder polyfuse wrote, or a JSONL file of pairs with inline "
                                   "observations (see polyfuse.datasets.preferences)")


def build_preferences(config: PreferencesConfig, observation_space: Any = None, action_space: Any = None) -> Any:
    from polyfuse.datasets import read_preferences

    return read_preferences(config.path, observation_space, action_space)


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register("preferences", build_preferences, config=PreferencesConfig,
             description="Preference pairs over discrete actions (observation, chosen, rejected)")
