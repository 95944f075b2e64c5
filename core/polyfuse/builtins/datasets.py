"""The core's datasets, registered through the same hook as any plugin's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from polyfuse import ComponentConfig, hookimpl
from polyfuse.declarations import dataset_space


class PreferencesConfig(ComponentConfig):
    path: Path = Field(description="A preferences folder polyfuse wrote, or a JSONL file of pairs with inline "
                                   "observations (see polyfuse.datasets.preferences)")


def _folder_space(config: PreferencesConfig) -> Any:
    """A preferences folder's observation space, from its metadata alone (checked by `polyfuse validate`)."""
    import json

    from polyfuse.datasets.preferences import META_FILE
    from polyfuse.datasets.spaces import space_from_json

    meta = Path(config.path) / META_FILE
    if not meta.is_file():
        return None
    return space_from_json(json.loads(meta.read_text(encoding="utf-8"))["observation_space"])


@dataset_space(_folder_space)
def build_preferences(config: PreferencesConfig, observation_space: Any = None, action_space: Any = None) -> Any:
    from polyfuse.datasets import read_preferences

    return read_preferences(config.path, observation_space, action_space)


@hookimpl
def register_datasets(register):  # type: ignore[no-untyped-def]
    register("preferences", build_preferences, config=PreferencesConfig,
             description="Preference pairs over discrete actions (observation, chosen, rejected)")
