"""What a registered component is: a name, a kind, a config model and a factory."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict


class Kind(str, Enum):
    """The kinds of component; the value is the CLI spelling, the singular the config key's."""

    ENCODER = "encoders"
    FUSER = "fusers"
    REWARD = "rewards"
    OPTIMIZER = "optimizers"
    DATASET = "datasets"
    FEEDBACK = "feedback"

    @property
    def singular(self) -> str:
        return _SINGULAR[self]

    @property
    def hook_name(self) -> str:
        return _HOOK_NAMES[self]


_SINGULAR = {
    Kind.ENCODER: "encoder",
    Kind.FUSER: "fuser",
    Kind.REWARD: "reward",
    Kind.OPTIMIZER: "optimizer",
    Kind.DATASET: "dataset",
    Kind.FEEDBACK: "feedback",
}
_HOOK_NAMES = {
    Kind.ENCODER: "register_encoders",
    Kind.FUSER: "register_fusers",
    Kind.REWARD: "register_rewards",
    Kind.OPTIMIZER: "register_optimizers",
    Kind.DATASET: "register_datasets",
    Kind.FEEDBACK: "register_feedback",
}


class ComponentConfig(BaseModel):
    """Base class of every component's params model.

    ``extra="forbid"`` turns a misspelt parameter into an error that names it,
    instead of a setting that silently does nothing.
    """

    model_config = ConfigDict(extra="forbid")


NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class InvalidComponentError(ValueError):
    """A plugin tried to register something that is not a valid component."""


@dataclass(frozen=True)
class Component:
    """A registered component: enough to validate its params and build it."""

    kind: Kind
    name: str
    factory: Callable[..., Any]
    config: type[ComponentConfig]
    description: str
    plugin: str
    distribution: str

    def build(self, params: ComponentConfig | dict[str, Any] | None = None, **context: Any) -> Any:
        """Validate ``params`` (unless already a config instance) and call the factory."""
        config = params if isinstance(params, self.config) else self.config.model_validate(params or {})
        return self.factory(config, **context)


def make_component(
    kind: Kind,
    name: Any,
    factory: Any,
    *,
    config: Any,
    description: Any = "",
    plugin: str,
    distribution: str,
) -> Component:
    """Check a registration and turn it into a :class:`Component`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidComponentError(
            f"invalid {kind.singular} name {name!r}: use lowercase letters, digits, '-', '_' and '.'"
        )
    if not callable(factory):
        raise InvalidComponentError(f"{kind.singular} {name!r}: factory {factory!r} is not callable")
    if not (isinstance(config, type) and issubclass(config, BaseModel)):
        raise InvalidComponentError(
            f"{kind.singular} {name!r}: config must be a polyfuse.ComponentConfig subclass, got {config!r}"
        )
    if config.model_config.get("extra") != "forbid":
        raise InvalidComponentError(
            f"{kind.singular} {name!r}: config {config.__name__} must forbid extra fields "
            "(subclass polyfuse.ComponentConfig)"
        )
    if not isinstance(description, str):
        raise InvalidComponentError(f"{kind.singular} {name!r}: description must be a string")
    return Component(
        kind=kind,
        name=name,
        factory=factory,
        config=config,
        description=description.strip().splitlines()[0] if description.strip() else "",
        plugin=plugin,
        distribution=distribution,
    )
