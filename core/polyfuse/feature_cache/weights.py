"""Noticing that a module's weights changed without reading them.

Features may be reused only while an encoder's weights stay the same, and
hashing a transformer's 90 MB on every forward pass would cost more than the
cache saves. Torch already counts writes: every in-place change bumps a
tensor's ``_version``, and a replaced parameter, buffer or submodule goes
through the registration hooks below. Not seen: ``tensor.data = ...``
assignments, which is how ``module.to(dtype)`` converts parameters.
"""

from __future__ import annotations

import operator
from copy import deepcopy
from typing import Any

import torch
from torch import nn

_REGISTRATIONS = [0]  # bumped whenever any module registers a parameter, buffer or submodule


def _registered(*args: Any) -> None:
    _REGISTRATIONS[0] += 1


_modules_api = torch.nn.modules.module
_modules_api.register_module_parameter_registration_hook(_registered)
_modules_api.register_module_buffer_registration_hook(_registered)
_modules_api.register_module_module_registration_hook(_registered)

_VERSION = operator.attrgetter("_version")

Fingerprint = tuple[object, int]


class WeightsWatch:
    """Fingerprints of a module's weights that are cheap to take and change whenever a weight does.

    Memoise anything derived from the weights (an identity digest, a cache
    namespace) under :meth:`fingerprint` and recompute it when the
    fingerprint differs. A copied or unpickled watcher starts afresh, so a
    fingerprint remembered from before the copy never matches the copy's.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.params: list[torch.Tensor] = []
        self.tensors: list[torch.Tensor] = []  # the parameters, then the buffers
        self._registrations = -1
        self._generation: object | None = None  # a new object whenever the set of tensors changes

    def __deepcopy__(self, memo: dict[int, Any]) -> WeightsWatch:
        return type(self)(deepcopy(self.module, memo))

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.module,)

    def fingerprint(self) -> Fingerprint:
        """Equal to an earlier fingerprint only if no weight was replaced or changed in place since.

        The hot path sums the ``_version`` of the tensors collected last time; they are
        collected again after any module in the process registers a parameter, buffer or submodule.
        """
        if self._registrations != _REGISTRATIONS[0]:
            self._registrations = _REGISTRATIONS[0]
            params = list(self.module.parameters())
            tensors = params + list(self.module.buffers())
            if (
                self._generation is None
                or len(tensors) != len(self.tensors)
                or not all(map(operator.is_, tensors, self.tensors))
            ):
                self.params, self.tensors, self._generation = params, tensors, object()
        return self._generation, sum(map(_VERSION, self.tensors))  # versions only grow
