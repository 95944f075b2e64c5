"""Encoders + fuser as one module: raw multimodal observations in, one feature vector out."""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

from polyfuse.components import Kind
from polyfuse.config import ComponentRef, FeatureCacheConfig, PipelineConfig
from polyfuse.declarations import is_spatial, map_problem
from polyfuse.encoding import Encoder
from polyfuse.errors import PolyfuseError
from polyfuse.feature_cache import CachedEncoder, CacheStats, FeatureCache, identity_namespace, shared_store
from polyfuse.fusion import Fuser, PresenceMask
from polyfuse.registry import Registry, default_registry


class MultimodalNetwork(nn.Module):
    """Reads each modality from its observation key, encodes it, and fuses the features.

    A modality whose observation key is absent from a batch is passed to the
    fuser as missing, so a policy keeps working when a sensor drops out.

    With a ``feature_store``, each frozen encoder that names its identity is
    wrapped in a :class:`~polyfuse.feature_cache.CachedEncoder` (kept in
    ``cached_encoders``, outside the module tree, so state dicts are unchanged)
    and computes each distinct sample's features once; ``cache_stats()``
    reports the hits and misses. Trainable encoders are never cached. Each
    encoder's ``modality`` is set to its modality's name, which its data errors quote.

    A spatial fuser (non-empty ``fuser.map_shapes``) also receives the feature
    map of each modality it consumes, from that encoder's ``forward_spatial``
    (one pass gives both the pooled vector and the map; such encoders bypass
    the feature cache).
    """

    def __init__(
        self,
        encoders: Mapping[str, Encoder],
        observation_keys: Mapping[str, str],
        fuser: Fuser,
        feature_store: FeatureCache | None = None,
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict(dict(encoders))
        self.observation_keys = dict(observation_keys)
        self.fuser = fuser
        self.output_dim = fuser.output_dim
        for modality, encoder in self.encoders.items():
            encoder.modality = modality
        self.feature_store = feature_store
        self._cached: dict[str, CachedEncoder] = (
            {
                modality: CachedEncoder(encoder, feature_store)
                for modality, encoder in self.encoders.items()
                if should_cache(encoder)
            }
            if feature_store is not None
            else {}
        )
        self._given: frozenset[str] = frozenset()

    @contextlib.contextmanager
    def given_features(self, modalities: Collection[str]) -> Iterator[None]:
        """Within it, the observations of ``modalities`` are their encoders' features ``(B, output_dim)``, fused as given.

        For an export (``polyfuse export``): a frozen text encoder reads strings, which TorchScript and ONNX
        cannot take, so the exported network takes its features instead.
        """
        unknown = set(modalities) - set(self.encoders)
        if unknown:
            raise ValueError(f"no modality {sorted(unknown)} in this network; it has {list(self.encoders)}")
        previous, self._given = self._given, frozenset(modalities)
        try:
            yield
        finally:
            self._given = previous

    def _encoded(self, modality: str, encoder: Encoder, value: Any) -> torch.Tensor:
        if modality in self._given:
            return value
        return self._cached.get(modality, encoder)(value)

    @property
    def cached_encoders(self) -> dict[str, CachedEncoder]:
        """The cache wrappers by modality (only the frozen encoders that name their identity)."""
        return dict(self._cached)

    def encode(self, observations: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Per-modality features for the modalities present in ``observations``."""
        features = {}
        for modality, encoder in self.encoders.items():
            key = self.observation_keys[modality]
            if key in observations:
                features[modality] = self._encoded(modality, encoder, observations[key])
        return features

    def encode_spatial(self, observations: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``encode``'s features plus the feature maps of the modalities the fuser consumes (those present)."""
        features: dict[str, torch.Tensor] = {}
        maps: dict[str, torch.Tensor] = {}
        for modality, encoder in self.encoders.items():
            key = self.observation_keys[modality]
            if key not in observations:
                continue
            if modality in self.fuser.map_shapes:
                features[modality], maps[modality] = encoder.forward_spatial(observations[key])
            else:
                features[modality] = self._encoded(modality, encoder, observations[key])
        return features, maps

    def forward(self, observations: Mapping[str, Any], present: PresenceMask | None = None) -> torch.Tensor:
        if not self.fuser.map_shapes:
            return self.fuser(self.encode(observations), present)
        features, maps = self.encode_spatial(observations)
        return self.fuser(features, present, maps=maps)

    def cache_stats(self) -> dict[str, int]:
        """Feature-cache counts summed over the cached modalities (``hits``, ``memory_hits``,
        ``disk_hits``, ``misses``, ``corrupt``; all zero without a cache) and per modality
        (``<modality>/hits``, …). Trainable encoders are never cached and never count."""
        totals: dict[str, int] = CacheStats().as_dict()
        per_modality: dict[str, int] = {}
        for modality, cached in self._cached.items():
            for name, value in cached.stats.as_dict().items():
                totals[name] = totals.get(name, 0) + value
                per_modality[f"{modality}/{name}"] = value
        return {**totals, **per_modality}


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def frozen_twin(module: ModuleT) -> tuple[ModuleT, list[str]]:
    """A frozen deep copy of ``module`` (a target or reference network) that shares its frozen encoders.

    Frozen encoders never change, so the copy uses the very same modules and
    feature-cache wrappers: a sentence-transformer is loaded and held once,
    and its cache counts every look-up. Returns the copy and the state-dict
    prefixes of the shared encoders (a checkpoint of the copy may leave them
    out). Switching either network's train/eval mode switches the shared
    encoders too, which frozen encoders, being pure functions, do not notice.
    """
    memo: dict[int, Any] = {}
    prefixes: list[str] = []
    for path, network in module.named_modules():
        if not isinstance(network, MultimodalNetwork):
            continue
        for modality, encoder in network.encoders.items():
            if encoder.trainable:
                continue
            memo[id(encoder)] = encoder
            cached = network.cached_encoders.get(modality)
            if cached is not None:
                memo[id(cached)] = cached
            prefixes.append(f"{path}.encoders.{modality}." if path else f"encoders.{modality}.")
    twin = copy.deepcopy(module, memo)
    twin.requires_grad_(False)
    return twin, prefixes


class ModeSwitch:
    """Switches a module tree between train and eval mode as ``module.train(mode)`` does, several times faster.

    For optimizers that switch every iteration (eval to act, train to learn):
    ``Module.train`` walks the tree through Python attribute machinery, which
    costs more than a small policy's forward pass. Modules that override
    ``train`` (an encoder keeping its frozen parts in eval mode) still get
    their own call; every other module just has its flag set. Build it once
    the tree is complete: modules added later are not switched.
    """

    def __init__(self, module: nn.Module) -> None:
        self._plain: list[nn.Module] = []
        self._custom: list[nn.Module] = []
        pending = [module]
        while pending:
            current = pending.pop()
            if type(current).train is not nn.Module.train:
                self._custom.append(current)
                continue
            self._plain.append(current)
            pending.extend(current.children())

    def __call__(self, mode: bool) -> None:
        for module in self._plain:
            module.__dict__["training"] = mode
        for module in self._custom:
            module.train(mode)


def own_state(module: nn.Module, shared_prefixes: Sequence[str]) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` without the entries under ``shared_prefixes`` (a twin's shared encoders)."""
    return {key: value for key, value in module.state_dict().items() if not _under(key, shared_prefixes)}


def load_own_state(module: nn.Module, state: Mapping[str, torch.Tensor], shared_prefixes: Sequence[str]) -> None:
    """Load what :func:`own_state` saved; the shared entries must be the only ones missing."""
    result = module.load_state_dict(dict(state), strict=False)
    missing = [key for key in result.missing_keys if not _under(key, shared_prefixes)]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"saved state does not match the network: missing {missing}, unexpected {list(result.unexpected_keys)}"
        )


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key.startswith(prefix) for prefix in prefixes)


def should_cache(encoder: Encoder) -> bool:
    """Whether an encoder's features may be cached: frozen, not opted out, and able to name its identity."""
    if encoder.trainable or not getattr(encoder, "cacheable", True):
        return False
    try:
        identity_namespace(encoder)
    except NotImplementedError:
        return False
    return True


def feature_store_for(config: FeatureCacheConfig) -> FeatureCache | None:
    """The process's shared store for these settings, or ``None`` when caching is off."""
    if not config.enabled or (config.memory_items == 0 and config.directory is None):
        return None
    return shared_store(config.memory_items, config.directory)


def build_network(
    config: PipelineConfig,
    observation_space: Any,
    registry: Registry | None = None,
    frozen_encoders: dict[str, Encoder] | None = None,
) -> MultimodalNetwork:
    """Build encoders from ``config.modalities`` and the fuser on their output dims.

    ``observation_space`` is the single-environment gymnasium Dict space; each
    encoder's factory receives the subspace of the key it reads. Frozen
    encoders are cached as ``config.feature_cache`` says. ``frozen_encoders``
    (by :func:`frozen_key`: modality, observation key and encoder config) are
    reused instead of built, and the frozen encoders built here are added to
    it: see :class:`NetworkFactory`.
    """
    registry = registry or default_registry()
    spaces = getattr(observation_space, "spaces", None)
    if spaces is None:
        raise PolyfuseError(
            f"the environment's observation space is {observation_space}; polyfuse needs a gymnasium Dict space "
            "(one entry per modality)"
        )
    shared = frozen_encoders if frozen_encoders is not None else {}
    encoders: dict[str, Encoder] = {}
    keys: dict[str, str] = {}
    for modality, modality_config in config.modalities.items():
        key = modality_config.key or modality
        if key not in spaces:
            raise PolyfuseError(
                f"modalities.{modality}.key: the environment has no observation key {key!r}; "
                f"its keys are {sorted(spaces)}"
            )
        ref = modality_config.encoder
        encoder = shared.get(frozen_key(modality, key, ref))
        if encoder is None:
            encoder = registry.create(Kind.ENCODER, ref.name, ref.params, space=spaces[key])
            encoder.modality = modality
            if not encoder.trainable:
                shared[frozen_key(modality, key, ref)] = encoder
        encoders[modality] = encoder
        keys[modality] = key
    input_dims = {modality: encoder.output_dim for modality, encoder in encoders.items()}
    component = registry.get(Kind.FUSER, config.fuser.name)
    if is_spatial(component.factory):
        fuser_config = component.config.model_validate(config.fuser.params)
        map_shapes = spatial_map_shapes(config, encoders, component.factory, fuser_config)
        fuser = component.build(fuser_config, input_dims=input_dims, map_shapes=map_shapes)
    else:
        fuser = component.build(config.fuser.params, input_dims=input_dims)
    return MultimodalNetwork(encoders, keys, fuser, feature_store=feature_store_for(config.feature_cache))


def feature_map_shape(encoder: Encoder) -> tuple[int, int, int] | None:
    """The ``(C, H, W)`` of an encoder's spatial feature map, or None when it offers none."""
    shape = getattr(encoder, "feature_map_shape", None)
    if shape is None or not callable(getattr(encoder, "forward_spatial", None)):
        return None
    return tuple(int(d) for d in shape)  # type: ignore[return-value]


def spatial_map_shapes(
    config: PipelineConfig, encoders: Mapping[str, Encoder], factory: Any, fuser_config: Any
) -> dict[str, tuple[int, int, int]]:
    """``{modality: (C, H, W)}`` for the maps a spatial fuser consumes; refused as ``polyfuse validate`` does."""
    shapes = {modality: feature_map_shape(encoder) for modality, encoder in encoders.items()}
    offers = {
        modality: (config.modalities[modality].encoder.name, shapes[modality] is not None, "")
        for modality in encoders
    }
    wanted, problem = map_problem(config.fuser.name, factory, fuser_config, offers)
    if problem:
        raise PolyfuseError(f"fuser: {problem}")
    return {modality: shapes[modality] for modality in wanted}  # type: ignore[misc]


def frozen_key(modality: str, key: str, encoder: ComponentRef) -> str:
    """What makes two frozen encoders one: the same modality, observation key, encoder name and params."""
    return json.dumps([modality, key, encoder.name, encoder.params], sort_keys=True, default=str)


class NetworkFactory:
    """Builds a pipeline's encoders + fuser as often as asked: the policy's, a critic's, a reward model's.

    Frozen encoders are pure functions, so every network of a run shares one
    instance of each (one sentence-transformer in memory, however many
    networks read text); trainable encoders and fusers are built anew each
    time. ``networks`` lists what was built (the trainer sums their feature-cache counts).
    """

    def __init__(self, config: PipelineConfig, observation_space: Any, registry: Registry | None = None) -> None:
        self.config = config
        self.observation_space = observation_space
        self.registry = registry or default_registry()
        self.networks: list[MultimodalNetwork] = []
        self._frozen: dict[str, Encoder] = {}

    def __call__(self) -> MultimodalNetwork:
        network = build_network(self.config, self.observation_space, self.registry, self._frozen)
        self.networks.append(network)
        return network

    def variant(self, modalities: Mapping[str, Any] | None = None, fuser: Any = None) -> NetworkFactory:
        """Networks of other registry names over the same observations (a reward model's own encoders or fuser).

        ``modalities`` and ``fuser`` are written as in a pipeline config and replace the pipeline's; frozen
        encoders configured the same way are still shared with every other network of the run, and what the
        variant builds is listed in this factory's ``networks`` (checkpoints, feature-cache counts).
        """
        update: dict[str, Any] = {}
        if modalities is not None:
            update["modalities"] = modalities
        if fuser is not None:
            update["fuser"] = fuser
        config = PipelineConfig.model_validate({**self.config.model_dump(mode="json"), **update})
        child = NetworkFactory(config, self.observation_space, self.registry)
        child.networks, child._frozen = self.networks, self._frozen
        return child
