"""The core's rewards, registered through the same hook as any plugin's."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from polyfuse import ComponentConfig, hookimpl


class EnvRewardConfig(ComponentConfig):
    scale: float = Field(1.0, description="Multiplier applied to the environment's reward")


def build_env_reward(config: EnvRewardConfig, context: Any = None) -> Any:
    from polyfuse.rewards import EnvReward

    return EnvReward(scale=config.scale)


@hookimpl
def register_rewards(register):  # type: ignore[no-untyped-def]
    register("env", build_env_reward, config=EnvRewardConfig, description="The environment's own reward")
