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
