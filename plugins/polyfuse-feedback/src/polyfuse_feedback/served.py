"""A served policy's episodes into a label store (``polyfuse serve RUN --log-feedback DB``).

The server (core) records what it answered as segments (:mod:`polyfuse.serving.episodes`) and hands
them here: each batch is added to a project, and a seeded share of them is posted as rating queries
(good/bad by default) for a named feedback source: ``human`` shows them in the annotation app,
``synthetic`` or a judge answers them with ``polyfuse feedback answer``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from polyfuse.errors import PolyfuseError
from polyfuse.rewards import Segment

from polyfuse_feedback.commands import open_store
from polyfuse_feedback.store import LabelStore, NewQuery, encode_segment

DEFAULT_SOURCE = "human"
RATING_SCALE = 2


class StoreSink:
    """Adds segments to ``project`` and asks ``source`` to rate about ``query_share`` of them."""

    def __init__(self, store: LabelStore, project: str, *, query_share: float, source: str = DEFAULT_SOURCE,
                 scale: int = RATING_SCALE, seed: int = 0, display: Mapping[str, Any] | None = None) -> None:
        if not 0 <= query_share <= 1:
            raise PolyfuseError(f"the share of episodes asked must be in [0, 1], got {query_share}")
        if scale < 2:
            raise PolyfuseError(f"a rating needs a scale of at least 2 levels, got {scale}")
        self.store, self.project, self.query_share, self.source, self.scale = store, project, query_share, source, scale
        self.rng = np.random.default_rng(seed)
        # created now (so a wrong database fails at start, not at the first write) and described for the app
        store.configure_project(project, display=display)

    def write(self, segments: Sequence[Segment]) -> None:
        """One transaction: a write that fails (and is retried by the server) leaves no segment behind."""
        rows = [encode_segment(segment) for segment in segments]
        draws = self.rng.random(len(rows))
        with self.store.writing() as conn:
            project_id = self.store._project(conn, self.project)
            ids = self.store._add_segments(conn, project_id, rows)
            asked = [NewQuery(i, None, self.scale, 0.0, self.source) for i, draw in zip(ids, draws)
                     if draw < self.query_share]
            if asked:
                self.store._post_queries(conn, project_id, asked)

    def close(self) -> None:
        self.store.close()


def open_sink(db: str, project: str, *, query_share: float, source: str = DEFAULT_SOURCE, seed: int = 0,
              env_id: str | None = None, observation_space: Any = None,
              action_names: Sequence[str] | None = None) -> StoreSink:
    """The sink of ``--log-feedback DB`` (a URL, a run directory or a .sqlite file; created if missing); the
    environment's id, observation space and action names tell the annotation app how to show the segments."""
    from polyfuse_feedback.rendering import describe_observations

    display = {"env": env_id, "actions": list(action_names or ()),
               "observations": describe_observations(observation_space, env_id)}
    store = open_store(db, create=True)
    try:
        return StoreSink(store, project, query_share=query_share, source=source, seed=seed, display=display)
    except BaseException:
        store.close()
        raise
