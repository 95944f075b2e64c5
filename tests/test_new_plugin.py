"""``polyfuse new-plugin`` writes distributions that install and pass their own tests as generated.

For each kind the generated ``polyfuse-NAME`` is installed alone into a private
folder, as ``scripts/test-isolated.sh`` installs the repository's plugins, its
own test suite is run against it in a subprocess, and ``polyfuse list`` must
show the new component.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from polyfuse.cli import build_parser, main
from polyfuse.errors import PolyfuseError
from polyfuse.scaffold import KINDS, LAYOUT, generate, render, validate_name

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

NAMES = {"fuser": "gated-blend", "encoder": "sensor-mlp", "reward": "shaped", "optimizer": "reinforce-b",
         "feedback": "noisy-threshold"}


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_generated_plugin_installs_passes_its_tests_and_is_listed(tmp_path: Path, kind: str) -> None:
    name = NAMES[kind]
    assert main(["new-plugin", name, "--kind", kind, "--output", str(tmp_path), "--author", "A. Person"]) == 0
    root = tmp_path / f"polyfuse-{name}"
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(target), str(root)],
        check=True, capture_output=True,
    )
    env = environment(PYTHONPATH=str(target))
    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        check=False, cwd=root, env=env, capture_output=True, text=True,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout and "skipped" not in tests.stdout, tests.stdout[-2000:]
    spec = KINDS[kind]
    listed = subprocess.run(
        [sys.executable, "-m", "polyfuse", "list", spec.kind], check=False, env=env, capture_output=True,
        text=True,
    )
    assert listed.returncode == 0, listed.stderr
    assert re.search(rf"^{re.escape(name)}\s+.*\[polyfuse-{re.escape(name)}\]$", listed.stdout, re.MULTILINE), listed.stdout


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_placeholder_is_filled_and_the_files_parse(kind: str) -> None:
    files = render("my-thing", kind, author="Jane Doe <jane@example.org>")
    for path, text in files.items():
        assert "%%" not in path + text, path
    package = "polyfuse_my_thing"
    assert {"pyproject.toml", "README.md", ".github/workflows/tests.yml", f"src/{package}/plugin.py",
            f"src/{package}/__init__.py", "tests/test_discovery.py"} <= set(files)
    for path, text in files.items():
        if path.endswith(".py"):
            compile(text, path, "exec")
    project = tomllib.loads(files["pyproject.toml"])
    assert project["project"]["name"] == "polyfuse-my-thing"
    assert project["project"]["entry-points"]["polyfuse"] == {"my-thing": f"{package}.plugin"}
    assert project["project"]["authors"] == [{"name": "Jane Doe", "email": "jane@example.org"}]
    assert ("torch" in project["project"]["dependencies"]) == KINDS[kind].needs_torch
    assert project["build-system"]["build-backend"] == "setuptools.build_meta"
    workflow = yaml.safe_load(files[".github/workflows/tests.yml"])
    steps = workflow["jobs"]["test"]["steps"]
    commands = " ".join(step.get("run", "") for step in steps)
    assert "--index-url https://download.pytorch.org/whl/cpu" in commands and "pytest" in commands
    assert [step["uses"].split("@")[0] for step in steps if "uses" in step] == [
        "actions/checkout", "actions/setup-python"]
    plugin = files[f"src/{package}/plugin.py"]
    assert not re.search(r"^(import torch|from torch)", plugin, re.MULTILINE)  # the generated test checks it runs, too
    assert 'register("my-thing", build_my_thing' in plugin
    assert f"kind: {KINDS[kind].kind}, distribution: polyfuse-my-thing" in files["README.md"]  # registry.yaml entry


def test_the_cli_offers_exactly_the_scaffolded_kinds() -> None:
    parser = build_parser()
    action = next(a for a in parser._subparsers._group_actions[0].choices["new-plugin"]._actions
                  if "--kind" in a.option_strings)
    assert list(action.choices) == list(KINDS)
    assert {template.split("/")[0] for template, _ in LAYOUT} == {"common", "kind"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Gated", "invalid plugin name 'Gated'.*'gated'"),
        ("my plugin", "invalid plugin name.*'my-plugin'"),
        ("2fast", "starting with a letter"),
        ("a--b", "single '-' or '_'"),
        ("dots.here", "invalid plugin name"),
        ("polyfuse-thing", "without the prefix: `polyfuse new-plugin thing`"),
        ("x" * 41, "keep it to 40"),
    ],
)
def test_bad_names_are_refused_with_the_fix(name: str, message: str) -> None:
    with pytest.raises(PolyfuseError, match=message):
        validate_name(name)


def test_cli_errors_are_one_line_and_nothing_is_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new-plugin", "thing", "--kind", "reward", "-o", str(tmp_path)]) == 0
    readme = tmp_path / "polyfuse-thing" / "README.md"
    readme.write_text("mine", encoding="utf-8")
    capsys.readouterr()
    assert main(["new-plugin", "thing", "--kind", "fuser", "-o", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert readme.read_text(encoding="utf-8") == "mine"
    assert main(["new-plugin", "Bad Name", "--kind", "fuser", "-o", str(tmp_path)]) == 2
    assert "invalid plugin name" in capsys.readouterr().err
    assert main(["new-plugin", "concat", "--kind", "fuser", "-o", str(tmp_path)]) == 2  # the core's fuser
    assert "already taken by polyfuse" in capsys.readouterr().err
    (tmp_path / "file").write_text("", encoding="utf-8")
    with pytest.raises(PolyfuseError, match="is a file"):
        generate("other", "fuser", tmp_path / "file")
    with pytest.raises(SystemExit):
        main(["new-plugin", "thing2", "--kind", "dataset"])  # argparse lists the choices
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "polyfuse-other").exists() and not (Path.cwd() / "polyfuse-thing2").exists()


def test_the_templates_are_package_data() -> None:
    """A wheel of polyfuse carries the templates (pyproject's package-data glob matches every one)."""
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    globs = project["tool"]["setuptools"]["package-data"]["polyfuse"]
    templates = Path(__file__).resolve().parents[1] / "core" / "polyfuse" / "scaffold" / "templates"
    found = {path.relative_to(templates.parent.parent).as_posix() for path in templates.rglob("*") if path.is_file()}
    matched = {path for path in found if any(Path(path).match(glob) for glob in globs)}
    assert found and matched == found
