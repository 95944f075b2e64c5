"""The hooks a polyfuse plugin implements.

A plugin is a module (or object) named by an entry point in the ``polyfuse``
group. It implements any of the hooks below with ``@polyfuse.hookimpl``; each
hook receives a ``register`` callback and calls it once per component. The
core's own components are registered through exactly these hooks.

Registration must stay cheap: import torch, timm or other heavy libraries
inside the factory, never at module level, so that ``polyfuse --help`` and
``polyfuse plugins`` stay fast.

``register(name, factory, *, config, description="")`` takes:

- ``name``: the registry name users write in a pipeline config
  (lowercase letters, digits, ``-``, ``_`` and ``.``);
- ``factory``: a callable ``factory(config, **context)`` that builds the
  component; the context each kind receives is documented on its hook;
- ``config``: a :class:`polyfuse.ComponentConfig` subclass (a pydantic model
  with ``extra="forbid"``) validating the component's ``params``;
- ``description``: one line shown by ``polyfuse list``.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "polyfuse"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_encoders(register):  # type: ignore[no-untyped-def]
    """Register encoders, which turn one modality of raw observations into features.

    Factory context: ``factory(config, space=...)`` where ``space`` is the
    gymnasium space of the observation key the encoder reads (``None`` when
    unknown). The factory returns a :class:`polyfuse.encoding.Encoder`: a
    ``torch.nn.Module`` with an ``output_dim`` attribute whose ``forward``
    takes a batch of raw observations and returns ``(B, output_dim)``.

    Spatial feature maps (optional): an encoder that also has a map sets
    ``feature_map_shape = (C, H, W)`` and implements
    ``forward_spatial(batch) -> (pooled (B, output_dim), map (B, C, H, W))``
    from one pass (``small-cnn``; ``timm`` with ``params.feature_map``). Its
    factory declares it with ``@polyfuse.declarations.offers_feature_map()``
    (or ``offers_feature_map(lambda config: ..., hint="set params.x")`` when
    params decide), so ``polyfuse validate`` can pair it with spatial fusers
    without building it; check it with ``polyfuse.testing.check_spatial_encoder``.

    Example::

        class BagOfWordsConfig(polyfuse.ComponentConfig):
            vocab_size: int = 1000

        def build_bag_of_words(config, space=None):
            from my_plugin.bow import BagOfWordsEncoder  # heavy import here
            return BagOfWordsEncoder(config.vocab_size)

        @polyfuse.hookimpl
        def register_encoders(register):
            register("bag-of-words", build_bag_of_words, config=BagOfWordsConfig,
                     description="Hashed bag-of-words text encoder")
    """


@hookspec
def register_fusers(register):  # type: ignore[no-untyped-def]
    """Register fusers, which combine per-modality features into one vector.

    Factory context: ``factory(config, input_dims=...)`` where ``input_dims``
    maps each modality name to its feature dimension (inferred from the
    encoders at build time). The factory returns a
    :class:`polyfuse.fusion.Fuser`, whose ``forward(features, present=None)``
    takes ``{modality: (B, D)}`` plus an optional per-sample presence mask and
    returns ``(B, fuser.output_dim)``.

    Spatial fusers (fusion inside a CNN, say) also read feature maps. Their
    factory is marked ``@polyfuse.declarations.consumes_maps(select)``, where
    ``select(config, offers)`` returns the modalities whose maps it reads
    (``offers``: modality -> whether its encoder gives a map). It is then
    called as ``factory(config, input_dims=..., map_shapes=...)`` with
    ``map_shapes = {modality: (C, H, W)}``, passes ``map_shapes`` to
    ``Fuser.__init__``, and is called as ``forward(features, present, maps=...)``
    with the ``(B, C, H, W)`` map of each of those modalities that is present
    (``Fuser.spatial_inputs`` validates them and selects missing rows away).
    A pipeline whose fuser wants the map of a modality whose encoder has none
    fails ``polyfuse validate`` and ``polyfuse run``, naming both. Check it
    with ``polyfuse.testing.check_spatial_fuser``.

    Example::

        class MaxPoolConfig(polyfuse.ComponentConfig):
            hidden_dim: int = Field(128, gt=0)

        def build_max_pool(config, input_dims):
            from my_fusers.max_pool import MaxPoolFuser
            return MaxPoolFuser(input_dims, hidden_dim=config.hidden_dim)

        @polyfuse.hookimpl
        def register_fusers(register):
            register("max-pool", build_max_pool, config=MaxPoolConfig,
                     description="Element-wise max over projected modalities")
    """


@hookspec
def register_rewards(register):  # type: ignore[no-untyped-def]
    """Register rewards (reward sources), which score transitions for the RL optimizer.

    Factory context: ``factory(config, context=...)`` where ``context`` is a
    :class:`polyfuse.rewards.RunContext`: the environment's spaces, a
    ``make_network()`` that builds the pipeline's encoders and fuser (frozen
    encoders and the feature cache shared with the optimizer's networks), the
    component's seed, the device and the run's directory. The factory returns
    a :class:`polyfuse.rewards.RewardSource`: ``score(batch)`` turns a batch
    of transitions into rewards where the optimizer consumes them; one that
    learns sets ``segment_length`` to receive trajectory segments through
    ``observe`` and learns in ``update``, which the trainer calls every
    ``trainer.reward_update_every`` steps (see CONTRIBUTING.md for a complete
    learning example).

    Example::

        class ClippedConfig(polyfuse.ComponentConfig):
            limit: float = Field(1.0, gt=0)

        def build_clipped(config, context):
            from my_rewards.clipped import ClippedEnvReward
            return ClippedEnvReward(config.limit)

        @polyfuse.hookimpl
        def register_rewards(register):
            register("clipped-env", build_clipped, config=ClippedConfig,
                     description="Environment reward clipped to [-limit, limit]")
    """


@hookspec
def register_optimizers(register):  # type: ignore[no-untyped-def]
    """Register RL optimizers (DQN, PPO, …), which train a policy on fused features.

    Factory context: ``factory(config)``; the trainer then tells it the
    budget and hands it the built :class:`polyfuse.training.Pipeline`
    (environments, network factory, reward source, dataset). The factory
    returns a :class:`polyfuse.training.RLOptimizer`; subclassing
    :class:`polyfuse.rl.OnPolicyAlgorithm` or
    :class:`polyfuse.rl.OffPolicyAlgorithm` leaves only the update to write.

    Example::

        class ReinforceConfig(polyfuse.ComponentConfig):
            learning_rate: float = Field(1e-3, gt=0)

        def build_reinforce(config):
            from my_rl.reinforce import Reinforce
            return Reinforce(config)

        @polyfuse.hookimpl
        def register_optimizers(register):
            register("reinforce", build_reinforce, config=ReinforceConfig,
                     description="Vanilla policy gradient")
    """


@hookspec
def register_datasets(register):  # type: ignore[no-untyped-def]
    """Register datasets, which offline optimizers (DPO, behaviour cloning) learn from.

    A pipeline names one as ``dataset: {name: ..., params: {...}}``.
    Factory context: ``factory(config, observation_space=..., action_space=...)``
    with the environment's spaces when the pipeline has an environment
    (``None`` otherwise: the dataset then declares its own). The factory
    returns a :class:`polyfuse.datasets.Dataset`.

    Example::

        class CsvPairsConfig(polyfuse.ComponentConfig):
            path: Path

        def build_csv_pairs(config, observation_space=None, action_space=None):
            from my_data.csv_pairs import read_csv_pairs
            return read_csv_pairs(config.path, observation_space, action_space)

        @polyfuse.hookimpl
        def register_datasets(register):
            register("csv-pairs", build_csv_pairs, config=CsvPairsConfig,
                     description="Preference pairs from a CSV file")
    """


@hookspec
def register_feedback(register):  # type: ignore[no-untyped-def]
    """Register feedback sources: who answers a learned reward's queries (simulated annotators, AI judges, people).

    A reward model that learns from feedback names one in its params, e.g.
    ``reward: {name: preference-model, params: {feedback: {name: synthetic}}}``.
    Factory context: ``factory(config, seed=...)`` where ``seed`` is an
    integer for the source's own random stream. The factory returns a
    :class:`polyfuse.feedback.FeedbackSource`, whose ``label(queries)``
    answers each :class:`polyfuse.feedback.Query` with a
    :class:`polyfuse.feedback.Label` or ``None`` to abstain: a comparison of
    two :class:`polyfuse.rewards.Segment` with a preference (0, 1, or 0.5 for
    a tie), a rating query (one segment, ``scale`` levels) with a rating from
    1 to ``scale``; each with a confidence. A slow source (a remote model,
    people) sets ``asynchronous = True`` and is asked from a background thread.

    Example::

        class LongerIsBetterConfig(polyfuse.ComponentConfig):
            confidence: float = 1.0

        def build_longer(config, seed=0):
            from my_judges.longer import LongerIsBetter
            return LongerIsBetter(config.confidence)

        @polyfuse.hookimpl
        def register_feedback(register):
            register("longer-is-better", build_longer, config=LongerIsBetterConfig,
                     description="Prefers the longer segment")
    """


@hookspec
def register_commands(register):  # type: ignore[no-untyped-def]
    """Register command-line subcommands: ``polyfuse <name> ...`` (e.g. ``polyfuse feedback export``).

    ``register(name, handler, *, arguments=None, help="")`` takes the
    subcommand's name, ``handler(args, registry) -> int`` (the exit status;
    ``args`` is the parsed :class:`argparse.Namespace`, ``registry`` the
    loaded :class:`polyfuse.registry.Registry`), an optional
    ``arguments(parser)`` adding options to its :class:`argparse.ArgumentParser`
    (sub-subcommands included) and a one-line ``help``. A name the core or
    another plugin already uses is refused and shown by ``polyfuse plugins``.
    Factory context: a command has no factory; import heavy modules inside
    ``handler``, which runs only when the command is called, so that
    ``polyfuse --help`` stays fast. Raise :class:`polyfuse.errors.PolyfuseError`
    for a user's mistake: the CLI prints its message without a traceback.

    Example::

        def add_arguments(parser):
            parser.add_argument("path", help="a label file")

        def count_labels(args, registry):
            with open(args.path, encoding="utf-8") as lines:
                print(sum(1 for _ in lines), "labels")
            return 0

        @polyfuse.hookimpl
        def register_commands(register):
            register("count-labels", count_labels, arguments=add_arguments,
                     help="count the labels in a JSONL file")
    """
