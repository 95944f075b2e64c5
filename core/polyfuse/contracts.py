"""One-line contract checks for fusers and encoders, built-in or third-party.

A plugin's tests call them instead of re-deriving the contract::

    def test_fuser_contract():
        check_fuser(lambda dims: MaxPoolFuser(dims, hidden_dim=8))

    def test_encoder_contract():
        check_encoder(MyEncoder(...), samples)

Each failure is an ``AssertionError`` saying what is wrong and how to fix it.
torch is imported inside the checks so that importing this module (through
the ``polyfuse.testing`` pytest plugin) costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from polyfuse.encoding import Encoder
    from polyfuse.fusion import Fuser

DEFAULT_MODALITIES: dict[str, int] = {"image": 7, "text": 5, "audio": 3}
_GARBAGE = ("noise", "nan")
_SELECT = (
    "select missing rows away with torch.where, or take the inputs from Fuser.masked_inputs, "
    "before any layer sees them"
)
_NAN = (
    f"{_SELECT}: masking by multiplying by zero lets NaN through (0 * NaN = NaN), and so does a layer "
    "applied to the missing rows whose output is discarded afterwards (its weight gradient multiplies "
    "those rows by zero)"
)


def check_fuser(
    build: Callable[[dict[str, int]], Fuser], *, modalities: Mapping[str, int] = DEFAULT_MODALITIES
) -> None:
    """Check the :class:`~polyfuse.fusion.Fuser` contract for the first 1, 2, … of ``modalities``.

    ``build(input_dims)`` returns a fresh fuser, e.g.
    ``lambda dims: registry.create("fusers", "max-pool", {"hidden_dim": 8}, input_dims=dims)``.
    Checked for each layout: the output is ``(B, output_dim)`` and finite; bad
    inputs raise ``ValueError``; every trainable parameter gets a gradient;
    every present modality matters; a sample's output does not depend on
    the features of a modality missing for it, even NaN ones, and neither do
    the gradients; an absent key equals an all-False presence mask.
    """
    import torch

    names = list(modalities)
    if not names:
        raise ValueError("check_fuser needs at least one modality")
    for count in range(1, len(names) + 1):
        dims = {m: int(modalities[m]) for m in names[:count]}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            fuser = build(dict(dims))
        _FuserCheck(fuser, dims).run()


class _FuserCheck:
    """The checks of :func:`check_fuser` on one fuser and one modality layout."""

    def __init__(self, fuser: Fuser, dims: dict[str, int]) -> None:
        import torch

        from polyfuse.fusion import Fuser

        assert isinstance(fuser, Fuser), (
            f"build({dims}) returned a {type(fuser).__name__}, not a polyfuse.fusion.Fuser: subclass Fuser"
        )
        self.torch = torch
        self.fuser = fuser
        self.dims = dims
        self.where = f"{type(fuser).__name__} built for {dims}"
        self.batch = len(dims) + 4
        generator = torch.Generator().manual_seed(1)
        self.features = {m: torch.randn(self.batch, d, generator=generator) for m, d in dims.items()}
        self.target = torch.randn(self.batch, fuser.output_dim, generator=generator)
        # Modality i is missing for sample i, and the last sample has none: every modality is
        # both present and missing somewhere in the batch.
        self.present: dict[str, torch.Tensor] = {}
        for i, modality in enumerate(dims):
            mask = torch.ones(self.batch, dtype=torch.bool)
            mask[[i, -1]] = False
            self.present[modality] = mask

    def run(self) -> None:
        self.declared_layout()
        self.output_shape()
        self.rejects_bad_inputs()
        self.gradients_reach_parameters()
        self.fuser.eval()  # dropout would count as dependence below
        self.present_modalities_matter()
        for modality in self.dims:
            for garbage in _GARBAGE:
                self.missing_rows_are_ignored(modality, garbage)
        self.absent_equals_all_missing()

    def declared_layout(self) -> None:
        assert self.fuser.input_dims == self.dims and list(self.fuser.modalities) == list(self.dims), (
            f"{self.where}: declares input_dims={self.fuser.input_dims}; pass the input_dims the "
            "factory receives to super().__init__(input_dims, output_dim) unchanged"
        )

    def output_shape(self) -> None:
        out = self.fuser(self.features)
        expected = (self.batch, self.fuser.output_dim)
        assert isinstance(out, self.torch.Tensor) and tuple(out.shape) == expected, (
            f"{self.where}: returned {_describe(out)} but declares output_dim={self.fuser.output_dim}, "
            f"so {expected} was expected; the policy head is built on output_dim: pass the real width "
            "to super().__init__(input_dims, output_dim)"
        )
        assert bool(self.torch.isfinite(out).all()), f"{self.where}: the output holds NaN or inf"

    def rejects_bad_inputs(self) -> None:
        first, width = next(iter(self.dims.items()))
        bad = {
            "an unknown modality": {**self.features, "not-a-modality": self.features[first]},
            f"features of {first!r} one column too wide": {
                **self.features,
                first: self.torch.zeros(self.batch, width + 1),
            },
        }
        for what, features in bad.items():
            try:
                self.fuser(features)
            except ValueError:
                continue
            except Exception as error:  # noqa: BLE001 - any other failure is the finding
                raise AssertionError(
                    f"{self.where}: {what} raised {type(error).__name__} instead of a ValueError naming "
                    "the modality; start forward with self.batch_layout(features, present) or "
                    "self.masked_inputs(features, present), which validate the inputs"
                ) from error
            raise AssertionError(
                f"{self.where}: {what} was accepted silently; start forward with "
                "self.batch_layout(features, present) or self.masked_inputs(features, present)"
            )

    def gradients_reach_parameters(self) -> None:
        """Each parameter must learn with all modalities present or with some missing (placeholders)."""
        reached: set[str] = set()
        for present in (None, self.present):
            self.fuser.zero_grad(set_to_none=True)
            out = self.fuser(self.features, present)
            if out.requires_grad:  # a plain concatenation of complete inputs records no graph at all
                (out * self.target).sum().backward()
            grads = {n: p.grad for n, p in self.fuser.named_parameters()}
            reached |= {n for n, grad in grads.items() if grad is not None and bool(grad.any())}
        self.fuser.zero_grad(set_to_none=True)
        starved = [n for n, p in self.fuser.named_parameters() if p.requires_grad and n not in reached]
        assert not starved, (
            f"{self.where}: no gradient reaches {starved}, neither with every modality present nor with "
            "some missing; every trainable parameter must take part in forward (not detached, not under "
            "torch.no_grad); freeze a deliberately unused one with requires_grad_(False)"
        )

    def present_modalities_matter(self) -> None:
        """Without this, a fuser ignoring its inputs would pass the independence checks vacuously."""
        reference = self.fuser(self.features, self.present)
        generator = self.torch.Generator().manual_seed(2)
        for modality, x in self.features.items():
            changed = {**self.features, modality: x + self.torch.randn(x.shape, generator=generator)}
            out = self.fuser(changed, self.present)
            rows = self.present[modality]
            assert not self.torch.allclose(out[rows], reference[rows]), (
                f"{self.where}: the output does not depend on {modality!r} even for samples that have it; "
                "every modality's features must reach the output"
            )

    def missing_rows_are_ignored(self, modality: str, garbage: str) -> None:
        torch = self.torch
        missing = ~self.present[modality]
        reference = self.fuser(self.features, self.present).detach()
        x = self.features[modality]
        fill = torch.full_like(x, float("nan")) if garbage == "nan" else 100 * torch.randn_like(x)
        changed = {m: v.clone().requires_grad_() for m, v in self.features.items()}
        changed[modality] = torch.where(missing[:, None], fill, x).requires_grad_()
        self.fuser.zero_grad(set_to_none=True)
        out = self.fuser(changed, self.present)
        what = "NaN" if garbage == "nan" else "large noise"
        if garbage == "nan":
            leaked = (~torch.isfinite(out)).any(dim=1)
            assert not bool(leaked.any()), (
                f"{self.where}: NaN in the {modality!r} rows of samples that miss {modality!r} reached the "
                f"output of samples {_rows(leaked)}; {_NAN}"
            )
        differs = ~torch.isclose(out, reference, rtol=1e-4, atol=1e-5).all(dim=1)
        assert not bool(differs.any()), (
            f"{self.where}: the output of samples {_rows(differs)} changed when only the {modality!r} "
            f"features of samples missing {modality!r} were replaced by {what}; a sample's output must "
            f"not depend on a modality marked missing for it: {_SELECT}"
        )
        if out.requires_grad:
            (out * self.target).sum().backward()
        for name, parameter in self.fuser.named_parameters():
            assert parameter.grad is None or bool(torch.isfinite(parameter.grad).all()), (
                f"{self.where}: {what} in missing {modality!r} rows made the gradient of {name!r} "
                f"non-finite, although the output is clean; {_NAN}"
            )
        for name, tensor in changed.items():
            grad = tensor.grad
            if grad is None:
                continue
            hidden = ~self.present[name]
            assert bool(torch.isfinite(grad).all()) and not bool(grad[hidden].any()), (
                f"{self.where}: a gradient flows back into the {name!r} features of samples missing "
                f"{name!r}; {_SELECT}"
            )
        self.fuser.zero_grad(set_to_none=True)

    def absent_equals_all_missing(self) -> None:
        if len(self.dims) < 2:
            return  # dropping the only modality leaves nothing to fuse
        torch = self.torch
        for modality in self.dims:
            rest = {m: x for m, x in self.features.items() if m != modality}
            absent = self.fuser(rest)
            masked = self.fuser(self.features, {modality: torch.zeros(self.batch, dtype=torch.bool)})
            assert torch.allclose(absent, masked, rtol=1e-4, atol=1e-5), (
                f"{self.where}: leaving {modality!r} out of features gives a different output from marking "
                "it missing for every sample; both mean the same: take presence from "
                "self.batch_layout / self.masked_inputs (all False for an absent key)"
            )


def check_encoder(encoder: Encoder, samples: Any, *, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Check the :class:`~polyfuse.encoding.Encoder` contract on ``samples``, a raw batch of two or more.

    ``samples`` is what the environment hands the encoder (a numpy array, a
    list of strings…); ``samples[i:i + 1]`` must be a batch of one. Checked:
    the output is a finite float ``(B, output_dim)`` tensor; sample ``i``
    encoded alone equals row ``i`` of the batch (in eval mode, within
    ``rtol``/``atol``); a frozen encoder is a pure function in train and eval
    mode alike (the feature cache and ``frozen_twin`` rely on it); a trainable
    one passes gradients to every trainable parameter. The encoder's mode is
    restored and its gradients cleared afterwards.
    """
    import torch

    from polyfuse.encoding import Encoder

    name = type(encoder).__name__
    assert isinstance(encoder, Encoder), f"{name} is not a polyfuse.encoding.Encoder: subclass it"
    if len(samples) < 2:
        raise ValueError("check_encoder needs a batch of at least two samples to check batch independence")
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            out = _check_features(encoder, samples, rtol, atol)
            if not encoder.trainable:
                _check_pure(encoder, samples, out)
        if encoder.trainable:
            _check_encoder_gradients(encoder, samples)
    finally:
        encoder.zero_grad(set_to_none=True)
        encoder.train(was_training)


def _check_features(encoder: Encoder, samples: Any, rtol: float, atol: float) -> torch.Tensor:
    import torch

    name, batch = type(encoder).__name__, len(samples)
    out = encoder(samples)
    expected = (batch, encoder.output_dim)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == expected, (
        f"{name}: returned {_describe(out)} for {batch} samples but declares "
        f"output_dim={encoder.output_dim}, so {expected} was expected; the fuser is built on output_dim"
    )
    assert out.is_floating_point(), f"{name}: returned {out.dtype} features; fusers need floats (.float())"
    assert bool(torch.isfinite(out).all()), f"{name}: features hold NaN or inf for valid samples"
    for i in range(batch):
        alone = encoder(samples[i : i + 1])[0]
        assert torch.allclose(alone, out[i], rtol=rtol, atol=atol), (
            f"{name}: sample {i} encoded alone differs from row {i} of the batch (max difference "
            f"{float((alone - out[i]).abs().max()):.3g}); an encoder must treat every sample on its own "
            "in eval mode (no batch statistics, no mixing across the batch dimension)"
        )
    return out


def _check_pure(encoder: Encoder, samples: Any, reference: torch.Tensor) -> None:
    import torch

    for mode in ("eval", "train"):
        encoder.train(mode == "train")
        for _ in range(2):
            assert torch.equal(encoder(samples), reference), (
                f"{type(encoder).__name__}: is frozen but its output changes from call to call in {mode} "
                "mode; a frozen encoder must be a pure function of its input (the feature cache and "
                "frozen_twin reuse its output): keep dropout and batch-norm in eval mode, e.g. by "
                "overriding train() to leave frozen parts in eval"
            )


def _check_encoder_gradients(encoder: Encoder, samples: Any) -> None:
    import torch

    name = type(encoder).__name__
    encoder.train()
    encoder.zero_grad(set_to_none=True)
    out = encoder(samples)
    assert out.requires_grad, (
        f"{name}: is trainable but its output records no graph; do not run forward under torch.no_grad "
        "or detach the features of a trainable encoder"
    )
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(out)
    (out * weights).sum().backward()
    parameters = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    starved = [n for n, p in parameters if p.grad is None or not bool(p.grad.any())]
    assert not starved, (
        f"{name}: no gradient reaches {starved}; every trainable parameter must take part in forward "
        "(freeze a deliberately unused one with requires_grad_(False)); an all-zero gradient can also "
        "mean degenerate samples (all zeros): pass varied ones"
    )
    broken = [n for n, p in parameters if not bool(torch.isfinite(p.grad).all())]
    assert not broken, f"{name}: the gradients of {broken} hold NaN or inf"


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"shape {tuple(shape)}" if shape is not None else f"a {type(value).__name__}"


def _rows(flags: torch.Tensor) -> list[int]:
    return flags.nonzero().flatten().tolist()
