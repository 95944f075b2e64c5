"""Training metrics as JSON lines (one object per line, each with its ``step``), mirrored to TensorBoard.

``metrics.jsonl`` is appended and flushed line by line, so a killed run
keeps everything up to the kill; on resume, lines after the checkpoint's
step are dropped so the curves have no gap and no duplicate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a metrics file (a line cut short by a kill is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "step" in record:
            records.append(record)
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Keep only the lines at or before ``step`` (the checkpoint a run resumes from)."""
    kept = [record for record in read_metrics(path) if record["step"] <= step]
    path.write_text("".join(json.dumps(record) + "\n" for record in kept), encoding="utf-8")


def json_number(value: float) -> float | None:
    """``value`` as JSON allows it: NaN and infinities become null."""
    return value if math.isfinite(value) else None


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and, when ``torch.utils.tensorboard`` imports, to TensorBoard.

    Each record has a ``kind`` (``train``, ``eval``, ``warm_start``) and a
    ``step``; its numeric fields become TensorBoard scalars tagged
    ``<field>`` (fields are already namespaced, e.g. ``eval/success``).
    """

    def __init__(self, output_dir: Path, resume_step: int | None = None) -> None:
        self.path = output_dir / METRICS_FILE
        if resume_step is None:
            self.path.write_text("", encoding="utf-8")
        else:
            truncate_metrics(self.path, resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        self._tensorboard = _tensorboard_writer(output_dir / TENSORBOARD_DIR, resume_step)

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tensorboard.add_scalar(key, value, global_step=record["step"])
            self._tensorboard.flush()

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def _tensorboard_writer(directory: Path, resume_step: int | None) -> Any:
    """A SummaryWriter when the tensorboard package is installed, else None (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    purge_step = None if resume_step is None else resume_step + 1
    return SummaryWriter(str(directory), purge_step=purge_step)
