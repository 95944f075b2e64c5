"""The script that makes the shipped recordings, on a few voices (needs Debian's espeak-ng)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from polyfuse_audio.recordings import load

SCRIPT = Path(__file__).parents[1] / "scripts" / "make_recordings.py"


@pytest.mark.skipif(shutil.which("espeak-ng") is None,
                    reason="espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
def test_makes_recordings_the_environment_reads(tmp_path):
    output = tmp_path / "questions.npz"
    result = subprocess.run([sys.executable, str(SCRIPT), "--voices", "1", "--output", str(output)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "36 recordings" in result.stdout
    recordings = load(output)
    assert recordings.sample_rate == 8000 and len(recordings.questions) == 18
    assert len(recordings.voices) == 2 and len(recordings.test_voices) == 1
    for text in recordings.questions:
        assert len(recordings.clips(text, "train")) == 1 and len(recordings.clips(text, "test")) == 1
    assert (recordings.lengths > 0.4 * 8000).all() and (np.abs(recordings.waveforms.astype(np.int32)).max(axis=1) > 3000).all()


def test_without_espeak_ng_the_script_says_how_to_install_it(tmp_path):
    bare = {**os.environ, "PATH": str(tmp_path)}  # no espeak-ng on this PATH
    result = subprocess.run([sys.executable, str(SCRIPT), "--output", str(tmp_path / "x.npz")],
                            capture_output=True, text=True, env=bare)
    assert result.returncode == 2 and "apt-get install espeak-ng" in result.stderr
