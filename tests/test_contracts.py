"""The contract checks fail, with a useful message, on fusers and encoders that break the contract.

Each broken component below is a correct one with exactly one mistake, so
each test shows one check catching one mistake (a check that cannot fail is
worthless). That the checks pass on correct components is shown by the
built-in fusers' and encoders' own tests, which call them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from torch import nn

from polyfuse.contracts import check_encoder, check_fuser
from polyfuse.encoding import Encoder, numeric_batch
from polyfuse.fusion import Fuser, PresenceMask

torch.set_num_threads(1)


class SumFuser(Fuser):
    """A correct fuser: the sum of the present modalities' projections."""

    def __init__(self, input_dims: Mapping[str, int], hidden_dim: int = 8) -> None:
        super().__init__(input_dims, hidden_dim)
        self.projections = nn.ModuleList(nn.Linear(d, hidden_dim) for d in self.input_dims.values())

    def forward(
        self, features: Mapping[str, torch.Tensor], present: PresenceMask | None = None
    ) -> torch.Tensor:
        batch, _, dtype, mask, inputs = self.masked_inputs(features, present)
        total = torch.zeros(batch, self.output_dim, dtype=dtype)
        for modality, projection in zip(self.modalities, self.projections):
            total = total + torch.where(mask[modality][:, None], projection(inputs[modality]), 0.0)
        return total


class WrongOutputDim(SumFuser):
    def forward(self, features, present=None):
        out = super().forward(features, present)
        return torch.cat([out, out[:, :1]], dim=1)


class UnusedParameter(SumFuser):
    def __init__(self, input_dims, hidden_dim=8):
        super().__init__(input_dims, hidden_dim)
        self.forgotten = nn.Linear(hidden_dim, hidden_dim)


class MultipliesByMask(SumFuser):
    def forward(self, features, present=None):
        batch, _, dtype, mask = self.batch_layout(features, present)
        total = torch.zeros(batch, self.output_dim, dtype=dtype)
        for modality, projection in zip(self.modalities, self.projections):
            if modality in features:
                total = total + projection(features[modality]) * mask[modality][:, None]
        return total


class SelectsAfterProjecting(SumFuser):
    """Selects the right rows, but only after a layer has seen the missing ones."""

    def forward(self, features, present=None):
        batch, _, dtype, mask = self.batch_layout(features, present)
        total = torch.zeros(batch, self.output_dim, dtype=dtype)
        for modality, projection in zip(self.modalities, self.projections):
            if modality in features:
                total = total + torch.where(mask[modality][:, None], projection(features[modality]), 0.0)
        return total


class IgnoresPresence(SumFuser):
    def forward(self, features, present=None):
        return super().forward(features)


class SkipsValidation(SumFuser):
    def forward(self, features, present=None):
        return super().forward({m: x for m, x in features.items() if m in self.input_dims}, present)


class ScalesByKeysGiven(SumFuser):
    """Treats an absent key differently from a modality masked out for every sample."""

    def forward(self, features, present=None):
        return super().forward(features, present) / len(features)


class IgnoresLaterModalities(SumFuser):
    def __init__(self, input_dims, hidden_dim=8):
        super().__init__(input_dims, hidden_dim)
        del self.projections[1:]


class RenamesModalities(SumFuser):
    def __init__(self, input_dims, hidden_dim=8):
        super().__init__({m.upper(): d for m, d in input_dims.items()}, hidden_dim)


BROKEN_FUSERS = [
    (WrongOutputDim, r"returned shape \(\d+, 9\) but declares output_dim=8"),
    (UnusedParameter, r"no gradient reaches \['forgotten.weight', 'forgotten.bias'\]"),
    (MultipliesByMask, r"NaN .* reached the output.*multiplying by zero lets NaN through"),
    (SelectsAfterProjecting, r"made the gradient of 'projections.0.weight' non-finite.*masked_inputs"),
    (IgnoresPresence, r"changed when only the 'image' features of samples missing 'image'"),
    (SkipsValidation, r"an unknown modality was accepted silently.*self.batch_layout"),
    (ScalesByKeysGiven, r"leaving 'image' out of features gives a different output"),
    (IgnoresLaterModalities, r"does not depend on 'text' even for samples that have it"),
    (RenamesModalities, r"declares input_dims=\{'IMAGE': 7\}"),
]


@pytest.mark.parametrize(("fuser", "message"), BROKEN_FUSERS, ids=[f.__name__ for f, _ in BROKEN_FUSERS])
def test_check_fuser_catches(fuser: type[Fuser], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_fuser(fuser)


def test_check_fuser_passes_a_correct_fuser_and_takes_other_modalities() -> None:
    check_fuser(SumFuser)
    check_fuser(SumFuser, modalities={"depth": 2, "rgb": 4})


def test_check_fuser_wants_a_fuser() -> None:
    with pytest.raises(AssertionError, match="returned a Linear, not a polyfuse.fusion.Fuser"):
        check_fuser(lambda dims: nn.Linear(sum(dims.values()), 4))


class VectorEncoder(Encoder):
    """A correct encoder of ``(B, 3)`` float vectors."""

    def __init__(self, output_dim: int = 4) -> None:
        super().__init__()
        self.output_dim = output_dim
        self.layer = nn.Linear(3, output_dim)

    def forward(self, batch: np.ndarray) -> torch.Tensor:
        return self.layer(numeric_batch(batch, self.modality, (3,)).float())


class MixesBatch(VectorEncoder):
    def forward(self, batch):
        features = super().forward(batch)
        return features - features.mean(dim=0)


class WrongEncoderDim(VectorEncoder):
    def forward(self, batch):
        return super().forward(batch)[:, :-1]


class ReturnsIntegers(VectorEncoder):
    def forward(self, batch):
        return super().forward(batch).round().long()


class DividesByZero(VectorEncoder):
    def forward(self, batch):
        return super().forward(batch) / 0.0


class DetachesFeatures(VectorEncoder):
    def forward(self, batch):
        return super().forward(batch).detach()


class UnusedEncoderParameter(VectorEncoder):
    def __init__(self):
        super().__init__()
        self.spare = nn.Linear(4, 4)


class FrozenWithDropout(VectorEncoder):
    """Frozen, but its dropout still draws a new mask every call in train mode."""

    def __init__(self):
        super().__init__()
        self.dropout = nn.Dropout(0.5)
        self.requires_grad_(False)

    def forward(self, batch):
        return self.dropout(super().forward(batch))


SAMPLES = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)


BROKEN_ENCODERS = [
    (MixesBatch, r"sample 0 encoded alone differs from row 0 of the batch"),
    (WrongEncoderDim, r"returned shape \(5, 3\) for 5 samples but declares output_dim=4"),
    (ReturnsIntegers, r"returned torch.int64 features"),
    (DividesByZero, r"features hold NaN or inf"),
    (DetachesFeatures, r"is trainable but its output records no graph"),
    (UnusedEncoderParameter, r"no gradient reaches \['spare.weight', 'spare.bias'\]"),
    (FrozenWithDropout, r"is frozen but its output changes from call to call in train mode"),
]


@pytest.mark.parametrize(
    ("encoder", "message"), BROKEN_ENCODERS, ids=[e.__name__ for e, _ in BROKEN_ENCODERS]
)
def test_check_encoder_catches(encoder: type[Encoder], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_encoder(encoder(), SAMPLES)


def test_check_encoder_restores_mode_and_clears_gradients() -> None:
    encoder = VectorEncoder()
    check_encoder(encoder, SAMPLES)
    assert encoder.training and all(p.grad is None for p in encoder.parameters())
    frozen = VectorEncoder().requires_grad_(False).eval()
    check_encoder(frozen, SAMPLES)
    assert not frozen.training


def test_check_encoder_needs_two_samples() -> None:
    with pytest.raises(ValueError, match="at least two samples"):
        check_encoder(VectorEncoder(), SAMPLES[:1])
