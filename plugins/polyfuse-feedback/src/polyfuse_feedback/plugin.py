"""Registration of the ``preference-model`` reward, the feedback sources and ``polyfuse feedback``. No torch here.

``polyfuse --help`` and ``polyfuse plugins`` import this module, so the heavy
code (:mod:`polyfuse_feedback.model`) is imported inside the factories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from polyfuse import ComponentConfig, hookimpl
from polyfuse.config import ComponentRef, ModalityConfig
from polyfuse.errors import PolyfuseError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from polyfuse_feedback.commands import register_commands as register_feedback_commands
from polyfuse_feedback.human import HumanConfig, build_human
from polyfuse_feedback.judges import register_judges

if TYPE_CHECKING:
    from polyfuse.rewards import RunContext

    from polyfuse_feedback.model import PreferenceModel
    from polyfuse_feedback.routing import Router
    from polyfuse_feedback.synthetic import SyntheticAnnotator


def describe(error: ValidationError) -> str:
    """A nested component's params problems on one line: ``params.<field>: <message>; ...``."""
    return "; ".join(f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())


class SyntheticConfig(ComponentConfig):
    """Params of the ``synthetic`` annotator: Boltzmann-rational in the segments' true (env) returns."""

    temperature: float = Field(
        0.0, ge=0, description="Boltzmann temperature: P(second preferred) = sigmoid((R2 - R1) / T); 0: perfectly "
        "rational (always prefers the higher return)."
    )
    error_rate: float = Field(
        0.0, ge=0, le=1, description="Probability that a strict preference is flipped after it is drawn (a "
        "careless annotator's mistakes); ties are not flipped."
    )
    tie_margin: float = Field(
        0.0, ge=0, description="Returns closer than this (or equal) are answered as a tie (0.5)."
    )
    rating_range: tuple[float, float] = Field(
        (0.0, 1.0), description="Returns rated lowest and highest; a rating query's answer places the segment's "
        "return on the scale between them (good/bad: above or below the middle)."
    )
    seed: int | None = Field(None, description="Seed of the annotator's random stream; null: derived from the run.")

    @field_validator("rating_range")
    @classmethod
    def _increasing(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"rating_range must be [lowest, highest] with lowest < highest, got {list(value)}")
        return value


class FeedbackRef(BaseModel):
    """A feedback source by registry name, with its params, the weight of its labels and its share of queries."""

    model_config = ConfigDict(extra="forbid")
    name: str = "synthetic"
    params: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(1.0, gt=0, description="Scales this source's labels in the reward model's loss (with "
                          "each label's own confidence).")
    share: float | None = Field(
        None, gt=0, lt=1, description="With several sources: this share of each round's queries, those the reward "
        "model is least sure of, goes to this source; the one source without a share answers the rest."
    )

    @model_validator(mode="after")
    def _installed(self, info: ValidationInfo) -> FeedbackRef:
        """Checked against the registry when a pipeline config is validated (``polyfuse validate``, ``run``)."""
        registry = (info.context or {}).get("registry")
        if registry is None:
            return self
        try:
            component = registry.get("feedback", self.name)
        except PolyfuseError as exc:
            raise ValueError(str(exc)) from None
        try:
            self.params = component.config.model_validate(self.params).model_dump(mode="json")
        except ValidationError as exc:
            raise ValueError(f"feedback source {self.name!r}: {describe(exc)}") from None
        return self


class StoreConfig(BaseModel):
    """Where queries and labels are kept."""

    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(None, description="SQLAlchemy URL of the label database (e.g. postgresql+psycopg://"
                            "user@host/db), or the address of the annotation app (http://HOST:PORT) when the run "
                            "cannot reach its database; null: a SQLite file feedback.sqlite in the run directory.")
    token: str | None = Field(None, description="With the app's address as url: a trainer token of the project "
                              "(better kept in the POLYFUSE_FEEDBACK_TOKEN environment variable than in a config).")
    project: str | None = Field(None, description="Project the run's queries and labels belong to; null: the run "
                                "directory's name. A resumed run (or a new one naming the project) reads its labels; with max_labels 0 a "
                                "named project's labels are all it learns from (e.g. served-RUN, those of a deployment).")


class PseudoLabelsConfig(BaseModel):
    """Semi-supervised reward learning (SURF, Park et al. 2022): confident predictions on unlabelled pairs as labels."""

    model_config = ConfigDict(extra="forbid")
    threshold: float = Field(
        0.99, gt=0.5, lt=1, description="An unlabelled pair is pseudo-labelled when a member's P(one side "
        "preferred) reaches this (SURF's tau); below it the pair adds nothing to that member's loss."
    )
    weight: float = Field(1.0, gt=0, description="Weight of the pseudo-label loss next to the labels' (SURF's "
                          "lambda).")
    ratio: int = Field(4, gt=0, description="Unlabelled pairs drawn from the pool per labelled pair in each "
                       "batch (SURF's mu).")


class NeighbourConsistencyConfig(BaseModel):
    """Semi-supervised reward learning over a nearest-neighbour graph of the labelled and the pool's observations."""

    model_config = ConfigDict(extra="forbid")
    modality: str = Field(description="The observation modality whose raw values define neighbours (an image, a grid "
                          "or a vector; Euclidean distance), e.g. image.")
    neighbours: int = Field(3, gt=0, description="Nearest other values of the modality a step may be swapped with.")
    weight: float = Field(1.0, gt=0, description="Weight of the squared reward gap next to the labels' loss.")
    ratio: int = Field(1, gt=0, description="Pool steps drawn per labelled row in each batch.")


class PreferenceModelConfig(ComponentConfig):
    """Params of the ``preference-model`` reward."""

    feedback: list[FeedbackRef] = Field(
        default_factory=lambda: [FeedbackRef()], description="The feedback source that answers queries, or a list "
        "of sources mixed by share (see FeedbackRef.share) and weighted by weight."
    )
    store: StoreConfig = Field(default_factory=StoreConfig, description="The label database.")
    modalities: dict[str, ModalityConfig] | None = Field(
        None, description="The reward network's own encoders, written as the pipeline's modalities; null: the "
        "pipeline's (frozen encoders configured alike are shared with the policy either way)."
    )
    fuser: ComponentRef | None = Field(None, description="The reward network's own fuser; null: the pipeline's.")
    ensemble_size: int = Field(3, gt=0, le=16, description="Members of the ensemble.")
    bootstrap: bool = Field(True, description="Each member trains on its own Poisson bootstrap of the labels; false: "
                            "every member on every label, members differing by initialisation (as PEBBLE does).")
    hidden_sizes: list[int] = Field(default_factory=lambda: [64], description="Hidden layers of each member's head.")
    head: Literal["per-action", "concat", "named"] = Field(
        "per-action", description="per-action: the head outputs one reward per action and reads the taken one (as "
        "a Q-network); concat: the head reads (features, one-hot action) and outputs one reward; named: each "
        "action's weights come from its name, embedded by the encoder of the text observation action_text."
    )
    action_text: str | None = Field(None, description="With head: named, the text observation (e.g. a question) "
                                    "whose modality's encoder embeds the environment's action names.")
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    margin: float = Field(0.0, ge=0, description="Bradley-Terry margin: a strict preference asks the preferred "
                          "segment's predicted return to exceed the other's by this much (ties unaffected).")
    batch_size: int = Field(64, gt=0, description="Labels per gradient step.")
    gradient_steps: int = Field(50, ge=0, description="Gradient steps per member per update().")
    max_labels: int = Field(1000, ge=0, description="Query budget of the run (held-out labels included).")
    initial_share: float = Field(0.1, ge=0, le=1, description="Share of max_labels asked at the first update.")
    schedule: Literal["constant", "hyperbolic", "inverse-quadratic"] = Field(
        "hyperbolic", description="How the rest of the budget is spread over the following updates: evenly, or "
        "front-loaded (weight 1/(1+t) or 1/(1+t)^2, t from 0 to 1)."
    )
    query_until: float = Field(1.0, gt=0, le=1, description="Share of the run's reward updates over which the "
                               "budget is spent (0.5: all labels asked in the first half).")
    rating_share: float = Field(0.0, ge=0, le=1, description="Share of queries that ask for a rating of one segment "
                                "instead of a comparison of two.")
    rating_scale: int = Field(5, ge=2, le=10, description="Levels of a rating (2: good/bad).")
    selection: Literal["random", "disagreement", "entropy"] = Field(
        "random", description="random segments from the pool, or among random candidates those the ensemble "
        "disagrees on most (disagreement: 0.52 against random's 0.65 held-out success on DigitsVQA at 40,000 "
        "steps, one seed), or those whose outcome the ensemble's mean is least sure of (entropy: of which answer "
        "is best in a same-context pair's context, of which segment is preferred in a pair of pool segments; "
        "ratings stay random; DigitsVQA's example, 5 seeds: 0.921 with 2 candidates against random's 0.911)."
    )
    candidates_per_query: int = Field(
        8, gt=0, description="With selection: disagreement or entropy, random candidates drawn per query asked."
    )
    pairing: Literal["random", "same-context"] = Field(
        "random", description="What a comparison compares: two segments drawn from the pool (random), or a "
        "one-step segment and another action in the same context (same-context: the same image and question, "
        "two answers; the other answer's outcome from the environment restored to that context, so the "
        "environment must be able to replay one)."
    )
    pair_answers: Literal["taken", "top-two"] = Field(
        "taken", description="With pairing: same-context, the two actions compared: the one the policy took and "
        "another (taken), or the two the ensemble ranks highest (top-two: the policy's exploration does not spend "
        "labels; before the first labels, the taken one and another)."
    )
    alternative_epsilon: float = Field(
        0.1, ge=0, le=1, description="With pairing: same-context, the share of comparisons whose other action is "
        "drawn uniformly; the rest take the action the ensemble ranks highest after the first one (uniform "
        "before the first labels)."
    )
    alternative_temperature: float = Field(
        0.0, ge=0, description="With pairing: same-context, the other action (when not uniform) is drawn from the "
        "softmax of the ensemble's mean rewards at this temperature, in Bradley-Terry units (a reward 1 higher: "
        "odds of e to 1 that the annotator prefers it); 0: the one it ranks highest. In between, answers the "
        "model already knows are poor are rarely asked about and plausible ones often."
    )
    same_context_share: float = Field(
        1.0, ge=0, le=1, description="With pairing: same-context, the share of comparisons that are same-context "
        "pairs; the rest pair two pool segments, as pairing: random does (0.5: half of each: a same-context pair "
        "with a uniform other action shows answers the policy never gives, a random pair compares two contexts)."
    )
    heldout_fraction: float = Field(0.2, ge=0, lt=1, description="Share of labels kept out of training, to measure "
                                    "the model's pairwise accuracy.")
    pool_size: int = Field(4096, gt=1, description="Most recent segments kept to form queries from.")
    fragment_length: int = Field(0, ge=0, description="Segment length in steps; 0: whole episodes.")
    normalize: bool = Field(True, description="Scale scores so that segment returns over the pool have unit "
                            "variance (not centred: with episodes of different lengths the per-step level is part "
                            "of what the labels taught).")
    init_from: str | None = Field(
        None, description="Start from a saved reward model: a folder written by `polyfuse feedback train-reward` or "
        "the output_dir of a preference-model run. With max_labels: 0 the model stays as saved (a fixed reward)."
    )
    uncertainty_penalty: float = Field(
        0.0, ge=0, description="Subtract this many ensemble standard deviations from each score (pessimism where the "
        "members disagree: actions the labels never showed). 0: the ensemble mean alone."
    )

    pseudo_labels: PseudoLabelsConfig | None = Field(
        None, description="Also train each member on unlabelled pairs of pool segments that it ranks confidently, "
        "its own prediction as a hard label, recomputed at every gradient step and never stored (SURF); "
        "e.g. {threshold: 0.99, weight: 1.0, ratio: 4}. null: labels only."
    )
    neighbour_consistency: NeighbourConsistencyConfig | None = Field(
        None, description="Also pull each member's per-action rewards of labelled and pool steps towards those of the "
        "same steps with one modality swapped for a near neighbour's value (label propagation over a k-nearest-"
        "neighbour graph of the labelled steps and the pool's, rebuilt at each update); e.g. {modality: image, "
        "neighbours: 3, weight: 1.0}. null: labels only."
    )

    @model_validator(mode="after")
    def _named_head_has_its_text(self) -> PreferenceModelConfig:
        if (self.head == "named") != (self.action_text is not None):
            raise ValueError("head: named and action_text go together: head: named embeds the action names with the "
                             "encoder of the text observation action_text (e.g. action_text: question)")
        return self

    @model_validator(mode="after")
    def _installed_components(self, info: ValidationInfo) -> PreferenceModelConfig:
        """The reward network's own encoders and fuser, checked against the registry with the pipeline config."""
        registry = (info.context or {}).get("registry")
        refs = [(f"modalities.{m}.encoder", "encoders", c.encoder) for m, c in (self.modalities or {}).items()]
        refs += [("fuser", "fusers", self.fuser)] if self.fuser is not None else []
        for path, kind, ref in refs if registry is not None else []:
            try:
                ref.params = registry.get(kind, ref.name).config.model_validate(ref.params).model_dump(mode="json")
            except PolyfuseError as exc:
                raise ValueError(f"{path}: {exc}") from None
            except ValidationError as exc:
                raise ValueError(f"{path}: {describe(exc)}") from None
        return self

    @field_validator("feedback", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """One source may be written as a mapping; several as a list."""
        return [value] if isinstance(value, (dict, FeedbackRef)) else value

    @field_validator("feedback")
    @classmethod
    def _one_default_source(cls, sources: list[FeedbackRef]) -> list[FeedbackRef]:
        defaults = [ref.name for ref in sources if ref.share is None]
        if len(defaults) != 1:
            raise ValueError(f"exactly one feedback source must have no share (it answers the queries the shared "
                             f"ones do not take); found {len(defaults)}: give the others a share, e.g. share: 0.1")
        if sum(ref.share or 0.0 for ref in sources) >= 1:
            raise ValueError("the feedback sources' shares must add up to less than 1")
        names = [ref.name for ref in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"a feedback source is listed twice: {names}")
        return sources


def build_synthetic(config: SyntheticConfig, seed: int = 0) -> SyntheticAnnotator:
    from polyfuse_feedback.synthetic import SyntheticAnnotator

    return SyntheticAnnotator(config, seed if config.seed is None else config.seed)


def build_preference_model(config: PreferenceModelConfig, context: RunContext) -> PreferenceModel:
    from polyfuse_feedback.model import PreferenceModel

    # a project named in the config may hold labels already (a served run's): read them even when asking nothing
    reads = config.max_labels or config.store.project is not None
    router = make_router(config, context) if reads and context.asks else None
    try:
        return PreferenceModel(config, context, router)
    except BaseException:
        if router is not None:  # its worker thread, connections and sources would outlive the failed build
            router.close()
        raise


def make_router(config: PreferenceModelConfig, context: RunContext) -> Router:
    """The run's feedback sources in front of its label store (SQLite in the run directory unless a URL is given)."""
    from polyfuse.registry import default_registry

    from polyfuse_feedback.routing import Route, Router
    from polyfuse_feedback.store import LabelStore

    registry = context.registry or default_registry()
    routes = [Route(ref.name, registry.create("feedback", ref.name, ref.params, seed=context.seed + 1 + n),
                    ref.weight, ref.share) for n, ref in enumerate(config.feedback)]
    from polyfuse_feedback.rendering import describe_observations

    display = {"env": context.env_id, "actions": list(context.action_names or ()),
               "observations": describe_observations(context.observation_space, context.env_id)}
    project = config.store.project or context.run_dir.resolve().name
    url = config.store.url
    if url and url.startswith(("http://", "https://")):
        from polyfuse_feedback.remote import RemoteLabelStore

        store: Any = RemoteLabelStore(url, project, config.store.token)
    else:
        store = LabelStore(url) if url else LabelStore.in_run(context.run_dir)
    return Router(store, project, routes, display)


@hookimpl
def register_rewards(register: Callable[..., Any]) -> None:
    register("preference-model", build_preference_model, config=PreferenceModelConfig,
             description="Reward model learned from comparisons and ratings (Bradley-Terry/ordinal ensemble, "
             "active queries, label store)")


@hookimpl
def register_feedback(register: Callable[..., Any]) -> None:
    register("synthetic", build_synthetic, config=SyntheticConfig,
             description="Simulated annotator: Boltzmann-rational in the true return, with an error rate")
    register("human", build_human, config=HumanConfig,
             description="People answering in the annotation web app (polyfuse feedback serve), via the label store")
    register_judges(register)


@hookimpl
def register_commands(register: Callable[..., Any]) -> None:
    register_feedback_commands(register)
