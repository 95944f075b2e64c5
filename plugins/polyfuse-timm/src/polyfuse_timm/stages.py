"""Freezing all but the last N stages of a timm model.

A stage is what timm's ``feature_info`` lists: the blocks up to a point where
the resolution changes. Freezing the early stages keeps the generic
low-level filters of a pretrained model while adapting its high-level ones,
at a fraction of the memory and compute of full fine-tuning.
"""

from __future__ import annotations

from torch import nn

from polyfuse.errors import PolyfuseError


def stage_modules(model: nn.Module) -> list[str]:
    """Names of the modules that end each stage, first to last."""
    info = getattr(model, "feature_info", None)
    modules = [entry["module"] for entry in info] if isinstance(info, list) else []
    if not modules:
        raise PolyfuseError(
            f"{type(model).__name__} does not list its stages (timm feature_info), so trainable_stages "
            "cannot be applied; train the whole model (trainable_stages: null)"
        )
    return modules


def _is_ancestor(name: str, of: str) -> bool:
    return name == "" or of.startswith(f"{name}.")


def freeze_early_stages(model: nn.Module, trainable_stages: int) -> list[nn.Module]:
    """Train only the last ``trainable_stages`` stages and the modules after them; return the frozen modules.

    Modules are visited in registration order (stem, stages, head). Every
    module that ends at or before the boundary stage is frozen whole; modules
    that contain the boundary (the model itself, a ``blocks`` list) freeze
    only their own tensors (a ViT's position embedding). The caller keeps the
    returned modules in eval mode, so frozen BatchNorm statistics stay fixed.
    """
    stages = stage_modules(model)
    if trainable_stages > len(stages):
        raise PolyfuseError(
            f"trainable_stages is {trainable_stages} but the model has {len(stages)} stages "
            f"({', '.join(stages)}); use at most {len(stages)}"
        )
    model.requires_grad_(True)
    if trainable_stages == len(stages):
        return []
    boundary = stages[-(trainable_stages + 1)]
    frozen: list[tuple[str, nn.Module]] = []
    reached = False
    for name, module in model.named_modules():
        inside = name == boundary or name.startswith(f"{boundary}.")
        if reached and not inside:
            break  # the first module after the boundary stage: it and the rest stay trainable
        reached = reached or inside
        if frozen and name.startswith(f"{frozen[-1][0]}."):
            continue  # part of a module already frozen whole
        if _is_ancestor(name, boundary):
            for parameter in module.parameters(recurse=False):
                parameter.requires_grad_(False)
            continue
        module.requires_grad_(False)
        frozen.append((name, module))
    return [module for _, module in frozen]
