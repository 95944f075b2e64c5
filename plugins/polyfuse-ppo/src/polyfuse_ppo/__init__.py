"""polyfuse-ppo: proximal policy optimization on fused multimodal features (registry name ``ppo``).

Importing this package is cheap; torch is imported by the modules that build
the optimizer (:mod:`polyfuse_ppo.ppo` and its helpers), never here.
"""
