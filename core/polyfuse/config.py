"""Pipeline configs: the YAML a user writes, validated against the installed components.

Validation reports every problem at once, each with its full path
(``fuser.params.hidden_dim: Input should be greater than 0``), so a user
fixes a config in one pass instead of one error per run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from polyfuse.components import Kind
from polyfuse.errors import ConfigError, PolyfuseError, UnknownComponentError
from polyfuse.overrides import apply_overrides, describe
from polyfuse.registry import Registry, default_registry
from polyfuse.yaml_safety import YamlProblem, decode, echo, load_yaml, shorten

KIND_MARKER = "x-polyfuse-kind"
MAX_EPISODES = 1_000_000
"""Evaluation and warm-start episodes past this would run for days, holding every episode's record."""
MAX_PROBLEMS = 50
"""Problems listed in one message; past this, their count."""
MAX_NAME_LENGTH = 200
"""Longer component names are refused unread: no registry name is near that long."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentRef(StrictModel):
    """A component chosen by registry name; ``fuser: gated`` is shorthand for ``{name: gated}``."""

    name: str = Field(description="Registry name (see `polyfuse list`)")
    params: dict[str, Any] = Field(default_factory=dict, description="The component's own config")

    @model_validator(mode="before")
    @classmethod
    def _accept_bare_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


def component_field(kind: Kind, default: str | None = None, description: str = "", optional: bool = False) -> Any:
    """A ComponentRef field tagged with its kind, so the JSON schema can list the installed choices."""
    extra = {KIND_MARKER: kind.value}
    if optional:
        return Field(None, description=description, json_schema_extra=extra)
    if default is None:
        return Field(description=description, json_schema_extra=extra)
    return Field(default_factory=lambda: ComponentRef(name=default), description=description, json_schema_extra=extra)


class ModalityConfig(StrictModel):
    """One modality: which observation key to read and which encoder turns it into features."""

    key: str | None = Field(None, description="Observation key to read; defaults to the modality's name")
    encoder: ComponentRef = component_field(Kind.ENCODER, description="Encoder for this modality")


class RayConfig(StrictModel):
    """Where env.vectorization: ray runs its env runners (docs/ray.md)."""

    address: str | None = Field(
        None,
        description="null: start a local Ray instance for the run (shut down at its end); 'auto' or 'HOST:PORT' of the "
        "head node: join that running cluster, whose nodes have polyfuse and the pipeline's plugins installed",
    )
    object_store_mb: int = Field(
        256, ge=80,
        description="Object store of a local instance (rollouts and weights pass through it; Ray spills to "
        "disk beyond it; Ray's minimum is about 75 MiB); a cluster's is set where it was started",
    )

    @field_validator("address")
    @classmethod
    def _address_form(cls, address: str | None) -> str | None:
        host, _, port = (address or "").removeprefix("ray://").rpartition(":")
        if address is not None and address != "auto" and not (host and port.isdigit()):
            raise ValueError(f"{address!r} is not a Ray cluster's address: 'auto' (the cluster `ray start` made on "
                             "this machine), 'HOST:PORT' of its head node (ray://HOST:PORT through Ray Client), or "
                             "null for a local instance")
        return address


class EnvConfig(StrictModel):
    """A gymnasium environment with a Dict observation space, vectorised."""

    id: str = Field(description="gymnasium environment id, e.g. polyfuse/DigitsVQA-v0")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for gymnasium.make")
    num_envs: int = Field(4, gt=0, description="Environments stepped in parallel")
    vectorization: Literal["sync", "async", "native", "pipelined", "ray"] = Field(
        "sync",
        description="gymnasium's SyncVectorEnv (one process), AsyncVectorEnv (one process per env), "
        "'native': the environment's own batched implementation (gymnasium vector_entry_point; DigitsVQA has one), "
        "'pipelined' (on-policy optimizers: ppo, a2c): env.workers processes step the environments and act "
        "with a copy of the policy while the learner updates, the policy they act with one update old "
        "(docs/pipelined-sampling.md), or 'ray': the same with env.workers Ray actors as the env runners, "
        "locally or on a cluster (env.ray; pip install 'polyfuse[ray]'; docs/ray.md)",
    )
    workers: int | None = Field(
        None, gt=0,
        description="Env runners of env.vectorization: pipelined (processes) or ray (actors), each stepping its "
        "share of num_envs; with --nproc N (ray), the total over the ranks, a multiple of N; null: one per core "
        "the learner(s) leave free (at least one per learner)",
    )
    ray: RayConfig | None = Field(
        None, description="env.vectorization: ray only: where the runners run; null: a local Ray instance"
    )

    @model_validator(mode="after")
    def _workers_pipelined(self) -> EnvConfig:
        if self.workers is not None and self.vectorization not in ("pipelined", "ray"):
            raise ValueError("workers applies to vectorization: pipelined or ray only; remove env.workers or set "
                             "env.vectorization: pipelined")
        if self.workers is not None and self.workers > self.num_envs:
            raise ValueError(f"workers ({self.workers}) exceeds num_envs ({self.num_envs}): each worker steps at "
                             "least one environment")
        if self.ray is not None and self.vectorization != "ray":
            raise ValueError("ray applies to vectorization: ray only; remove env.ray or set env.vectorization: ray")
        return self


class EvalEnvConfig(StrictModel):
    """One environment of an evaluation suite (``trainer.eval_suite``)."""

    id: str = Field(description="gymnasium environment id, e.g. BabyAI-GoToLocalS8N7-v0")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for gymnasium.make")
    name: str | None = Field(
        None, min_length=1, max_length=MAX_NAME_LENGTH,
        description="Name in metrics (eval/suite/NAME/...); defaults to the id after its last '/' or ':'",
    )

    @field_validator("name")
    @classmethod
    def _name_fits_a_metrics_key(cls, name: str | None) -> str | None:
        if name is not None and ("/" in name or any(c.isspace() for c in name)):
            raise ValueError(f"{name!r} has a '/' or a space; it becomes a part of metrics keys (eval/suite/NAME/...)")
        return name

    @property
    def label(self) -> str:
        return self.name or env_label(self.id)


def env_label(env_id: str) -> str:
    """An environment's name in metrics keys: its id after the last '/' or ':' (``DigitsVQA-v0``)."""
    return env_id.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


class WarmStartConfig(StrictModel):
    """Supervised pre-training on labelled data before RL (behaviour cloning)."""

    episodes: int = Field(
        gt=0, le=MAX_EPISODES, description="Labelled episodes to collect from the environment's expert"
    )
    epochs: int = Field(5, gt=0, description="Passes over the labelled data")
    batch_size: int = Field(64, gt=0, le=1_000_000)
    learning_rate: float = Field(1e-3, gt=0)


class PromotionConfig(StrictModel):
    """The gate at the end of a run with trainer.continue_from: promote the candidate only if it is not worse.

    Rule: candidate success >= incumbent success - tolerance, both in the primary eval mode (the first of
    trainer.eval_modes), on the same held-out episodes (same seeds).
    """

    promote: bool = Field(
        True, description="Write the promotion pointer (RUN/promoted.json) when the candidate passes; false (or "
        "--no-promote): evaluate both and record the decision without promoting"
    )
    tolerance: float = Field(
        0.0, ge=0.0, le=1.0, description="How much lower the candidate's held-out success may be than the "
        "incumbent's and still be promoted (0: not worse)"
    )


class TrainerConfig(StrictModel):
    """How long to train, how often to evaluate and checkpoint, and where results go."""

    total_steps: int = Field(
        20_000, gt=0, description="The run's budget, counted in budget_unit (environment steps by default)"
    )
    budget_unit: Literal["env_steps", "gradient_steps", "samples"] = Field(
        "env_steps",
        description="What total_steps, eval_every, checkpoint_every and reward_update_every count: environment "
        "steps (summed over the vector envs), gradient steps, or training samples; offline optimizers (dpo) "
        "take no environment steps and need gradient_steps or samples",
    )
    reward_update_every: int = Field(
        1_000, gt=0, description="Steps (in budget_unit) between update() calls of a reward that learns"
    )
    seed: int = Field(
        0, ge=0, lt=2**30, description="Seeds torch, numpy and the environments; same seed, same result"
    )
    eval_every: int = Field(5_000, gt=0, description="Steps (in budget_unit) between held-out evaluations")
    eval_episodes: int = Field(
        200, gt=0, le=MAX_EPISODES, description="Episodes per evaluation (per environment and mode)"
    )
    eval_modes: list[Literal["greedy", "sampled"]] = Field(
        default_factory=lambda: ["greedy", "sampled"], min_length=1, max_length=2,
        description="How held-out episodes choose actions: greedy (the most likely action) and/or sampled (the "
        "policy's distribution; DQN: epsilon-greedy at its current rate). The first is primary: eval/success and "
        "eval/return repeat its figures",
    )
    eval_suite: list[EvalEnvConfig] | None = Field(
        None, min_length=1,
        description="Evaluate on these environments instead of env alone (each on its held-out variant, with "
        "observations the policy can read); reported per environment and as mean and interquartile mean",
    )
    checkpoint_every: int = Field(5_000, gt=0, description="Steps (in budget_unit) between checkpoints")
    output_dir: Path = Field(Path("runs/latest"), description="Where metrics, plots and checkpoints go")
    num_threads: int = Field(1, gt=0, description="torch threads per process (1 is fastest on small CPUs)")
    warm_start: WarmStartConfig | None = Field(None, description="Optional behaviour cloning before RL")
    continue_from: Path | None = Field(
        None, description="A served run's output_dir (or a checkpoint folder, with promotion.promote false: a "
        "promotion points a run's output_dir at the candidate): start from the policy it serves "
        "(its promoted checkpoint, else its newest) with a fresh optimizer state, then evaluate against it and "
        "promote per trainer.promotion. Same modalities, encoders, fuser and action space as that run"
    )
    promotion: PromotionConfig = Field(
        default_factory=PromotionConfig, description="The gate of a run with continue_from"
    )

    @field_validator("eval_modes")
    @classmethod
    def _modes_once(cls, modes: list[str]) -> list[str]:
        if len(set(modes)) != len(modes):
            raise ValueError(f"each mode at most once, got {modes}")
        return modes

    @field_validator("eval_suite")
    @classmethod
    def _names_unique(cls, suite: list[EvalEnvConfig] | None) -> list[EvalEnvConfig] | None:
        labels = [env.label for env in suite or []]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"two suite environments are named {', '.join(repeated)}; give each a distinct name")
        return suite


class FeatureCacheConfig(StrictModel):
    """Features of frozen encoders are computed once: kept in memory and, optionally, on disk."""

    enabled: bool = Field(True, description="Cache the features of frozen encoders")
    memory_items: int = Field(100_000, ge=0, description="Features kept in the in-memory LRU")
    directory: Path | None = Field(None, description="Persistent cache directory shared across runs")


class PipelineConfig(StrictModel):
    """A whole pipeline: environment, per-modality encoders, fuser, reward, RL optimizer, and an optional dataset.

    ``env`` may be left out when the optimizer learns from ``dataset`` alone
    (the pipeline then has no held-out evaluation).
    """

    env: EnvConfig | None = Field(None, description="The environment (required unless a dataset is given)")
    modalities: dict[str, ModalityConfig] = Field(min_length=1, description="Modality name -> encoder")
    fuser: ComponentRef = component_field(Kind.FUSER, description="How modality features are combined")
    reward: ComponentRef = component_field(Kind.REWARD, default="env", description="Where rewards come from")
    optimizer: ComponentRef = component_field(Kind.OPTIMIZER, description="The RL algorithm")
    dataset: ComponentRef | None = component_field(
        Kind.DATASET, optional=True, description="Offline data for optimizers that learn from a dataset (dpo)"
    )
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    feature_cache: FeatureCacheConfig = Field(default_factory=FeatureCacheConfig)

    @field_validator("modalities")
    @classmethod
    def _modality_names_are_plain(cls, value: dict[str, ModalityConfig]) -> dict[str, ModalityConfig]:
        for name in value:
            if not name or not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"modality name {name!r} must be letters, digits, '-' or '_'")
        return value

    @model_validator(mode="after")
    def _has_data(self) -> PipelineConfig:
        if self.env is None and self.dataset is None:
            raise ValueError("env, dataset: a pipeline needs an env, a dataset, or both; add env: {id: ...} "
                             "or dataset: {name: ..., params: {...}}")
        return self

    def component_refs(self) -> list[tuple[str, Kind, ComponentRef]]:
        """Every component reference with its config path and kind."""
        refs = [(f"modalities.{m}.encoder", Kind.ENCODER, cfg.encoder) for m, cfg in self.modalities.items()]
        refs += [
            ("fuser", Kind.FUSER, self.fuser),
            ("reward", Kind.REWARD, self.reward),
            ("optimizer", Kind.OPTIMIZER, self.optimizer),
        ]
        if self.dataset is not None:
            refs.append(("dataset", Kind.DATASET, self.dataset))
        return refs


def format_location(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location)


def _pydantic_problems(error: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False):
        path = format_location(item["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        message = item["msg"]
        value = item.get("input")
        if _non_finite(value):
            message = f"needs a finite number, got {value}"
        elif item["type"] == "value_error" and not item["loc"]:  # a check across fields: it says what to do
            message = str(item.get("ctx", {}).get("error", message))
        elif item["type"] not in {"missing", "extra_forbidden"} and "input" in item:
            message += f" (got {echo(value)})"
        problems.append((path, message))
    return problems


def _non_finite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _non_finite_problems(data: Any, path: str) -> list[tuple[str, str]]:
    """NaN and infinities anywhere in validated settings: no setting means them, and NaN passes every bound."""
    if _non_finite(data):
        return [(path, f"needs a finite number, got {data} (.nan and .inf are not settings)")]
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in _non_finite_problems(value, f"{path}.{key}")]
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in _non_finite_problems(value, f"{path}.{i}")]
    return []


def bounded_problems(problems: list[tuple[str, str]], limit: int = MAX_PROBLEMS) -> list[tuple[str, str]]:
    """Problems cut to a readable size: a 5 MB value is never printed back whole, nor 60,000 problems."""
    unique = sorted({(shorten(path, 200), shorten(message, 500)) for path, message in problems})
    if len(unique) <= limit:
        return unique
    return [*unique[:limit], ("", f"... and {len(unique) - limit} more like these; fix these and validate again")]


def validate_pipeline(data: Any, registry: Registry | None = None, source: str = "config") -> PipelineConfig:
    """Validate a parsed config against the schema and the installed components.

    Every component's ``params`` are replaced by their validated, defaults-filled
    form, so what a run records is exactly what it used.
    """
    registry = registry or default_registry()
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"expected a mapping at the top level, got {type(data).__name__}")])
    problems: list[tuple[str, str]] = []
    try:
        config: PipelineConfig | None = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(exc))
        config = None
    refs = config.component_refs() if config is not None else _parseable_component_refs(data)
    for path, kind, ref in refs:
        if len(ref.name) > MAX_NAME_LENGTH:  # difflib's suggestions would take seconds on a megabyte
            problems.append((f"{path}.name", (f"{echo(ref.name)} is not a {kind.singular} name; "
                                             f"see `polyfuse list {kind.value}`")))
            continue
        try:
            component = registry.get(kind, ref.name)
        except UnknownComponentError as exc:
            problems.append((f"{path}.name", str(exc)))
            continue
        try:
            # the registry in the context lets params that name further components (a reward's feedback
            # sources) check those names and params too
            ref.params = component.config.model_validate(ref.params, context={"registry": registry}).model_dump(
                mode="json")
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, prefix=f"{path}.params"))
        else:
            problems.extend(_non_finite_problems(ref.params, f"{path}.params"))
    if config is not None:
        problems.extend(_non_finite_problems(config.trainer.model_dump(), "trainer"))
    if problems or config is None:
        raise ConfigError(source, bounded_problems(problems))
    return config


def _parseable_component_refs(data: dict[str, Any]) -> list[tuple[str, Kind, ComponentRef]]:
    """The component references that parse on their own, so a structural error elsewhere hides none of them."""
    modalities = data.get("modalities")
    candidates = [(f"modalities.{name}.encoder", Kind.ENCODER, modality.get("encoder"))
                  for name, modality in (modalities.items() if isinstance(modalities, dict) else [])
                  if isinstance(modality, dict)]
    candidates += [("fuser", Kind.FUSER, data.get("fuser")), ("reward", Kind.REWARD, data.get("reward", "env")),
                   ("optimizer", Kind.OPTIMIZER, data.get("optimizer"))]
    if data.get("dataset") is not None:
        candidates.append(("dataset", Kind.DATASET, data["dataset"]))
    refs = []
    for path, kind, value in candidates:
        try:
            refs.append((path, kind, ComponentRef.model_validate(value)))
        except ValidationError:
            continue  # already reported by the structural validation
    return refs


def read_yaml(path: Path) -> Any:
    """Parse a YAML file within bounds (see :mod:`polyfuse.yaml_safety`), turning every failure into a user error."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PolyfuseError(f"config file not found: {shorten(str(path))}") from None
    except IsADirectoryError:
        raise PolyfuseError(f"config {shorten(str(path))} is a folder; give the path of a YAML file") from None
    except OSError as exc:
        raise PolyfuseError(f"cannot read config {shorten(str(path))}: {exc.strerror}") from None
    return parse_yaml(raw, str(path))


def parse_yaml(raw: bytes | str, source: str) -> Any:
    """Parse config text; ``source`` names it in errors."""
    try:
        return load_yaml(decode(raw) if isinstance(raw, bytes) else raw)
    except YamlProblem as exc:
        raise ConfigError(source, [(exc.path, exc.message)]) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        position = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [("", f"invalid YAML{position}: {shorten(problem, 300)}")]) from None


def config_differences(before: Any, after: Any, prefix: str = "") -> list[str]:
    """The dotted paths where two parsed configs differ (a key missing on one side counts)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return [
            path
            for key in sorted(set(before) | set(after))
            for path in config_differences(before.get(key), after.get(key), f"{prefix}{key}.")
        ]
    return [] if before == after else [prefix.rstrip(".")]


def read_pipeline_data(path: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A config file as a mapping, not yet validated, with ``--set`` assignments applied (compare, tune)."""
    data = read_yaml(Path(path))
    if not isinstance(data, dict):
        raise PolyfuseError(f"{path}: expected a pipeline config (a mapping)")
    return apply_overrides(data, overrides)


def load_pipeline(path: str | Path, registry: Registry | None = None, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Read and validate a pipeline config file, with ``--set PATH=VALUE`` assignments applied."""
    data = apply_overrides(read_yaml(Path(path)), overrides)
    return validate_pipeline(data, registry, source=describe(str(path), overrides))


def pipeline_json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """JSON schema of a pipeline config, with each component field listing the installed choices.

    Editors (VS Code's YAML extension and the like) use it for completion and
    inline errors: ``# yaml-language-server: $schema=polyfuse.schema.json``.
    """
    from pydantic.json_schema import models_json_schema

    registry = registry or default_registry()
    components = registry.list()
    refs, top = models_json_schema(
        [(PipelineConfig, "validation")] + [(c.config, "validation") for c in components],
        ref_template="#/$defs/{model}",
    )
    config_refs = {(c.kind, c.name): refs[(c.config, "validation")] for c in components}
    defs = top["$defs"]

    def choices(kind: Kind) -> dict[str, Any]:
        options: list[dict[str, Any]] = []
        for component in registry.list(kind):
            options.append(
                {
                    "type": "object",
                    "title": f"{component.name} ({component.distribution})",
                    "description": component.description,
                    "properties": {
                        "name": {"const": component.name},
                        "params": config_refs[(kind, component.name)],
                    },
                    "required": ["name"],
                    "additionalProperties": False,
                }
            )
            options.append({"const": component.name, "description": component.description})
        return {"anyOf": options} if options else {"not": {}, "description": f"no {kind.value} installed"}

    def replace_marked(node: Any) -> Any:
        if isinstance(node, dict):
            if KIND_MARKER in node:
                kind = Kind(node[KIND_MARKER])
                replaced = {k: v for k, v in node.items() if k in {"description", "title", "default"}}
                return {**replaced, **choices(kind)}
            return {k: replace_marked(v) for k, v in node.items()}
        if isinstance(node, list):
            return [replace_marked(v) for v in node]
        return node

    schema = {**replace_marked(defs[PipelineConfig.__name__]), "$defs": replace_marked(defs)}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "polyfuse pipeline config"
    return schema
