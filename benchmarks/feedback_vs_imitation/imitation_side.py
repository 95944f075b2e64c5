"""imitation's side of run.py: PreferenceComparisons on fvi/CartPole-v0 (= seals/CartPole-v0), in .venv-imitation.

Reads one JSON object of settings (argv[1], built by run.py from the same values as polyfuse's config) and
prints one JSON line: the held-out true return of the final policy (deterministic, on the episodes seeded
``eval_seed_base + i``, the very episodes polyfuse's evaluator plays), labels gathered, wall time and the
time spent in each phase (labelling = fragmenter + synthetic gatherer; reward training =
BasicRewardTrainer.train; agent = AgentTrainer.train; sampling = AgentTrainer.sample).

The loop (imitation 1.0.1): ``num_iterations = rounds - 1`` and ``initial_comparison_frac = 1 / rounds``
with the constant query schedule give ``rounds`` equal rounds of ``labels / rounds`` comparisons; each
round trains the agent ``total_timesteps // num_iterations`` steps, so ``total_timesteps = agent_steps *
(rounds - 1) / rounds`` trains it ``agent_steps`` in all (the schedule has num_iterations + 1 rounds).
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import task


def main() -> None:
    settings = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    started = time.perf_counter()
    from imitation.algorithms import preference_comparisons as pc
    from imitation.rewards.reward_nets import BasicRewardNet, NormalizedRewardNet
    from imitation.util.networks import RunningNorm
    from imitation.util.util import make_vec_env
    from stable_baselines3 import PPO

    seed = settings["seed"]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    venv = make_vec_env(task.BOX_ID, rng=rng, n_envs=settings["num_envs"])
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space,
                                hid_sizes=tuple(settings["reward_hidden_sizes"]))
    if settings["normalize_reward"]:
        reward_net = NormalizedRewardNet(reward_net, normalize_output_layer=RunningNorm)
    preference_model = pc.PreferenceModel(reward_net)
    reward_trainer = pc.BasicRewardTrainer(
        preference_model=preference_model, loss=pc.CrossEntropyRewardLoss(), rng=rng,
        epochs=settings["reward_epochs"], batch_size=settings["reward_batch_size"], lr=settings["reward_lr"],
    )
    ppo = settings["ppo"]
    agent = PPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, n_steps=ppo["n_steps"],
                batch_size=ppo["batch_size"], n_epochs=ppo["n_epochs"], learning_rate=ppo["learning_rate"],
                gamma=ppo["gamma"], gae_lambda=ppo["gae_lambda"], clip_range=ppo["clip_range"],
                ent_coef=ppo["ent_coef"], vf_coef=ppo["vf_coef"], max_grad_norm=ppo["max_grad_norm"],
                policy_kwargs={"net_arch": list(ppo["hidden_sizes"])})
    if settings.get("env_reward"):  # the control: the same PPO on the environment's reward, no preferences (before AgentTrainer
        # puts its learned-reward wrapper around the agent's env)
        train_started = time.perf_counter()
        agent.learn(total_timesteps=settings["agent_steps"])
        report(agent, settings, started, time.perf_counter() - train_started, labels=0, extra={})
        return
    trajectory_generator = pc.AgentTrainer(algorithm=agent, reward_fn=reward_net, venv=venv, rng=rng,
                                           exploration_frac=settings["exploration_frac"])
    fragmenter = pc.RandomFragmenter(warning_threshold=0, rng=rng)
    gatherer = pc.SyntheticGatherer(temperature=settings["temperature"], rng=rng)

    phases = {"label_s": 0.0, "reward_train_s": 0.0, "agent_s": 0.0, "sample_s": 0.0}
    counts = {"equal_returns": 0}

    def timed(obj, name, key):
        method = getattr(obj, name)

        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            begun = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                phases[key] += time.perf_counter() - begun
        setattr(obj, name, wrapper)

    rounds = settings["rounds"]
    trainer = pc.PreferenceComparisons(
        trajectory_generator, reward_net, num_iterations=rounds - 1, fragmenter=fragmenter,
        preference_gatherer=gatherer, reward_trainer=reward_trainer, fragment_length=settings["fragment_length"],
        transition_oversampling=1, initial_comparison_frac=1 / rounds, allow_variable_horizon=False,
        initial_epoch_multiplier=settings["initial_epoch_multiplier"], query_schedule="constant",
    )
    for obj, name, key in [(trajectory_generator, "train", "agent_s"), (trajectory_generator, "sample", "sample_s"),
                           (reward_trainer, "train", "reward_train_s")]:
        timed(obj, name, key)
    original_fragmenter, original_gatherer = trainer.fragmenter, trainer.preference_gatherer

    def labelling(component):
        def call(*args, **kwargs):
            begun = time.perf_counter()
            try:
                return component(*args, **kwargs)
            finally:
                phases["label_s"] += time.perf_counter() - begun
        return call

    trainer.fragmenter = labelling(original_fragmenter)
    def gather(fragments):
        preferences = original_gatherer(fragments)
        counts["equal_returns"] += sum(float(np.sum(a.rews)) == float(np.sum(b.rews)) for a, b in fragments)
        return preferences

    trainer.preference_gatherer = labelling(gather)
    total_timesteps = settings["agent_steps"] * (rounds - 1) // rounds
    train_started = time.perf_counter()
    result = trainer.train(total_timesteps=total_timesteps, total_comparisons=settings["labels"])
    train_time = time.perf_counter() - train_started

    extra = {"reward_accuracy": result.get("reward_accuracy"), **phases, **counts}
    report(agent, settings, started, train_time, labels=len(trainer.dataset), extra=extra)


def report(agent, settings: dict, started: float, train_time: float, labels: int, extra: dict) -> None:
    """Print the JSON line: the final policy's mean true return on the held-out episodes, and timings."""
    import gymnasium as gym

    returns = []
    eval_started = time.perf_counter()
    env = gym.make(task.BOX_ID)
    for episode in range(settings["eval_episodes"]):
        observation, _ = env.reset(seed=settings["eval_seed_base"] + episode)
        total, done = 0.0, False
        while not done:
            action, _ = agent.predict(observation, deterministic=True)
            observation, reward, terminated, truncated, _ = env.step(int(action))
            total += reward
            done = terminated or truncated
        returns.append(total)
    print(json.dumps({
        "eval_return": float(np.mean(returns)),
        "labels": labels,
        "agent_steps": int(agent.num_timesteps),
        "train_time_s": train_time,
        "eval_time_s": time.perf_counter() - eval_started,
        "in_process_time_s": time.perf_counter() - started,
        **extra,
    }), flush=True)


if __name__ == "__main__":
    main()
