"""Creating timm models with the weights a config asks for, and the errors when that cannot work.

Weights come from one of three places: random initialisation, a local file
(the only source on machines without internet), or timm's hub download. A
local checkpoint is loaded strictly (apart from the classifier, which the
encoder drops), so a checkpoint of another architecture is an error rather
than a silently random model.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from polyfuse.errors import PolyfuseError


class WeightsError(PolyfuseError):
    """Weights that cannot be had: a missing or mismatched checkpoint, or hub weights offline."""


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` with did-you-mean suggestions from timm's own list for an unknown architecture."""
    import timm

    architecture = name.split(".", 1)[0]
    if timm.is_model(name):
        if "." in name:
            tags = timm.list_pretrained(f"{architecture}.*")
            if name not in tags:
                raise ValueError(
                    f"timm model {architecture!r} has no pretrained tag {name!r}; its tags: {tags}"
                )
        return
    close = difflib.get_close_matches(architecture.lower(), timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    listing = f"timm.list_models('*{architecture[:6]}*')"
    raise ValueError(f"unknown timm model {name!r}; {hint}list similar ones with {listing}")


def _classifier_prefixes(model: Any) -> tuple[str, ...]:
    names = model.pretrained_cfg.get("classifier") or ()
    return tuple(f"{name}." for name in ((names,) if isinstance(names, str) else names))


def _examples(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def load_checkpoint(model: Any, name: str, path: Path) -> None:
    """Load a local ``.safetensors`` or torch state dict into ``model`` strictly (classifier excepted)."""
    import timm.models

    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: {path} (params.checkpoint of the timm encoder)")
    try:  # timm's reader: .safetensors, else torch.load(weights_only=True); unwraps {"state_dict": ...}
        state = timm.models.load_state_dict(str(path), weights_only=True)
    except Exception as exc:  # unreadable file, pickle refused by weights_only=True, bad safetensors header
        raise WeightsError(
            f"cannot read checkpoint {path} ({type(exc).__name__}: {str(exc)[:300]}); it must be a "
            ".safetensors file or a torch state dict loadable with torch.load(weights_only=True)"
        ) from None
    classifier = _classifier_prefixes(model)
    state = {key: value for key, value in state.items() if not key.startswith(classifier)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes that differ
        detail = " ".join(str(exc).split())[:300]
        raise WeightsError(f"checkpoint {path} does not fit timm model {name!r}: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"checkpoint {path} does not fit timm model {name!r}: {len(result.missing_keys)} weights missing "
            f"({_examples(result.missing_keys)}), {len(result.unexpected_keys)} unexpected "
            f"({_examples(result.unexpected_keys)}); is it this architecture's state dict (timm format)?"
        )


def _hub_id(name: str) -> str:
    import timm.models

    config = timm.models.get_pretrained_cfg(name)
    return getattr(config, "hf_hub_id", None) or f"timm/{name}"


def create_model(name: str, checkpoint: Path | None, pretrained: bool, **kwargs: Any) -> Any:
    """A timm model without classifier (``num_classes=0``: its output is the pooled feature vector)."""
    import timm

    if not pretrained:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
        if checkpoint is not None:
            load_checkpoint(model, name, Path(checkpoint).expanduser())
        return model
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:  # huggingface_hub and urllib errors are OSErrors
        raise WeightsError(
            f"cannot get timm's pretrained weights for {name!r} ({type(exc).__name__}: {str(exc)[:200]}). "
            "Hub downloads need internet, which this machine lacks: download the weights where you can "
            f"(e.g. `hf download {_hub_id(name)}` gives model.safetensors) and set the encoder's "
            "params.checkpoint to that local file instead of pretrained: true"
        ) from None
