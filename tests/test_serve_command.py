"""``polyfuse serve``'s arguments, checked before anything is loaded (no trained run needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from polyfuse.cli import main


def test_an_unknown_query_source_is_refused_naming_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("polyfuse_feedback")
    code = main(["serve", str(tmp_path / "run"), "--log-feedback", str(tmp_path / "served.sqlite"),
                 "--query-source", "synthetc"])
    error = capsys.readouterr().err
    assert code != 0 and "error: --query-source: no feedback named 'synthetc'" in error and "'synthetic'" in error
    assert not (tmp_path / "served.sqlite").exists()  # refused before the label store was opened
