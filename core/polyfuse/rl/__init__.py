"""The scaffolding RL optimizers share, as Stable-Baselines3 shares its algorithm base classes.

An optimizer plugin subclasses :class:`polyfuse.rl.on_policy.OnPolicyAlgorithm`
(rollouts, GAE, an actor-critic), :class:`polyfuse.rl.off_policy.OffPolicyAlgorithm`
(replay, n-step returns, a collect-then-learn loop) or, for anything else,
:class:`polyfuse.rl.base.Algorithm` (config, budget, seeds, progress,
checkpoints), and writes only what is its own. Their configs
(:mod:`polyfuse.rl.configs`) import no torch, so a plugin's registration stays
cheap; importing this package imports nothing heavy either.

Modules: ``base``, ``on_policy``, ``off_policy`` (the base classes);
``configs``; ``heads`` (MLP heads, policy and actor-critic networks);
``distributions`` (categoricals over discrete actions); ``advantages`` (GAE,
value fitting); ``replay`` and ``nstep`` (off-policy storage); ``rng``
(generator state in checkpoints); ``testing`` (small tasks for optimizer tests).
"""
