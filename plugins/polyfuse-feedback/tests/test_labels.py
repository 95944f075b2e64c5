"""The label set: held-out split and bootstrap weights, drawn from each label's id."""

from __future__ import annotations

import numpy as np
from polyfuse.feedback import Label
from polyfuse.rewards import Segment
from polyfuse_feedback.labels import LabelSet


def _segment() -> Segment:
    return Segment(observations={"x": np.zeros((1, 2), dtype=np.float32)}, actions=np.zeros(1, dtype=np.int64),
                   env_rewards=np.zeros(1, dtype=np.float32), infos=[{}], terminated=True,
                   truncated=False, env_index=0)


def _filled(bootstrap: bool) -> LabelSet:
    labels = LabelSet(seed=7, members=4, heldout_fraction=0.3, bootstrap=bootstrap)
    for label_id in range(200):
        labels.add(label_id, (2 * label_id, _segment()), (2 * label_id + 1, _segment()), Label(preference=1.0), 0, 1.0)
    return labels


def test_bootstrap_weights_differ_by_member_and_leave_labels_out() -> None:
    weights = np.stack([row.bootstrap for row in _filled(bootstrap=True).rows])  # (labels, members)
    assert (weights == 0).mean() > 0.25  # Poisson(1): about 37% of labels left out of each member
    assert not np.array_equal(weights[:, 0], weights[:, 1])


def test_without_bootstrap_every_member_weighs_every_label_once() -> None:
    assert all(np.array_equal(row.bootstrap, np.ones(4)) for row in _filled(bootstrap=False).rows)


def test_the_heldout_split_does_not_depend_on_the_bootstrap() -> None:
    with_bootstrap, without = _filled(bootstrap=True), _filled(bootstrap=False)
    assert [row.heldout for row in with_bootstrap.rows] == [row.heldout for row in without.rows]
    assert 0.15 < np.mean([row.heldout for row in without.rows]) < 0.45
