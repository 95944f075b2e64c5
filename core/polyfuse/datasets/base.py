"""What an offline optimizer learns from: a dataset with the spaces of its observations and actions."""

from __future__ import annotations

from typing import Any


class Dataset:
    """Offline training data. ``observation_space`` is a gymnasium Dict space, like an environment's.

    A pipeline without an environment builds its encoders from these spaces;
    with one, the trainer checks that they agree.
    """

    observation_space: Any
    action_space: Any

    def __len__(self) -> int:
        raise NotImplementedError
