"""A corpus of bad pipeline configs: each gets a clean, bounded message from `validate`, before any training.

Every file in ``bad_configs/`` says what is wrong in its first line and what the
message must contain (the config path) in ``# expect: ...``; ``@TMP@`` stands
for a scratch folder holding ``a-file`` (a plain file). Cases a file cannot
hold well (an alias bomb, non-UTF-8 bytes, a 5 MB value) are generated here.
Each goes through ``polyfuse validate`` in-process; a few go through ``polyfuse
run`` too, which must refuse them the same way, before writing anything.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from polyfuse.cli import main

CORPUS = Path(__file__).parent / "bad_configs"
SECONDS = 30.0
"""A runaway bound (an alias bomb or a 1e12-wide layer that is built would take minutes or never end), not a speed
target: typical configs take well under a second, and a loaded CI machine must not fail a correct refusal."""
GOOD = (
    "env: {id: polyfuse/DigitsVQA-v0, num_envs: 4, vectorization: native}\n"
    "modalities:\n  image: {encoder: small-cnn}\n  question: {encoder: sbert}\n"
    "fuser: {name: gated, params: {hidden_dim: 64}}\noptimizer: dqn\n"
    "trainer: {total_steps: 1000, output_dir: @TMP@/out}\n"
)


def billion_laughs() -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


GENERATED: dict[str, tuple[bytes, str]] = {
    "alias_bomb": (billion_laughs().encode(), "expands to more than"),
    "alias_bomb_in_env_kwargs": (
        (billion_laughs() + GOOD.replace("vectorization: native}", "vectorization: native, kwargs: {x: *a9}}"))
        .encode(), "expands to more than"),
    "non_utf8": (GOOD.replace("gated", "gat\u00e9d").encode("latin-1"), "not UTF-8 text: byte 0xe9 at line"),
    "utf16": (GOOD.encode("utf-16"), "not UTF-8 text"),
    "deeply_nested_list": (("env: {kwargs: {x: " + "[" * 100_000 + "]" * 100_000 + "}}\n").encode(), "nested more"),
    "huge_string_hidden_dim": (GOOD.replace("hidden_dim: 64", "hidden_dim: '" + "9" * 5_000_000 + "x'").encode(),
                               "fuser.params.hidden_dim"),
    "ten_thousand_bad_modalities": (
        (GOOD.split("modalities:")[0] + "modalities:\n" + "".join(f"  m{i}: {{encoder: nope}}\n" for i in range(10_000))
         + "fuser: concat\noptimizer: dqn\n").encode(), "... and 9950 more like these"),
    "huge_env_id": (GOOD.replace("id: polyfuse/DigitsVQA-v0", "id: " + "e" * 5_000_000).encode(), "env.id"),
    "huge_encoder_name": (GOOD.replace("encoder: small-cnn", "encoder: " + "c" * 5_000_000).encode(),
                          "modalities.image.encoder.name"),
}


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.yaml"))


def expectation(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect: "):
            return line.removeprefix("# expect: ")
    raise AssertionError(f"{path.name} has no '# expect: ' line")


@pytest.fixture(scope="module", autouse=True)
def warm_imports() -> None:
    """Pay one-time imports before timing: gymnasium and minigrid, and timm, whose config checks model names.

    Cold, ``polyfuse validate`` takes about 0.5 s and 75 MB (timm configs: about
    4 s and 900 MB, importing torch); each config after that must finish within the runaway bound.
    """
    import minigrid  # noqa: F401

    import polyfuse.envs  # noqa: F401
    from polyfuse_timm.models import check_model_name

    check_model_name("resnet18")


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "prefs").mkdir()  # the metadata of a DigitsVQA preferences folder: what validate reads
    (tmp_path / "prefs" / "preferences.json").write_text(json.dumps({
        "format": "polyfuse-preferences", "version": 1, "pairs": 0, "action_space": {"type": "Discrete", "n": 12},
        "observation_space": {"type": "Dict", "spaces": {
            "image": {"type": "Box", "shape": [8, 8, 1], "dtype": "|u1", "low": 0, "high": 255},
            "question": {"type": "Text", "max_length": 64, "min_length": 1, "charset": " ?abcdefghijklmnopqrstuvwxyz"},
        }},
    }))
    return tmp_path


def materialise(raw: bytes, name: str, scratch: Path) -> Path:
    path = scratch / f"{name}.yaml"
    path.write_bytes(raw.replace(b"@TMP@", str(scratch).encode()))
    return path


def assert_refused(argv: list[str], expect: str, capsys: pytest.CaptureFixture[str]) -> str:
    started = time.perf_counter()
    code = main(argv)
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert code != 0, f"accepted: {out}"
    assert "Traceback" not in out + err
    assert expect in err, err[:2000]
    assert len(err) < 40_000, f"message of {len(err)} characters"  # at most 50 problems of 700 characters
    assert elapsed < SECONDS, f"took {elapsed:.1f} s"
    return err


def test_the_corpus_is_large_enough() -> None:
    assert len(corpus_files()) + len(GENERATED) >= 50


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.stem)
def test_validate_refuses_each_file(path: Path, scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = materialise(path.read_bytes(), path.stem, scratch)
    assert_refused(["validate", str(config)], expectation(path), capsys)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_validate_refuses_each_generated_case(name: str, scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, expect = GENERATED[name]
    assert_refused(["validate", str(materialise(raw, name, scratch))], expect, capsys)


def test_the_good_base_config_is_valid(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The corpus files differ from this config by their one mistake."""
    assert main(["validate", str(materialise(GOOD.encode(), "good", scratch))]) == 0, capsys.readouterr().err


RUN_CASES = [
    "unknown_env_id", "modality_key_missing", "text_encoder_on_image", "image_encoder_on_text", "output_dir_is_file",
    "output_dir_nul", "output_dir_name_too_long", "hidden_dim_1e12", "num_envs_1e9", "dqn_batch_size_huge",
    "num_threads_huge", "tensor_product_too_large", "dataset_text_encoder_on_image", "dpo_without_dataset",
    "duplicate_fuser",
]


@pytest.mark.parametrize("stem", RUN_CASES)
def test_run_refuses_before_training(stem: str, scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = CORPUS / f"{stem}.yaml"
    config = materialise(path.read_bytes(), stem, scratch)
    assert_refused(["run", str(config)], expectation(path), capsys)
    assert not (scratch / "out").exists(), "nothing is written before the config is known to be good"


@pytest.mark.parametrize("name", ["alias_bomb_in_env_kwargs", "non_utf8"])
def test_run_refuses_generated_cases(name: str, scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, expect = GENERATED[name]
    assert_refused(["run", str(materialise(raw, name, scratch))], expect, capsys)


@pytest.mark.parametrize("stem", ["hidden_dim_1e12", "num_envs_1e9", "babyai_key_missing"])
def test_a_cold_validate_is_fast_and_small(stem: str, scratch: Path) -> None:
    """The whole command, in a fresh process: no torch import, bounded time and under 500 MB (peak RSS, Linux)."""
    import subprocess
    import sys

    config = materialise((CORPUS / f"{stem}.yaml").read_bytes(), stem, scratch)
    probe = ("import sys\nfrom polyfuse.cli import main\ncode = main(['validate', sys.argv[1]])\n"
             "peak = next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]\n"
             "print('RSS_KB', peak, 'TORCH', 'torch' in sys.modules)\nsys.exit(code)")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True, text=True, timeout=60, check=False)
    assert time.perf_counter() - started < SECONDS
    assert done.returncode == 2 and "Traceback" not in done.stderr
    rss_kb = int(done.stdout.split()[1])
    assert rss_kb < 500 * 1024 and "TORCH False" in done.stdout, done.stdout


def test_memory_is_judged_against_the_containers_limit(
    scratch: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a container (CI), its cgroup limit is the memory a run gets, not the host's."""
    from polyfuse import preflight

    limit = scratch / "memory.max"
    monkeypatch.setattr(preflight, "CGROUP_LIMITS", (limit, scratch / "absent"))
    limit.write_text("max\n")
    assert preflight.machine_memory() > 1 << 30
    limit.write_text(f"{512 * 1024 * 1024}\n")
    assert preflight.machine_memory() == 512 * 1024 * 1024
    config = materialise(GOOD.replace("num_envs: 4, vectorization: native", "num_envs: 4096").encode(), "envs", scratch)
    assert_refused(["validate", str(config)], "env.num_envs: 4096 environments: about 1", capsys)


class SlowToMake:
    """An env whose constructor never finishes in time (stands in for an absurd size in env.kwargs)."""

    def __init__(self) -> None:
        time.sleep(30)


def test_an_env_too_slow_to_make_is_refused_in_bounded_time(
    scratch: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gymnasium as gym

    from polyfuse import preflight

    monkeypatch.setattr(preflight, "ENV_PROBE_SECONDS", 1)
    if "polyfuse-test/SlowToMake-v0" not in gym.registry:
        gym.register("polyfuse-test/SlowToMake-v0", entry_point=f"{__name__}:SlowToMake")
    config = materialise(GOOD.replace("polyfuse/DigitsVQA-v0", "polyfuse-test/SlowToMake-v0").encode(), "s", scratch)
    assert_refused(["validate", str(config)], "env.kwargs: polyfuse-test/SlowToMake-v0 took more than 1 s", capsys)


def test_a_good_dataset_only_config_is_valid(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ("modalities:\n  image: {encoder: small-cnn}\n  question: {encoder: sbert}\nfuser: concat\noptimizer: dpo\n"
            "dataset: {name: preferences, params: {path: @TMP@/prefs}}\n"
            "trainer: {budget_unit: gradient_steps, output_dir: @TMP@/out}\n")
    assert main(["validate", str(materialise(text.encode(), "dataset", scratch))]) == 0, capsys.readouterr().err


def test_run_overrides_are_checked_like_the_config(scratch: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`polyfuse run --output-dir FILE` (the embedded default) is refused before anything is built."""
    assert_refused(["run", "--output-dir", str(scratch / "a-file")], "trainer.output_dir", capsys)
    assert_refused(["run", "--output-dir", str(scratch / "out"), "--steps", "0"], "trainer.total_steps", capsys)
