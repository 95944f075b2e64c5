"""``init_from``: the policy weights of an earlier run, read from its checkpoint.

A run's checkpoint (:mod:`polyfuse.training.checkpoint`) holds the optimizer's
``state_dict()`` under ``optimizer``. Policies are found in two layouts:

- ``dpo``: ``optimizer.policy``, a :class:`~polyfuse.rl.heads.PolicyNetwork`
  (``trunk.*``, ``head.*``);
- on-policy actor-critics (``ppo``, ``a2c``): ``optimizer.model``, an
  :class:`~polyfuse.rl.heads.ActorCritic` whose ``policy.*`` entries are that
  same PolicyNetwork (the critic is left out).

Only the policy's tensors are read from the safetensors file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from polyfuse.errors import PolyfuseError
from polyfuse.training.checkpoint import (
    STATE_FILE,
    TENSORS_FILE,
    checkpoint_location,
    lazy_tensors,
    read_checkpoint_tree,
    unflatten_state,
)

WHERE = "optimizer.params.init_from"


def read_policy_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The ``trunk.*`` and ``head.*`` weights of the policy saved in run folder ``path``, and the run's optimizer."""
    location = _location(Path(path))
    tree = read_checkpoint_tree(location)
    optimizer = _optimizer_name(tree)
    state = tree.get("optimizer") if isinstance(tree, dict) else None
    if not isinstance(state, dict):
        raise PolyfuseError(f"{WHERE}: {location} holds no optimizer state; point it at a run that polyfuse run "
                            "trained and checkpointed")
    if isinstance(state.get("policy"), dict):
        subtree, prefix = state["policy"], ""
    elif isinstance(state.get("model"), dict) and any(key.startswith("policy.") for key in state["model"]):
        subtree, prefix = state["model"], "policy."
    else:
        raise PolyfuseError(
            f"{WHERE}: {location} is a checkpoint of optimizer {optimizer!r}, which has no policy network to start "
            f"from (its state holds {sorted(state)}); use a run of ppo, a2c or dpo"
        )
    wanted = {key[len(prefix):]: value for key, value in subtree.items() if key.startswith(prefix)}
    with lazy_tensors(location) as tensors:  # frozen encoders' tensors live beside the checkpoint
        weights = unflatten_state(wanted, tensors)
    return weights, optimizer


def _location(folder: Path) -> Path:
    location = checkpoint_location(folder)
    if location is None and (folder / STATE_FILE).is_file() and (folder / TENSORS_FILE).is_file():
        location = folder  # the checkpoint/ folder itself
    if location is None:
        state = "does not exist" if not folder.exists() else "holds no checkpoint"
        raise PolyfuseError(
            f"{WHERE}: {folder} {state}; give the output_dir of an earlier run (e.g. runs/digits_vqa_ppo), "
            "whose checkpoint/ folder polyfuse run wrote"
        )
    return location


def _optimizer_name(tree: Any) -> str:
    config = tree.get("config") if isinstance(tree, dict) else None
    optimizer = config.get("optimizer") if isinstance(config, dict) else None
    return str(optimizer.get("name")) if isinstance(optimizer, dict) else "unknown"
