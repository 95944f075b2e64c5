"""Segments as JSON, for the API between a training run and a remote annotation app.

The same columns the label store keeps (:func:`polyfuse_feedback.store.encode_segment`), with the
``np.savez`` blob in base64: no pickle on either side, dtypes and shapes kept exactly.
"""

from __future__ import annotations

import base64
import binascii
import json
from types import SimpleNamespace
from typing import Any

from polyfuse.rewards import Segment

from polyfuse_feedback.store import StoreError, decode_segment, encode_segment

FIELDS = ("length", "layout", "infos", "terminated", "truncated", "env_index")


def segment_to_json(segment: Segment) -> dict[str, Any]:
    row = encode_segment(segment)
    return {**{name: row[name] for name in FIELDS}, "arrays": base64.b64encode(row["arrays"]).decode()}


def segment_from_json(data: Any) -> Segment:
    """The segment ``data`` describes; :class:`StoreError` naming what is wrong with anything else."""
    if not isinstance(data, dict) or set(data) != {*FIELDS, "arrays"}:
        raise StoreError(f"a segment is an object with exactly the fields {sorted({*FIELDS, 'arrays'})}")
    try:
        row = SimpleNamespace(**{**data, "arrays": base64.b64decode(data["arrays"], validate=True)})
        segment = decode_segment(row)
    except (binascii.Error, ValueError, KeyError, TypeError, OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"the segment does not decode: {exc}") from None
    if len(segment.actions) != data["length"] or any(len(v) != len(segment.actions)
                                                     for v in segment.observations.values()):
        raise StoreError("the segment's length, actions and observations do not agree")
    return segment
