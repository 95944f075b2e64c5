"""Label sets as JSONL, to move them between databases (a run's SQLite file, a team's PostgreSQL).

One JSON object per line, one line per label (abstentions included), the segments inline::

    {"format": "polyfuse-labels/1", "key": "...", "preference": 1.0, "rating": null, "confidence": 1.0,
     "source": "synthetic", "annotator": null, "created_at": 1764619200.0,
     "query": {"id": 7, "scale": 0, "priority": 0.5, "source": "synthetic"},
     "first": SEGMENT, "second": SEGMENT or null}

A SEGMENT is ``{"id", "observations", "actions", "env_rewards", "infos", "terminated", "truncated",
"env_index"}``. A text observation is a list of strings; a numeric one (images included), and
``actions`` and ``env_rewards``, is ``{"dtype": "<f4", "shape": [...], "base64": ...}``: the array's
raw C-order bytes, exact for any dtype and value (NaN included) and a third of the size of nested
lists. Ids are those of the exporting database: an import maps them to new ones. Every label carries
its idempotency ``key``, so importing a file twice, or back into the database it came from, adds nothing.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa
from polyfuse.feedback import Label
from polyfuse.rewards import Segment

from polyfuse_feedback.schema import labels, projects, queries, segments
from polyfuse_feedback.store import (
    NewQuery,
    StoreError,
    decode_segment,
    encode_segment,
)

if TYPE_CHECKING:
    from polyfuse_feedback.store import LabelStore

FORMAT = "polyfuse-labels/1"
PAGE = 500


def array_to_json(array: np.ndarray) -> dict[str, Any]:
    array = np.ascontiguousarray(array)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "base64": base64.b64encode(array.tobytes()).decode()}


def array_from_json(value: Any) -> np.ndarray:
    dtype = np.dtype(value["dtype"])
    if dtype.kind not in "biufc":
        raise ValueError(f"dtype {value['dtype']!r} is not numeric")
    return np.frombuffer(base64.b64decode(value["base64"], validate=True), dtype=dtype).reshape(value["shape"]).copy()


def segment_to_json(segment_id: int, segment: Segment) -> dict[str, Any]:
    return {
        "id": segment_id,
        "observations": {key: list(value) if isinstance(value, tuple) else array_to_json(value)
                         for key, value in segment.observations.items()},
        "actions": array_to_json(segment.actions), "env_rewards": array_to_json(segment.env_rewards),
        "infos": list(segment.infos), "terminated": segment.terminated, "truncated": segment.truncated,
        "env_index": segment.env_index,
    }


def segment_from_json(value: dict[str, Any]) -> Segment:
    observations = {key: tuple(str(v) for v in item) if isinstance(item, list) else array_from_json(item)
                    for key, item in value["observations"].items()}
    return Segment(observations=observations, actions=array_from_json(value["actions"]),
                   env_rewards=array_from_json(value["env_rewards"]), infos=list(value["infos"]),
                   terminated=bool(value["terminated"]), truncated=bool(value["truncated"]),
                   env_index=int(value["env_index"]))


def export_jsonl(store: LabelStore, project: str, path: Path) -> int:
    """Write every label of ``project`` to ``path``; how many."""
    statement = (sa.select(labels, queries.c.first_id, queries.c.second_id, queries.c.scale, queries.c.priority,
                           queries.c.source.label("query_source"))
                 .join(queries, queries.c.id == labels.c.query_id)
                 .join(projects, projects.c.id == queries.c.project_id)
                 .where(projects.c.name == project).order_by(labels.c.id))
    count, last = 0, 0
    with store.reading() as conn, path.open("w", encoding="utf-8") as out:
        while True:
            page = conn.execute(statement.where(labels.c.id > last).limit(PAGE)).all()
            if not page:
                return count
            wanted = {s for row in page for s in (row.first_id, row.second_id) if s is not None}
            loaded = {row.id: decode_segment(row) for row in conn.execute(
                sa.select(segments).where(segments.c.id.in_(wanted)))}
            for row in page:
                line = {
                    "format": FORMAT, "key": row.key, "preference": row.preference, "rating": row.rating,
                    "confidence": row.confidence, "source": row.source, "annotator": row.annotator,
                    "created_at": row.created_at,
                    "query": {"id": row.query_id, "scale": row.scale, "priority": row.priority,
                              "source": row.query_source},
                    "first": segment_to_json(row.first_id, loaded[row.first_id]),
                    "second": None if row.second_id is None else segment_to_json(row.second_id, loaded[row.second_id]),
                }
                out.write(json.dumps(line, allow_nan=False) + "\n")
                count += 1
            last = page[-1].id


def _parse(path: Path, number: int, text: str) -> tuple[int, dict[str, Any], Label | None, Segment, Segment | None]:
    where = f"{path}:{number}"
    try:
        line = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StoreError(f"{where} is not a polyfuse label export: not JSON ({exc})") from None
    if not isinstance(line, dict) or line.get("format") != FORMAT:
        raise StoreError(f"{where} is not a polyfuse label export: each line is a JSON object with "
                         f'"format": "{FORMAT}" (write one with `polyfuse feedback export`)')
    try:
        abstained = line["preference"] is None and line["rating"] is None
        label = None if abstained else Label(preference=line["preference"], rating=line["rating"],
                                             confidence=line["confidence"])
        first = segment_from_json(line["first"])
        second = None if line["second"] is None else segment_from_json(line["second"])
        str(line["key"]), str(line["source"]), int(line["query"]["id"]), int(line["query"]["scale"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise StoreError(f"{where}: a damaged label ({type(exc).__name__}: {exc})") from None
    return number, line, label, first, second


def _project_of_key(conn: Any, key: str) -> int | None:
    """The project holding the label with idempotency key ``key``, if any (keys are unique per database)."""
    return conn.execute(sa.select(queries.c.project_id).select_from(labels.join(queries, labels.c.query_id ==
                                                                                  queries.c.id))
                        .where(labels.c.key == key)).scalar()


def import_jsonl(store: LabelStore, path: Path, project: str) -> int:
    """Add the labels in ``path`` to ``project``, all or none; how many were not there already."""
    try:
        with path.open(encoding="utf-8") as lines:
            parsed = [_parse(path, number, text) for number, text in enumerate(lines, 1) if text.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read the label export {path}: {exc}") from None
    added = 0
    with store.writing() as conn:
        project_id = store._project(conn, project)
        segment_ids: dict[int, int] = {}  # the file's ids -> this database's
        query_ids: dict[int, int] = {}
        for number, line, label, first, second in parsed:
            key = str(line["key"])
            owner = _project_of_key(conn, key)
            if owner is not None and owner != project_id:  # the same label copied into another project here
                key = f"{project}/{key}"
                owner = _project_of_key(conn, key)
            if owner is not None:  # already in this project: importing twice adds nothing
                continue
            for value, segment in ((line["first"], first), (line["second"], second)):
                if segment is not None and int(value["id"]) not in segment_ids:
                    segment_ids[int(value["id"])] = store._add_segments(conn, project_id, [encode_segment(segment)])[0]
            query = line["query"]
            try:
                if int(query["id"]) not in query_ids:
                    new = NewQuery(segment_ids[int(line["first"]["id"])],
                                   None if second is None else segment_ids[int(line["second"]["id"])],
                                   int(query["scale"]), float(query["priority"]), str(query["source"]))
                    query_ids[int(query["id"])] = store._post_queries(conn, project_id, [new])[0]
                store.record_label_in(conn, query_ids[int(query["id"])], label, str(line["source"]),
                                    line["annotator"], key, created_at=float(line["created_at"]))
            except StoreError as exc:
                raise StoreError(f"{path}:{number}: {exc}") from None
            added += 1
    return added
