"""Registration: both components are registered, catalogued, and registering them imports no torch."""

from __future__ import annotations

import subprocess
import sys


def test_registration_imports_no_torch() -> None:
    code = ("import sys, polyfuse_feedback.plugin; "
            "assert 'torch' not in sys.modules, 'torch imported at registration'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_components_are_registered(make_registry) -> None:
    from polyfuse_feedback import plugin

    registry = make_registry(plugin, installed=False)
    assert registry.get("feedback", "synthetic").kind.value == "feedback"
    assert registry.get("rewards", "preference-model").distribution == "test-plugin"
    annotator = registry.create("feedback", "synthetic", {"temperature": 0.5, "error_rate": 0.1}, seed=3)
    assert annotator.config.temperature == 0.5


def test_feedback_sources_are_checked_when_the_config_is(make_registry) -> None:
    """A misspelt source or bad params fail `polyfuse validate`, with the config path, not the run an hour in."""
    import pytest
    from polyfuse.config import validate_pipeline
    from polyfuse.errors import ConfigError
    from polyfuse_feedback import plugin

    registry = make_registry(plugin, installed=False)

    def validate(feedback) -> object:
        return validate_pipeline({"env": {"id": "polyfuse/DigitsVQA-v0"}, "modalities": {"image": "flatten"},
                                  "fuser": "concat", "reward": {"name": "preference-model",
                                                                "params": {"feedback": feedback}},
                                  "optimizer": "x"}, registry)

    with pytest.raises(ConfigError) as caught:
        validate([{"name": "synthetik"}, {"name": "synthetic", "share": 0.1, "params": {"temperature": -1}}])
    message = str(caught.value)
    assert "reward.params.feedback.0: Value error, no feedback named 'synthetik' is installed; did you mean " \
           "'synthetic'?" in message
    assert "reward.params.feedback.1: Value error, feedback source 'synthetic': params.temperature: Input should " \
           "be greater than or equal to 0" in message
    with pytest.raises(ConfigError, match="exactly one feedback source must have no share"):
        validate([{"name": "synthetic", "share": 0.5}])
    with pytest.raises(ConfigError) as caught:
        validate({"name": "synthetic", "params": {"error_rate": 0.1}})
    assert "reward.params.feedback" not in str(caught.value), "one source may be a mapping; only the optimizer fails"
