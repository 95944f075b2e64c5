"""Registration, configs and validation of the audio encoders; the environment's entry point."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

import polyfuse_audio.plugin
from polyfuse_audio.plugin import HFAudioConfig, LogMelCNNConfig


def test_registered_without_importing_torch_gymnasium_or_transformers(make_registry):
    registry = make_registry(polyfuse_audio.plugin, installed=False)
    assert {c.name for c in registry.list("encoders")} == {"log-mel-cnn", "hf-audio"}
    probe = subprocess.run([sys.executable, "-c", "import sys, polyfuse_audio.plugin; print([m for m in "
                            "('torch', 'gymnasium', 'transformers') if m in sys.modules])"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]", probe.stderr


@pytest.mark.parametrize(("params", "message"), [
    ({"n_mels": 2}, "greater than or equal to 4"),
    ({"channels": [0]}, "every channel count must be in 1..4096"),
    ({"sample_rte": 8000}, "Extra inputs are not permitted"),
])
def test_log_mel_cnn_config_rejects_mistakes(params, message):
    with pytest.raises(ValidationError, match=message):
        LogMelCNNConfig.model_validate(params)


def test_hf_audio_config_needs_a_model():
    with pytest.raises(ValidationError, match="Field required"):
        HFAudioConfig.model_validate({})


def test_the_declared_space_check_refuses_what_is_not_audio(make_registry):
    from gymnasium import spaces

    from polyfuse.declarations import space_mismatch
    from polyfuse_audio.spaces import Audio

    registry = make_registry(polyfuse_audio.plugin, installed=False)
    for name in ("log-mel-cnn", "hf-audio"):
        factory = registry.get("encoders", name).factory
        assert space_mismatch(factory, name, Audio(100, 8000)) is None
        problem = space_mismatch(factory, name, spaces.Box(0, 255, (8, 8, 1), np.uint8))
        assert problem.startswith(f"{name} reads audio") and "Box(0, 255, (8, 8, 1)" in problem


def test_polyfuse_validate_reports_the_encoder_and_the_space(tmp_path):
    pytest.importorskip("polyfuse_ppo", reason="a pipeline config names an optimizer (polyfuse-ppo)")
    config = tmp_path / "bad.yaml"
    config.write_text(
        "env: {id: polyfuse/SpokenDigitsVQA-v0}\n"
        "modalities:\n  image: {encoder: log-mel-cnn}\n  speech: {encoder: {name: log-mel-cnn, params: {sample_rate: 8000}}}\n"
        "fuser: concat\noptimizer: ppo\n"
    )
    result = subprocess.run([sys.executable, "-m", "polyfuse.cli", "validate", str(config)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "log-mel-cnn reads audio" in result.stderr + result.stdout
    assert "Box(0, 255, (8, 8, 1)" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_the_environment_is_found_by_id_in_a_fresh_process():
    probe = subprocess.run([sys.executable, "-c", "from polyfuse.envs import make_env; "
                            "print(make_env('polyfuse/SpokenDigitsVQA-v0').observation_space['speech'])"],
                           capture_output=True, text=True)
    assert probe.stdout.startswith("Audio(") and "8000 Hz, int16)" in probe.stdout, probe.stderr


def test_a_misspelt_id_suggests_the_spoken_env():
    from polyfuse.envs import check_env_id
    from polyfuse.errors import PolyfuseError

    with pytest.raises(PolyfuseError, match="did you mean .*'polyfuse/SpokenDigitsVQA-v0'"):
        check_env_id("polyfuse/SpokenDigitVQA-v0")
