"""polyfuse-a2c: advantage actor-critic and REINFORCE on fused multimodal features (registry name ``a2c``).

Importing this package is cheap: torch comes with :mod:`polyfuse_a2c.a2c`, which the factory imports.
"""
