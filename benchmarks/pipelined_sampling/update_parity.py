"""Does polyfuse's PPO compute what Stable-Baselines3's PPO computes? One update each, from the same data.

polyfuse's sync PPO (``configs/babyai-ppo.yaml``) collects rollouts; SB3's PPO
(``sb3_ppo.py``'s features, ``compare.py``'s settings) starts from the same
weights (its first layers' columns permuted: SB3 concatenates the observation
keys sorted, polyfuse in config order), is handed the same rollout in its own
buffer (truncated episodes bootstrapped SB3's way, through the reward) and the
same minibatch order, and both update. Prints, per rollout, the largest
difference of the GAE advantages and returns and of every weight after the
update. Differences at float32 rounding (~1e-7) mean the two compute the same;
SB3's value loss is ``vf_coef * MSE`` where polyfuse's is ``vf_coef * MSE / 2``
(Baselines' and CleanRL's), so parity needs ``--polyfuse-vf-coef 1.0``.

    .venv/bin/python benchmarks/pipelined_sampling/update_parity.py --polyfuse-vf-coef 1.0
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# before sb3_ppo puts benchmarks/rl_vs_sb3 (which has a compare.py of its own) first on the path
from compare import SB3_HPARAMS  # noqa: E402
from sb3_ppo import Features, TextAsBytes, make_env  # noqa: E402
from sb3_baseline import TextEmbedder  # noqa: E402

SB3_ORDER = ["direction", "image", "mission"]  # gymnasium's Dict sorts its keys; SB3 concatenates so


def polyfuse_ppo(vf_coef: float, seed: int) -> tuple[Any, str]:
    """polyfuse's ppo on the benchmark's config, on sync envs, set up as the trainer does; and the env id."""
    from polyfuse.components import Kind
    from polyfuse.config import validate_pipeline
    from polyfuse.envs import make_vector_env
    from polyfuse.network import NetworkFactory
    from polyfuse.registry import default_registry
    from polyfuse.rewards import EnvReward
    from polyfuse.training.api import Budget, Pipeline
    from polyfuse.training.vector_env import TrackedVectorEnv

    registry = default_registry()
    raw = yaml.safe_load((HERE / "configs" / "babyai-ppo.yaml").read_text(encoding="utf-8"))
    raw["env"]["vectorization"] = "sync"
    raw["optimizer"]["params"]["vf_coef"] = vf_coef
    config = validate_pipeline(raw, registry)
    envs = make_vector_env(config.env.id, config.env.kwargs, num_envs=config.env.num_envs, seed=seed)
    make_network = NetworkFactory(config, envs.single_observation_space, registry)
    ppo = registry.create(Kind.OPTIMIZER, "ppo", config.optimizer.params)
    ppo.set_budget(Budget(config.trainer.total_steps, "env_steps"))
    ppo.setup(Pipeline(make_network, seed, envs.single_observation_space, envs.single_action_space,
                       TrackedVectorEnv(envs, None), EnvReward(), None))
    return ppo, config.env.id


def sb3_ppo(env_id: str, num_envs: int, seed: int) -> tuple[Any, Features, int]:
    """SB3's PPO with compare.py's settings on sb3_ppo.py's features (its env is never stepped here)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnvWrapper

    raw = DummyVecEnv([lambda: TextAsBytes(make_env(env_id))] * num_envs)
    probe = TextAsBytes(make_env(env_id))
    features = Features(raw.observation_space, probe.text_keys, TextEmbedder())

    class FeatureSpace(VecEnvWrapper):
        def __init__(self, venv: Any) -> None:
            super().__init__(venv, observation_space=features.space)

        def reset(self) -> Any:
            return features(self.venv.reset())

        def step_wait(self) -> Any:
            raise RuntimeError("update_parity.py fills SB3's buffer itself")

    model = PPO("MultiInputPolicy", FeatureSpace(raw), seed=seed, device="cpu", verbose=0, **SB3_HPARAMS)
    model.set_logger(configure(None, []))
    return model, features, probe.text_keys["mission"]


def layer_pairs(ppo: Any, model: Any) -> list[tuple[torch.nn.Linear, torch.nn.Linear, bool]]:
    """(polyfuse layer, SB3 layer, reads the fused features) for every Linear of the two heads."""
    pf, sb = ppo.model, model.policy
    return [(pf.policy.head[0], sb.mlp_extractor.policy_net[0], True),
            (pf.policy.head[2], sb.mlp_extractor.policy_net[2], False),
            (pf.policy.head[4], sb.action_net, False),
            (pf.value_head[0], sb.mlp_extractor.value_net[0], True),
            (pf.value_head[2], sb.mlp_extractor.value_net[2], False),
            (pf.value_head[4], sb.value_net, False)]


def column_order(ppo: Any) -> torch.Tensor:
    """SB3's feature column j is polyfuse's column ``order[j]``."""
    widths = dict(ppo.model.policy.trunk.fuser.input_dims)
    starts, offset = {}, 0
    for key, width in widths.items():
        starts[key] = offset
        offset += width
    return torch.cat([torch.arange(starts[key], starts[key] + widths[key]) for key in SB3_ORDER])


def weight_gap(pairs: list, order: torch.Tensor, copy: bool = False) -> float:
    """Largest weight difference (after copying polyfuse's weights into SB3's when ``copy``)."""
    gap = 0.0
    with torch.no_grad():
        for ours, theirs, fused in pairs:
            weight = ours.weight[:, order] if fused else ours.weight
            if copy:
                theirs.weight.copy_(weight)
                theirs.bias.copy_(ours.bias)
            gap = max(gap, (weight - theirs.weight).abs().max().item(),
                      (ours.bias - theirs.bias).abs().max().item())
    return gap


def fill_buffer(model: Any, collected: Any, features: Features, text_length: int, gamma: float) -> None:
    """SB3's rollout buffer holding polyfuse's steps; truncations bootstrapped through the reward."""
    steps, envs = collected.log_probs.shape
    rows = collected.observations.all()
    bootstrap = collected.truncated & ~collected.terminated
    rewards = collected.env_rewards + np.where(bootstrap, gamma * collected.final_values.numpy(), 0.0)
    buffer = model.rollout_buffer
    buffer.reset()
    starts = np.ones(envs, dtype=np.float32)
    for t in range(steps):
        index = range(t * envs, (t + 1) * envs)
        missions = np.stack([np.frombuffer(rows["mission"][i].encode().ljust(text_length, b"\0"), np.uint8)
                             for i in index])
        step = features({"direction": np.asarray(rows["direction"])[list(index)],
                         "image": np.asarray(rows["image"])[list(index)], "mission": missions})
        buffer.add({key: step[key] for key in features.space.spaces},
                   collected.actions[t].numpy().reshape(envs, 1), rewards[t], starts, collected.values[t],
                   collected.log_probs[t])
        starts = (collected.terminated[t] | collected.truncated[t]).astype(np.float32)
    ended = collected.terminated[-1] | collected.truncated[-1]
    buffer.compute_returns_and_advantage(collected.last_values, ended)


def sb3_train_in_order(model: Any, ppo: Any, steps: int, envs: int) -> None:
    """SB3's ``train()`` on the minibatches of polyfuse's next update (SB3 flattens env-major: i * T + t)."""
    generator = torch.Generator()
    generator.set_state(ppo.rng["shuffle"].get_state())
    orders = []
    for _ in range(ppo.config.n_epochs):
        order = torch.randperm(steps * envs, generator=generator).numpy()
        orders.append((order % envs) * steps + order // envs)
    queue = iter(orders)
    permutation = np.random.permutation
    np.random.permutation = lambda n: next(queue)
    try:
        model._current_progress_remaining = 1.0
        model.train()
    finally:
        np.random.permutation = permutation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polyfuse-vf-coef", type=float, default=0.5)
    parser.add_argument("--rollouts", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    ppo, env_id = polyfuse_ppo(args.polyfuse_vf_coef, args.seed)
    model, features, text_length = sb3_ppo(env_id, ppo.envs.num_envs, args.seed)
    pairs, order = layer_pairs(ppo, model), column_order(ppo)
    collected: dict[str, Any] = {}
    to_rollout = ppo._rollout
    ppo._rollout = lambda steps: collected.update(steps=steps) or to_rollout(steps)
    for index in range(args.rollouts):
        weight_gap(pairs, order, copy=True)  # (after an update they already agree); Adam: each its own state
        rollout = ppo._collect()
        steps = collected["steps"]
        length, envs = steps.log_probs.shape
        fill_buffer(model, steps, features, text_length, ppo.config.gamma)
        buffer = model.rollout_buffer
        advantage_gap = (torch.as_tensor(buffer.advantages).reshape(-1) - rollout.advantages).abs().max()
        return_gap = (torch.as_tensor(buffer.returns).reshape(-1) - rollout.returns).abs().max()
        before = [ours.weight.detach().clone() for ours, _, _ in pairs]
        sb3_train_in_order(model, ppo, length, envs)
        ppo._update(rollout)
        moved = max((ours.weight - old).abs().max().item() for (ours, _, _), old in zip(pairs, before))
        cut = int((steps.truncated & ~steps.terminated).sum())
        print(f"rollout {index} ({cut} truncated episodes): advantages differ by at most "
              f"{advantage_gap.item():.2g}, returns {return_gap.item():.2g}; "
              f"after the update the weights differ by at most {weight_gap(pairs, order):.2g} "
              f"(the update moved them by up to {moved:.2g})")


if __name__ == "__main__":
    main()
