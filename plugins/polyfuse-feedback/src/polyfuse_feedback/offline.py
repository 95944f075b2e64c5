"""``polyfuse feedback train-reward``: fit a reward model to a stored label set, to use it by name later.

The labels come from a label export (JSONL), a run directory (its
``feedback.sqlite``) or a database URL; the pipeline config names the env
(for its spaces), the modalities' encoders, the fuser and the reward's params.
The result is a folder that ``reward: {name: preference-model, params:
{init_from: FOLDER, max_labels: 0}}`` scores with (or fine-tunes from, with a
label budget) and that ``model-judge`` labels queries with.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from polyfuse.errors import PolyfuseError

DEFAULT_STEPS = 2000


def add_train_reward_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="pipeline config: env, modalities, fuser and reward: preference-model's params")
    parser.add_argument("--labels", required=True, help="a label export (.jsonl), a run directory (its "
                        "feedback.sqlite), a .sqlite file or a database URL")
    parser.add_argument("--project", help="project holding the labels (default: the only one in the database)")
    parser.add_argument("-o", "--output", required=True, help="folder to write the reward model to")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"gradient steps (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="seeds the model's initialisation and batches")


def train_reward(args: argparse.Namespace, registry: Any) -> int:
    import torch
    from polyfuse.config import load_pipeline
    from polyfuse.envs import action_names
    from polyfuse.network import NetworkFactory
    from polyfuse.rewards import RunContext
    from tqdm import tqdm

    from polyfuse_feedback.model import PreferenceModel
    from polyfuse_feedback.plugin import PreferenceModelConfig
    from polyfuse_feedback.routing import Router
    from polyfuse_feedback.saved import save_reward_model

    if args.steps <= 0:
        raise PolyfuseError(f"--steps must be positive, got {args.steps}")
    torch.set_num_threads(1)
    config = load_pipeline(args.config, registry)
    if config.reward.name != "preference-model":
        raise PolyfuseError(f"{args.config}: reward.name is {config.reward.name!r}; train-reward fits a "
                            "preference-model: set reward: {name: preference-model, params: {...}}")
    if config.env is None:
        raise PolyfuseError(f"{args.config}: name the env the labels come from (env.id): its observation and action "
                            "spaces shape the reward model")
    output = Path(args.output)
    scratch = Path(tempfile.mkdtemp(prefix="polyfuse-labels-"))
    try:
        store, project = _open_labels(args.labels, args.project, scratch)
        try:
            answers = Router(store, project, []).collect()
        finally:
            store.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    observation_space, action_space = _spaces(config)
    params = PreferenceModelConfig.model_validate({**config.reward.params, "max_labels": 0})
    context = RunContext(observation_space, action_space, NetworkFactory(config, observation_space, registry),
                         seed=args.seed, run_dir=output, planned_updates=1, registry=registry, env_id=config.env.id,
                         action_names=action_names(config.env.id, config.env.kwargs) if params.head == "named" else None)
    model = PreferenceModel(params, context, router=None)
    if not answers:
        raise PolyfuseError(f"no labels in project {project!r} of {args.labels}")
    model.add_answers(answers)
    model.observe(list(model.labels.segments.values()))
    losses = []
    chunk = max(1, min(100, args.steps))
    with tqdm(total=args.steps, unit="step", desc="reward model") as bar:
        while bar.n < args.steps:
            steps = min(chunk, args.steps - bar.n)
            loss = model.fit(steps)
            if loss is None:
                raise PolyfuseError(f"all {len(answers)} labels are held out: lower heldout_fraction in the reward's "
                                    "params")
            losses.append(loss)
            bar.update(steps)
            bar.set_postfix(loss=f"{loss:.3f}")
    model.normalise()
    summary = {"labels": len(model.labels), "project": project, "steps": args.steps, "loss": losses[-1],
               "heldout_accuracy": model.heldout_accuracy(), "return_correlation": model.return_correlation()}
    pipeline = config.model_dump(mode="json")
    save_reward_model(model, output, pipeline, summary)
    accuracy = summary["heldout_accuracy"]
    print(f"reward model from {len(model.labels)} labels written to {output} (held-out pairwise accuracy "
          f"{'n/a' if accuracy is None else f'{accuracy:.3f}'}); use it as reward: {{name: preference-model, "
          f"params: {{init_from: {output}, max_labels: 0}}}}")
    return 0


def _open_labels(source: str, project: str | None, scratch: Path) -> tuple[Any, str]:
    """The store holding the labels and the project to read; a JSONL export is imported into ``scratch`` first."""
    from polyfuse_feedback.commands import open_store
    from polyfuse_feedback.store import LabelStore

    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise PolyfuseError(f"--labels {source}: no such file")
        store = LabelStore(f"sqlite:///{scratch / 'labels.sqlite'}")  # read once, kept nowhere
        name = project or path.stem
        store.import_jsonl(path, name)
        return store, name
    store = open_store(source)
    if project is not None:
        return store, project
    names = [p.name for p in store.projects()]
    if len(names) != 1:
        store.close()
        raise PolyfuseError(f"--labels {source} holds {len(names)} projects ({', '.join(names) or 'none'}): "
                            "name one with --project")
    return store, names[0]


def _spaces(config: Any) -> tuple[Any, Any]:
    from polyfuse.envs import make_vector_env

    envs = make_vector_env(config.env.id, config.env.kwargs, num_envs=1, vectorization="sync", seed=0)
    try:
        return envs.single_observation_space, envs.single_action_space
    finally:
        envs.close()
