"""A plugin written outside the repository, following CONTRIBUTING.md, is discovered through its entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "third-party-plugin" / "polyfuse-maxpool"


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory) -> dict[str, str]:
    """Install the example distribution into a private folder and return an environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True,
    )
    return {**os.environ, "PYTHONPATH": str(target)}


def polyfuse(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyfuse.cli", *args], env=env, capture_output=True, text=True)


def test_its_fuser_is_listed_and_usable_by_name(installed_example) -> None:
    listed = polyfuse(installed_example, "list", "fusers", "max*")
    assert listed.returncode == 0, listed.stderr
    assert "max-pool" in listed.stdout and "[polyfuse-maxpool]" in listed.stdout
    plugins = polyfuse(installed_example, "plugins")
    assert "polyfuse-maxpool 0.1.0  [maxpool = polyfuse_maxpool.plugin]  loaded" in plugins.stdout
    build = subprocess.run(
        [sys.executable, "-c",
         "import torch; from polyfuse.registry import default_registry as r;"
         "f = r().create('fusers', 'max-pool', {'hidden_dim': 5}, input_dims={'a': 3, 'b': 2});"
         "print(tuple(f({'a': torch.ones(4, 3), 'b': torch.ones(4, 2)}).shape))"],
        env=installed_example, capture_output=True, text=True,
    )
    assert build.stdout.strip() == "(4, 5)", build.stderr


def test_it_can_be_switched_off(installed_example) -> None:
    listed = polyfuse(installed_example, "-p", "no:polyfuse-maxpool", "list", "fusers", "max*")
    assert "max-pool" not in listed.stdout
    only_core = polyfuse({**installed_example, "POLYFUSE_PLUGINS": ""}, "list", "fusers", "max*")
    assert "max-pool" not in only_core.stdout


def test_its_own_tests_pass_with_the_polyfuse_fixtures(installed_example) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        env=installed_example, capture_output=True, text=True, cwd=EXAMPLE,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
