"""Starting a run from a saved policy: the one a served run answers with (``trainer.continue_from``,
``polyfuse run CONFIG --continue-from RUN``), or an earlier run's (dpo's ``init_from``).

Only the policy's weights are taken (:meth:`RLOptimizer.load_policy`): the optimizer's own state stays fresh,
a new learning phase, and what derives from the policy (PPO's KL reference, DPO's reference) is taken from
the loaded one. Policies are found in two layouts of a checkpoint's ``optimizer`` state:

- ``dpo``: ``optimizer.policy``, a :class:`~polyfuse.rl.heads.PolicyNetwork` (``trunk.*``, ``head.*``);
- on-policy actor-critics (``ppo``, ``a2c``): ``optimizer.model``, an :class:`~polyfuse.rl.heads.ActorCritic`
  whose ``policy.*`` entries are that same PolicyNetwork (the critic is left out).

Only the policy's tensors are read from the safetensors file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polyfuse.config import PipelineConfig, config_differences
from polyfuse.errors import PolyfuseError
from polyfuse.registry import Registry
from polyfuse.training.api import RLOptimizer
from polyfuse.training.checkpoint import lazy_tensors, read_checkpoint_tree, unflatten_state
from polyfuse.training.promotion import POINTER_FILE, read_promotion

WHERE = "trainer.continue_from"
FITTING_SECTIONS = ("modalities", "fuser")
"""Config sections a continued run must share with the served one: they decide the policy's inputs and trunk."""


def served_checkpoint(run_dir: Path, where: str = WHERE) -> Path:
    """The checkpoint folder ``run_dir`` serves: the promoted one, else its newest (or ``run_dir`` itself)."""
    from polyfuse.training.saved_policy import checkpoint_folder

    try:
        return checkpoint_folder(Path(run_dir))
    except PolyfuseError as exc:
        raise PolyfuseError(f"{where}: {exc}") from None


def check_gateable(config: PipelineConfig) -> None:
    """Refuse, before training, a continued run whose gate could not run or whose promotion nobody would follow."""
    run_dir = Path(config.trainer.continue_from)  # type: ignore[arg-type]
    if config.env is None:
        raise PolyfuseError(
            f"{WHERE}: the promotion gate plays the candidate and the served policy on held-out episodes, and this "
            "run has no env; add the served run's env: {id: ...} (or start a dataset run from that policy with "
            "dpo's optimizer.params.init_from, which neither gates nor promotes)"
        )
    from polyfuse.training.saved_policy import is_checkpoint_folder

    if config.trainer.promotion.promote and is_checkpoint_folder(run_dir):
        raise PolyfuseError(
            f"{WHERE}: {run_dir} is a checkpoint folder, and a promotion points a run's output_dir at the candidate "
            f"(RUN/promoted.json, which `polyfuse serve RUN` follows; a checkpoint folder is served as it is); give "
            f"the served run's output_dir ({run_dir.parent}), or --no-promote to only compare"
        )


def check_output_dir(run_dir: Path | None, output_dir: Path) -> None:
    """Refuse a fresh run in a folder holding a checkpoint that is, or was, served: starting afresh there would
    delete it (``run_dir``'s served checkpoint) or the frozen encoders a promoted copy reads (``promoted-STEP/``),
    or leave the fresh run behind a promotion pointer (``promoted.json``) that names another run's checkpoint."""
    from polyfuse.training.gate import PROMOTED_PREFIX

    folder = Path(output_dir).resolve()
    promoted = sorted(path.name for path in folder.glob(f"{PROMOTED_PREFIX}*")) if folder.is_dir() else []
    if promoted:
        raise PolyfuseError(
            f"trainer.output_dir ({output_dir}) holds {', '.join(promoted)}, promoted to be served, and a fresh run "
            "there would delete the frozen encoders it reads; give each retraining round its own output_dir (e.g. "
            "--output-dir runs/finetune-2), or delete those folders if no run serves them any more"
        )
    pointed = read_promotion(folder) if folder.is_dir() else None
    if pointed is not None:
        raise PolyfuseError(
            f"trainer.output_dir ({output_dir}) holds {POINTER_FILE}, which points it at {pointed.checkpoint}: "
            "everything that loads this folder as a policy (serve, eval, --continue-from) would answer with that "
            f"checkpoint, not with the fresh run's; delete {Path(output_dir) / POINTER_FILE} to serve the new run, "
            "or give it another output_dir"
        )
    served = served_checkpoint(run_dir).resolve() if run_dir is not None else None
    if served is not None and served.is_relative_to(folder):
        raise PolyfuseError(
            f"trainer.output_dir ({output_dir}) holds {served}, the checkpoint {run_dir} serves, and a fresh run "
            "there would delete it; give each retraining round its own output_dir (e.g. --output-dir "
            "runs/finetune-2)"
        )


def read_policy_weights(path: Path, where: str = WHERE) -> tuple[dict[str, torch.Tensor], str]:
    """The ``trunk.*`` and ``head.*`` weights of the policy ``path`` serves (see :func:`served_checkpoint`),
    and the name of the optimizer that trained it."""
    location = served_checkpoint(Path(path), where)
    tree = read_checkpoint_tree(location)
    optimizer = _optimizer_name(tree)
    state = tree.get("optimizer") if isinstance(tree, dict) else None
    if not isinstance(state, dict):
        raise PolyfuseError(f"{where}: {location} holds no optimizer state; point it at a run that polyfuse run "
                            "trained and checkpointed")
    if isinstance(state.get("policy"), dict):
        subtree, prefix = state["policy"], ""
    elif isinstance(state.get("model"), dict) and any(key.startswith("policy.") for key in state["model"]):
        subtree, prefix = state["model"], "policy."
    else:
        raise PolyfuseError(
            f"{where}: {location} is a checkpoint of optimizer {optimizer!r}, which has no policy network to start "
            f"from (its state holds {sorted(state)}); use a run of ppo, a2c or dpo"
        )
    wanted = {key[len(prefix):]: value for key, value in subtree.items() if key.startswith(prefix)}
    with lazy_tensors(location) as tensors:  # frozen encoders' tensors live beside the checkpoint
        weights = unflatten_state(wanted, tensors)
    return weights, optimizer


def load_policy_from(optimizer: RLOptimizer, path: Path, where: str = WHERE) -> str:
    """Load the policy ``path`` serves into ``optimizer`` (set up); returns the optimizer that trained it."""
    weights, trained_by = read_policy_weights(path, where)
    try:
        optimizer.load_policy(weights)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
        raise PolyfuseError(
            f"{where}: the policy of {path} (a {trained_by} run) does not fit this pipeline's policy network; use "
            f"the same modalities, encoders, fuser, head (hidden_sizes, activation) and action space as that run "
            f"({detail[:300]})"
        ) from None
    return trained_by


def check_fits(config: PipelineConfig, spaces: tuple[Any, Any], run_dir: Path, registry: Registry) -> None:
    """Refuse a pipeline whose inputs differ from the served run's: each differing config path or space named."""
    from polyfuse.training.saved_policy import saved_config

    location = served_checkpoint(run_dir)
    served = saved_config(location, registry)
    mine, theirs = config.model_dump(mode="json"), served.model_dump(mode="json")
    changed = [path for section in FITTING_SECTIONS
               for path in config_differences(theirs[section], mine[section], f"{section}.")]
    if changed:
        raise PolyfuseError(
            f"{WHERE}: this pipeline differs from the one {run_dir} serves in {', '.join(changed)}; a continued run "
            "fine-tunes that policy, so give it the served run's modalities and fuser (copy them from its config)"
        )
    observation_space, action_space = _served_spaces(served)
    from polyfuse.training.compatibility import check_compatible

    try:
        check_compatible(config.modalities, observation_space, action_space, *spaces, "this run's env")
    except PolyfuseError as exc:
        raise PolyfuseError(f"{WHERE}: {run_dir} was trained with other observations or actions: {exc}") from None


def _served_spaces(served: PipelineConfig) -> tuple[Any, Any]:
    from polyfuse.envs import make_vector_env

    assert served.env is not None  # saved_config refuses runs without one
    envs = make_vector_env(served.env.id, served.env.kwargs, num_envs=1)
    try:
        return envs.single_observation_space, envs.single_action_space
    finally:
        envs.close()


def _optimizer_name(tree: Any) -> str:
    config = tree.get("config") if isinstance(tree, dict) else None
    optimizer = config.get("optimizer") if isinstance(config, dict) else None
    return str(optimizer.get("name")) if isinstance(optimizer, dict) else "unknown"
