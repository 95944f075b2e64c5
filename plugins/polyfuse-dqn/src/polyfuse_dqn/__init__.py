"""polyfuse-dqn: deep Q-learning on fused multimodal features (registry name ``dqn``).

Importing this package is cheap; torch is imported by the modules that build
the optimizer (:mod:`polyfuse_dqn.dqn` and its helpers), never here.
"""
