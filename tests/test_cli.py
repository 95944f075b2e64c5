"""The `polyfuse` command as a user runs it: a subprocess, real entry points, no tracebacks for mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"


def polyfuse(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polyfuse.cli", *args], capture_output=True, text=True)


def test_help_is_fast_and_imports_no_torch() -> None:
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from polyfuse.cli import main\n"
         "try: main(['plugins'])\nexcept SystemExit: pass\n"
         "heavy = [m for m in ('torch', 'timm', 'sentence_transformers', 'gymnasium', 'ray') if m in sys.modules]\n"
         "print('HEAVY', heavy)"],
        capture_output=True, text=True,
    )
    assert "HEAVY []" in probe.stdout, probe.stdout + probe.stderr
    assert "usage: polyfuse" in polyfuse("--help").stdout


def test_plugins_lists_distributions_components_and_json() -> None:
    text = polyfuse("plugins")
    assert text.returncode == 0
    assert "polyfuse 0.1.0  [builtin-fusers = polyfuse.builtins.fusers]  loaded" in text.stdout
    rows = json.loads(polyfuse("plugins", "--json").stdout)
    fusers = next(r for r in rows if r["name"] == "builtin-fusers")
    assert {"kind": "fusers", "name": "low-rank"} in fusers["components"]
    assert all(r["status"] == "loaded" for r in rows), [r for r in rows if r["errors"]]


def test_list_by_kind_and_wildcard() -> None:
    listed = polyfuse("list", "fusers", "*tensor*")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == ["tensor"]
    everything = polyfuse("list").stdout
    for header in ("encoders:", "fusers:", "rewards:", "optimizers:"):
        assert header in everything
    rows = json.loads(polyfuse("list", "fusers", "--json").stdout)
    assert {r["name"] for r in rows} >= {"concat", "sum", "mean", "gated", "attention", "late", "tensor", "low-rank"}
    assert all(r["installed"] for r in rows)


def test_list_all_shows_what_can_be_installed() -> None:
    rows = json.loads(polyfuse("-p", "no:polyfuse-dqn", "list", "optimizers", "--all", "--json").stdout)
    dqn = next(r for r in rows if r["name"] == "dqn")
    assert dqn == {**dqn, "installed": False, "install": "pip install polyfuse-dqn"}
    text = polyfuse("-p", "no:polyfuse-dqn", "list", "optimizers", "--all").stdout
    assert "(not installed: pip install polyfuse-dqn)" in text


def test_validate_good_and_bad_configs() -> None:
    good = polyfuse("validate", str(DATA / "good_pipeline.yaml"))
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip().endswith("good_pipeline.yaml: valid")
    bad = polyfuse("validate", str(DATA / "bad_pipeline.yaml"))
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert "4 problems" in bad.stderr
    assert "env.num_envs: Input should be greater than 0 (got 0)" in bad.stderr
    assert "fuser.params.hidden_dim: Input should be greater than 0 (got -3)" in bad.stderr
    assert "optimizer.params.learning_rat: Extra inputs are not permitted" in bad.stderr
    assert "modalities.image.encoder.name: no encoder named 'smallcnn' is installed; did you mean 'small-cnn'?" \
        in bad.stderr


def test_schema_includes_plugin_configs(tmp_path: Path) -> None:
    schema = json.loads(polyfuse("schema").stdout)
    encoder_options = schema["$defs"]["ModalityConfig"]["properties"]["encoder"]["anyOf"]
    assert {"sbert", "small-cnn"} <= {o.get("const") for o in encoder_options}
    out = tmp_path / "schema.json"
    assert polyfuse("schema", "-o", str(out)).returncode == 0
    assert json.loads(out.read_text()) == schema


def test_user_mistakes_are_one_line_errors() -> None:
    kind = polyfuse("list", "fusors")
    assert kind.returncode == 2
    assert kind.stderr == (
        "error: unknown component kind 'fusors'; did you mean 'fusers'? "
        "choose one of: encoders, fusers, rewards, optimizers, datasets, feedback\n"
    )
    missing = polyfuse("validate", "does-not-exist.yaml")
    assert missing.returncode == 2
    assert missing.stderr == "error: config file not found: does-not-exist.yaml\n"
    switch = polyfuse("-p", "timm", "list")
    assert switch.returncode == 2 and "-p takes no:NAME" in switch.stderr
