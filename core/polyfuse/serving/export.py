"""``polyfuse export RUN_DIR --format torchscript|onnx -o FILE``: the policy as a file other runtimes load.

The exported model maps one tensor per modality to the action logits and the probabilities the policy
acts on (``action_probabilities``). Inputs are the environment's observations as tensors, batch first
(an image ``(B, H, W, C)`` uint8, as gymnasium gives it), except text: strings cannot enter a traced
graph, so a frozen text encoder (sbert) stays outside and the model takes its features
(``<modality>_features``, ``(B, D)`` float32). A trainable encoder of text cannot be left out, and
its modality is named in the refusal. Each input's convention is checked on the run's own
observations before export: the encoder must give the same features for the tensor as for the numpy
batch, else the modality is named.

A policy with memory (``optimizer.params.memory``) takes one more input, ``memory`` ``(B, N)`` float32,
and gives one more output, ``next_memory``: the caller feeds each episode's ``next_memory`` back with
its next observation, and zeros start an episode (the runtime keeps the episodes, not the model).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from polyfuse.errors import PolyfuseError
from polyfuse.network import MultimodalNetwork
from polyfuse.registry import Registry
from polyfuse.serving.command import EXPORT_FORMATS, ONNX_INSTALL


@dataclass(frozen=True)
class ExportInput:
    """One input of the exported model: ``name``, the observation ``key`` it stands for, and its layout."""

    name: str
    key: str
    modality: str
    shape: tuple[int, ...]
    dtype: str
    features: bool = False
    channels_first: bool = False
    memory: bool = False


def export_policy(path: Path, fmt: str, output: Path, registry: Registry) -> list[ExportInput]:
    """Write the policy saved at ``path`` to ``output`` in ``fmt``; the model's inputs, in order."""
    from polyfuse.training.saved_policy import load_saved_policy

    if fmt not in EXPORT_FORMATS:
        raise PolyfuseError(f"--format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    if fmt == "onnx":
        for module in ("onnx", "onnxscript"):
            try:
                __import__(module)
            except ImportError:
                raise PolyfuseError(f"exporting to ONNX needs the {module} package: {ONNX_INSTALL}") from None
    if output.parent and not output.parent.exists():
        raise PolyfuseError(f"-o {output}: the folder {output.parent} does not exist")
    policy = load_saved_policy(path, registry)
    try:
        module, inputs, example = exportable(policy)
        outputs = list(module.outputs)
        with torch.no_grad(), warnings.catch_warnings():
            # Shape checks read sizes as Python values; the exported model is tested at other batch sizes.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            if fmt == "torchscript":
                traced = torch.jit.trace(module, example, check_trace=False)
                traced.save(str(output))
            else:
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(module, example, str(output), input_names=[i.name for i in inputs],
                                  output_names=outputs, dynamo=True, verbose=False,
                                  dynamic_shapes={"tensors": tuple({0: batch} for _ in inputs)})
    finally:
        policy.close()
    description = {"format": fmt, "checkpoint": str(policy.location), "step": policy.step,
                   "env": policy.config.env.id, "inputs": [asdict(i) for i in inputs],
                   "outputs": outputs}
    Path(f"{output}.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    return inputs


def exportable(policy: Any) -> tuple[Any, list[ExportInput], tuple[Any, ...]]:
    """The policy as a module of tensors, its inputs, and an example batch of them (the run's own observations)."""
    optimizer = policy.optimizer
    modules = [value for value in vars(optimizer).values() if isinstance(value, torch.nn.Module)]
    for module in modules:
        module.eval()
    networks = [m for module in modules for m in module.modules() if isinstance(m, MultimodalNetwork)]
    if not networks:
        raise PolyfuseError(f"the {policy.config.optimizer.name!r} optimizer holds no polyfuse network to export")
    network = networks[0]
    observations, _ = policy.envs.reset(seed=policy.config.trainer.seed)
    inputs: list[ExportInput] = []
    example: list[torch.Tensor] = []
    for modality, encoder in network.encoders.items():
        key = network.observation_keys[modality]
        space = policy.observation_space[key]
        if isinstance(space, spaces.Text):
            if encoder.trainable:
                raise PolyfuseError(
                    f"modality {modality!r} is text, which TorchScript and ONNX cannot take, and its encoder "
                    f"{policy.config.modalities[modality].encoder.name!r} trains with the policy, so the export "
                    "cannot start after it; serve this run with `polyfuse serve` instead")
            with torch.no_grad():
                features = encoder(observations[key]).float()
            inputs.append(ExportInput(f"{modality}_features", key, modality, (int(features.shape[1]),), "float32",
                                      features=True))
            example.append(features)
            continue
        array = np.asarray(observations[key])
        as_tensor, channels_first = _tensor_convention(encoder, modality, array)
        inputs.append(ExportInput(key, key, modality, tuple(int(d) for d in array.shape[1:]), str(array.dtype),
                                  channels_first=channels_first))
        example.append(as_tensor)
    if optimizer.memory_size:
        inputs.append(ExportInput("memory", "", "", (optimizer.memory_size,), "float32", memory=True))
        example.append(torch.zeros(len(example[0]), optimizer.memory_size))
    return ExportedPolicy(optimizer, modules, networks, inputs).eval(), inputs, tuple(example)


def _tensor_convention(encoder: Any, modality: str, array: np.ndarray) -> tuple[Any, bool]:
    """The batch as a tensor in the environment's layout, and whether the encoder reads it channels-first."""
    tensor = torch.from_numpy(array.copy())
    with torch.no_grad():
        expected = encoder(array)
        for channels_first in (False, True):
            if channels_first and tensor.dim() != 4:
                continue
            candidate = tensor.permute(0, 3, 1, 2) if channels_first else tensor
            try:
                if torch.allclose(encoder(candidate), expected, atol=1e-6):
                    return tensor, channels_first
            except (ValueError, RuntimeError, TypeError):
                continue
    raise PolyfuseError(f"modality {modality!r}: its encoder gives other features for a tensor than for the "
                        "environment's numpy batch, so it cannot be exported; serve this run with `polyfuse serve`")


class ExportedPolicy(torch.nn.Module):
    """Tensors in the inputs' order -> (logits, probabilities), through the optimizer's own ``action_logits``;
    with a memory, the memories in -> (logits, probabilities, next memories), through its ``step_logits``."""

    def __init__(self, optimizer: Any, modules: list[torch.nn.Module], networks: list[MultimodalNetwork],
                 inputs: list[ExportInput]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)  # registered, so the trace sees parameters, not constants
        self.optimizer, self.networks, self.inputs = optimizer, networks, inputs
        self.remembers = any(spec.memory for spec in inputs)
        self.outputs = ("logits", "probabilities", "next_memory") if self.remembers else ("logits", "probabilities")

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        observations, memory = {}, None
        for spec, tensor in zip(self.inputs, tensors):
            if spec.memory:
                memory = tensor
            else:
                observations[spec.key] = tensor.permute(0, 3, 1, 2) if spec.channels_first else tensor
        given = [spec.modality for spec in self.inputs if spec.features]
        with contextlib.ExitStack() as stack:
            for network in self.networks:
                stack.enter_context(network.given_features([m for m in given if m in network.encoders]))
            if memory is None:
                logits = self.optimizer.action_logits(observations)
                return logits, self.optimizer.action_probabilities(logits)
            logits, memory = self.optimizer.step_logits(observations, memory)
        return logits, self.optimizer.action_probabilities(logits), memory
