"""Registration only: no torch import here, so `polyfuse --help` stays fast."""

from pydantic import Field

import polyfuse


class MaxPoolConfig(polyfuse.ComponentConfig):
    hidden_dim: int = Field(128, gt=0, description="Width every modality is projected to before the max")


def build_max_pool(config: MaxPoolConfig, input_dims):
    from polyfuse_maxpool.fuser import MaxPoolFuser

    return MaxPoolFuser(input_dims, hidden_dim=config.hidden_dim)


@polyfuse.hookimpl
def register_fusers(register):
    register("max-pool", build_max_pool, config=MaxPoolConfig,
             description="Element-wise max over projected modalities")
