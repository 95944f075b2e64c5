"""A reward model saved on its own, to train it once and use it by name later (a fixed reward, a judge, a warm start).

``reward_model.safetensors`` holds the ensemble's weights without frozen
encoders (a sentence-transformer is rebuilt from its package, not copied);
``reward_model.json`` holds the pipeline (env, modalities, fuser, the reward's
params) the weights belong to and the normalisation. A run directory whose
reward is ``preference-model`` works too: its latest checkpoint is read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from polyfuse.errors import PolyfuseError
from polyfuse.network import load_own_state, own_state

if TYPE_CHECKING:
    from polyfuse_feedback.model import PreferenceModel

WEIGHTS, DESCRIPTION = "reward_model.safetensors", "reward_model.json"


@dataclass(frozen=True)
class SavedReward:
    """What a saved reward model holds: its pipeline config (a dict), weights and score scale."""

    pipeline: dict[str, Any]
    members: Mapping[str, torch.Tensor]
    std: float


def frozen_prefixes(members: torch.nn.Module) -> list[str]:
    """State-dict prefixes of the members' frozen encoders (shared with the policy, never saved here)."""
    return [f"{path}.encoders.{modality}." for path, module in members.named_modules()
            if hasattr(module, "encoders") for modality, encoder in module.encoders.items()
            if not getattr(encoder, "trainable", True)]


def save_reward_model(model: PreferenceModel, folder: Path, pipeline: Mapping[str, Any],
                      summary: Mapping[str, Any]) -> Path:
    from polyfuse.training.safetensors_io import write_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / WEIGHTS, own_state(model.members, frozen_prefixes(model.members)), {})
    description = {"pipeline": dict(pipeline), "std": model.std, **summary}
    (folder / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return folder


def read_saved_reward(path: str | Path) -> SavedReward:
    """A folder written by ``polyfuse feedback train-reward``, or a run directory of a preference-model run."""
    folder = Path(path).expanduser()
    if (folder / DESCRIPTION).is_file() and (folder / WEIGHTS).is_file():
        from safetensors.torch import load_file

        description = json.loads((folder / DESCRIPTION).read_text(encoding="utf-8"))
        return SavedReward(description["pipeline"], load_file(str(folder / WEIGHTS)), float(description["std"]))
    from polyfuse.training.checkpoint import load_latest_checkpoint

    found = load_latest_checkpoint(folder, required=("config", "reward")) if folder.is_dir() else None
    if found is None:
        raise PolyfuseError(f"{folder} holds no saved reward model: give a folder written by `polyfuse feedback "
                            f"train-reward` ({WEIGHTS} + {DESCRIPTION}) or the output_dir of a run whose reward is "
                            "preference-model")
    _, checkpoint = found
    pipeline, reward = checkpoint["config"], checkpoint["reward"]
    if pipeline.get("reward", {}).get("name") != "preference-model" or "members" not in reward:
        raise PolyfuseError(f"the run in {folder} trained with reward {pipeline.get('reward', {}).get('name')!r}, "
                            "not a preference-model: it has no reward model to load")
    return SavedReward(pipeline, reward["members"], float(reward["std"]))


def load_members(model: PreferenceModel, saved: SavedReward, source: str) -> None:
    """Put saved weights into ``model``'s ensemble; a different ensemble or pipeline is a clear error."""
    try:
        load_own_state(model.members, saved.members, frozen_prefixes(model.members))
    except RuntimeError as exc:
        raise PolyfuseError(f"the reward model in {source} does not fit this pipeline (its encoders, fuser, "
                            f"head and ensemble_size must be those it was trained with): {str(exc)[:300]}") from None
    model.std, model.trained = saved.std, True
