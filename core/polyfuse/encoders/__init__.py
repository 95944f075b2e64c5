"""The core's small encoders: ``vector``, ``onehot``, ``embedding`` and ``small-cnn``.

Each module holds one encoder; their configs and registration live in
:mod:`polyfuse.builtins.encoders`, which imports these only when building one.
"""
