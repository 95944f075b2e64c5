"""One-line contract checks for fusers and encoders, built-in or third-party.

A plugin's tests call them instead of re-deriving the contract::

    def test_fuser_contract():
        check_fuser(lambda dims: MaxPoolFuser(dims, hidden_dim=8))

    def test_encoder_contract():
        check_encoder(MyEncoder(...), samples)

    def test_spatial_fuser_contract():  # a fuser that consumes feature maps
        check_spatial_fuser(lambda dims, maps: MyMapFuser(dims, maps, width=8))

    def test_spatial_encoder_contract():  # an encoder offering forward_spatial
        check_spatial_encoder(MyCNN(...), samples)

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
DEFAULT_MAP_SHAPES: dict[str, tuple[int, int, int]] = {"image": (4, 5, 6)}
"""(C, H, W); H != W catches a transposed map."""
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


def check_spatial_fuser(
    build: Callable[[dict[str, int], dict[str, tuple[int, int, int]]], Fuser],
    *,
    maps: Mapping[str, tuple[int, int, int]] = DEFAULT_MAP_SHAPES,
    modalities: Mapping[str, int] = DEFAULT_MODALITIES,
) -> None:
    """:func:`check_fuser` for a fuser that consumes feature maps, plus the map contract.

    ``build(input_dims, map_shapes)`` returns a fresh fuser reading the maps of
    ``map_shapes`` (``{modality: (C, H, W)}``), e.g.
    ``lambda dims, maps: registry.create("fusers", "mmcnn", {}, input_dims=dims, map_shapes=maps)``.
    Layouts: the map modalities (``maps``, which must be among ``modalities``),
    then one more vector modality at a time. Besides every check of
    :func:`check_fuser` (a map travels with its modality: present, missing or
    absent together), checked: ``fuser.map_shapes`` is what it was built with;
    the output depends on the maps themselves; a wrongly shaped map, a map of a
    modality it does not consume, and features without their map raise
    ``ValueError``; NaN or noise in the map rows of samples missing the modality
    reach neither the output nor any gradient.
    """
    import torch

    unknown = [m for m in maps if m not in modalities]
    if not maps or unknown:
        raise ValueError(f"check_spatial_fuser needs map modalities among {list(modalities)}, got {list(maps)}")
    names = [*maps, *(m for m in modalities if m not in maps)]
    for count in range(len(maps), len(names) + 1):
        dims = {m: int(modalities[m]) for m in names[:count]}
        shapes = {m: tuple(int(d) for d in shape) for m, shape in maps.items()}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            fuser = build(dict(dims), dict(shapes))  # type: ignore[arg-type]
        _FuserCheck(fuser, dims, shapes).run()  # type: ignore[arg-type]


class _FuserCheck:
    """The checks of :func:`check_fuser` (and, with map shapes, :func:`check_spatial_fuser`) on one layout."""

    def __init__(
        self, fuser: Fuser, dims: dict[str, int], map_shapes: dict[str, tuple[int, int, int]] | None = None
    ) -> None:
        import torch

        from polyfuse.fusion import Fuser

        assert isinstance(fuser, Fuser), (
            f"build({dims}) returned a {type(fuser).__name__}, not a polyfuse.fusion.Fuser: subclass Fuser"
        )
        self.torch = torch
        self.fuser = fuser
        self.dims = dims
        self.map_shapes = dict(map_shapes or {})
        self.where = f"{type(fuser).__name__} built for {dims}" + (
            f" and maps {self.map_shapes}" if self.map_shapes else ""
        )
        self.batch = len(dims) + 4
        generator = torch.Generator().manual_seed(1)
        self.features = {m: torch.randn(self.batch, d, generator=generator) for m, d in dims.items()}
        self.maps = {m: torch.randn(self.batch, *shape, generator=generator) for m, shape in self.map_shapes.items()}
        self.target = torch.randn(self.batch, fuser.output_dim, generator=generator)
        # Modality i is missing for sample i, and the last sample has none: every modality is
        # both present and missing somewhere in the batch.
        self.present: dict[str, torch.Tensor] = {}
        for i, modality in enumerate(dims):
            mask = torch.ones(self.batch, dtype=torch.bool)
            mask[[i, -1]] = False
            self.present[modality] = mask

    def call(self, features: Any, present: Any = None, maps: Any = None) -> torch.Tensor:
        """The fuser's output; a spatial fuser gets the maps of the modalities in ``features``."""
        if not self.map_shapes:
            return self.fuser(features, present)
        if maps is None:
            maps = {m: x for m, x in self.maps.items() if m in features}
        return self.fuser(features, present, maps=maps)

    def run(self) -> None:
        self.declared_layout()
        self.output_shape()
        self.rejects_bad_inputs()
        self.gradients_reach_parameters()
        self.fuser.eval()  # dropout would count as dependence below
        self.present_modalities_matter()
        self.maps_matter()
        for modality in self.dims:
            for garbage in _GARBAGE:
                self.missing_rows_are_ignored(modality, garbage)
        self.absent_equals_all_missing()

    def declared_layout(self) -> None:
        assert self.fuser.input_dims == self.dims and list(self.fuser.modalities) == list(self.dims), (
            f"{self.where}: declares input_dims={self.fuser.input_dims}; pass the input_dims the "
            "factory receives to super().__init__(input_dims, output_dim) unchanged"
        )
        declared = dict(getattr(self.fuser, "map_shapes", {}) or {})
        assert declared == self.map_shapes, (
            f"{self.where}: declares map_shapes={declared}; pass the map_shapes the factory receives to "
            "super().__init__(input_dims, output_dim, map_shapes) unchanged (vector fusers: none)"
        )

    def output_shape(self) -> None:
        out = self.call(self.features)
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
        cases: list[tuple[str, Any, Any]] = [(what, features, None) for what, features in bad.items()]
        for modality, fmap in self.maps.items():
            _, height, width_ = fmap.shape[1:]
            cases += [
                (f"a feature map of {modality!r} one row too tall",
                 self.features, {**self.maps, modality: self.torch.zeros(self.batch, fmap.shape[1], height + 1, width_)}),
                (f"the features of {modality!r} without its feature map",
                 self.features, {m: x for m, x in self.maps.items() if m != modality}),
            ]
        if self.map_shapes:
            vector_only = next((m for m in self.dims if m not in self.map_shapes), None)
            if vector_only is not None:
                cases.append((f"a feature map of {vector_only!r}, whose map the fuser does not consume",
                              self.features, {**self.maps, vector_only: next(iter(self.maps.values()))}))
        for what, features, maps in cases:
            try:
                self.call(features, None, maps)
            except ValueError:
                continue
            except Exception as error:
                raise AssertionError(
                    f"{self.where}: {what} raised {type(error).__name__} instead of a ValueError naming "
                    "the modality; start forward with self.batch_layout(features, present), "
                    "self.masked_inputs(features, present) or self.spatial_inputs(features, present, maps), "
                    "which validate the inputs"
                ) from error
            raise AssertionError(
                f"{self.where}: {what} was accepted silently; start forward with "
                "self.batch_layout(features, present), self.masked_inputs(features, present) or "
                "self.spatial_inputs(features, present, maps)"
            )

    def gradients_reach_parameters(self) -> None:
        """Each parameter must learn with all modalities present or with some missing (placeholders)."""
        reached: set[str] = set()
        for present in (None, self.present):
            self.fuser.zero_grad(set_to_none=True)
            out = self.call(self.features, present)
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
        reference = self.call(self.features, self.present)
        generator = self.torch.Generator().manual_seed(2)
        for modality, x in self.features.items():
            changed = {**self.features, modality: x + self.torch.randn(x.shape, generator=generator)}
            maps = dict(self.maps)
            if modality in maps:  # a spatial modality is its vector and its map: either may carry it
                maps[modality] = maps[modality] + self.torch.randn(maps[modality].shape, generator=generator)
            out = self.call(changed, self.present, maps)
            rows = self.present[modality]
            assert not self.torch.allclose(out[rows], reference[rows]), (
                f"{self.where}: the output does not depend on {modality!r} even for samples that have it; "
                "every modality's features must reach the output"
            )

    def maps_matter(self) -> None:
        """A fuser that consumes maps must read them, not only the pooled vectors."""
        if not self.map_shapes:
            return
        reference = self.call(self.features, self.present)
        generator = self.torch.Generator().manual_seed(3)
        for modality, fmap in self.maps.items():
            maps = {**self.maps, modality: fmap + self.torch.randn(fmap.shape, generator=generator)}
            out = self.call(self.features, self.present, maps)
            rows = self.present[modality]
            assert not self.torch.allclose(out[rows], reference[rows]), (
                f"{self.where}: the output does not depend on the feature map of {modality!r}; a fuser whose "
                "map_shapes names a modality must read that map"
            )

    def missing_rows_are_ignored(self, modality: str, garbage: str) -> None:
        torch = self.torch
        missing = ~self.present[modality]
        reference = self.call(self.features, self.present).detach()
        x = self.features[modality]
        fill = torch.full_like(x, float("nan")) if garbage == "nan" else 100 * torch.randn_like(x)
        changed = {m: v.clone().requires_grad_() for m, v in self.features.items()}
        changed[modality] = torch.where(missing[:, None], fill, x).requires_grad_()
        maps = {m: v.clone().requires_grad_() for m, v in self.maps.items()}
        if modality in maps:
            fmap = self.maps[modality]
            map_fill = torch.full_like(fmap, float("nan")) if garbage == "nan" else 100 * torch.randn_like(fmap)
            maps[modality] = torch.where(missing[:, None, None, None], map_fill, fmap).requires_grad_()
        self.fuser.zero_grad(set_to_none=True)
        out = self.call(changed, self.present, maps)
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
        inputs = [(name, "features", tensor) for name, tensor in changed.items()]
        inputs += [(name, "feature map", tensor) for name, tensor in maps.items()]
        for name, what_input, tensor in inputs:
            grad = tensor.grad
            if grad is None:
                continue
            hidden = ~self.present[name]
            assert bool(torch.isfinite(grad).all()) and not bool(grad[hidden].any()), (
                f"{self.where}: a gradient flows back into the {name!r} {what_input} of samples missing "
                f"{name!r}; {_SELECT}"
            )
        self.fuser.zero_grad(set_to_none=True)

    def absent_equals_all_missing(self) -> None:
        if len(self.dims) < 2:
            return  # dropping the only modality leaves nothing to fuse
        torch = self.torch
        for modality in self.dims:
            rest = {m: x for m, x in self.features.items() if m != modality}
            absent = self.call(rest)
            masked = self.call(self.features, {modality: torch.zeros(self.batch, dtype=torch.bool)})
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


def check_spatial_encoder(encoder: Encoder, samples: Any, *, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """:func:`check_encoder` plus the optional spatial API spatial fusers rely on.

    Checked: ``feature_map_shape`` is a ``(C, H, W)`` of positive ints;
    ``forward_spatial(samples)`` returns ``(pooled, map)`` with ``pooled``
    equal to ``forward(samples)`` and ``map`` a finite float
    ``(B, *feature_map_shape)`` tensor; sample ``i``'s map alone equals row
    ``i`` (eval mode); a trainable encoder's map carries gradients.
    """
    import torch

    check_encoder(encoder, samples, rtol=rtol, atol=atol)
    name = type(encoder).__name__
    shape = getattr(encoder, "feature_map_shape", None)
    assert shape is not None and len(tuple(shape)) == 3 and all(int(d) > 0 for d in shape), (
        f"{name}: feature_map_shape is {shape!r}; an encoder offering maps sets it to the map's (C, H, W)"
    )
    assert callable(getattr(encoder, "forward_spatial", None)), f"{name}: has no forward_spatial(batch) method"
    was_training = encoder.training
    try:
        encoder.eval()
        with torch.no_grad():
            result = encoder.forward_spatial(samples)
            assert isinstance(result, tuple) and len(result) == 2, (
                f"{name}: forward_spatial returned {_describe(result)}; return (pooled (B, D), map (B, C, H, W))"
            )
            pooled, fmap = result
            expected = (len(samples), *(int(d) for d in shape))
            assert isinstance(fmap, torch.Tensor) and tuple(fmap.shape) == expected, (
                f"{name}: forward_spatial's map has {_describe(fmap)} but feature_map_shape={tuple(shape)}, "
                f"so {expected} was expected"
            )
            assert fmap.is_floating_point() and bool(torch.isfinite(fmap).all()), (
                f"{name}: the feature map is not a finite float tensor"
            )
            assert torch.allclose(pooled, encoder(samples), rtol=rtol, atol=atol), (
                f"{name}: forward_spatial's pooled vector differs from forward's; both must be the same features"
            )
            for i in range(len(samples)):
                alone = encoder.forward_spatial(samples[i : i + 1])[1][0]
                assert torch.allclose(alone, fmap[i], rtol=rtol, atol=atol), (
                    f"{name}: sample {i}'s feature map alone differs from row {i} of the batch's"
                )
        if encoder.trainable:
            encoder.train()
            encoder.zero_grad(set_to_none=True)
            _, fmap = encoder.forward_spatial(samples)
            assert fmap.requires_grad, f"{name}: is trainable but its feature map records no graph"
            fmap.square().sum().backward()
            reached = [n for n, p in encoder.named_parameters() if p.grad is not None and bool(p.grad.any())]
            assert reached, f"{name}: no gradient from the feature map reaches any parameter"
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
