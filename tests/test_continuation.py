"""Continuous retraining: a run continued from a served one (trainer.continue_from / --continue-from) starts from
the served policy, and its gate promotes a better candidate and refuses a worse one.

Policies are told apart by what they were trained on, with margins no seed can close: a short DigitsVQA PPO run
on the environment's reward answers about 0.45 of held-out questions (question priors), and the same run on the
negated reward (``reward: {name: env, params: {scale: -1}}``: the right answer punished) learns to answer
wrongly, about 0.05. So a policy fine-tuned on the right reward from the "punished" one is clearly better, and
one fine-tuned on the punished reward from the fair one clearly worse.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from polyfuse.cli import main
from polyfuse.config import PipelineConfig, validate_pipeline
from polyfuse.errors import PolyfuseError
from polyfuse.training.checkpoint import load_checkpoint
from polyfuse.training.continuation import read_policy_weights
from polyfuse.training.metrics import read_metrics
from polyfuse.training.promotion import POINTER_FILE, read_promotion
from polyfuse.training.saved_policy import checkpoint_folder
from polyfuse.training.trainer import Trainer

pytestmark = pytest.mark.slow  # short PPO runs on DigitsVQA: 5-15 s each on 2 loaded cores

PUNISHED = {"name": "env", "params": {"scale": -1.0}}


def pipeline(output_dir: Path, steps: int, reward: Any = "env", ppo: dict[str, Any] | None = None,
             fuser_dim: int = 64, **trainer: Any) -> dict[str, Any]:
    return {
        "env": {"id": "polyfuse/DigitsVQA-v0", "num_envs": 8},
        "modalities": {"image": {"encoder": "small-cnn"}, "question": {"encoder": "sbert"}},
        "fuser": {"name": "concat", "params": {"output_dim": fuser_dim}},
        "reward": reward,
        "optimizer": {"name": "ppo", "params": {"n_steps": 32, "activation": "relu", **(ppo or {})}},
        "trainer": {"total_steps": steps, "eval_every": 100_000, "eval_episodes": 100, "checkpoint_every": 100_000,
                    "eval_modes": ["greedy"], "output_dir": str(output_dir), **trainer},
    }


def config(*args: Any, **kwargs: Any) -> PipelineConfig:
    return validate_pipeline(pipeline(*args, **kwargs))


FINE_TUNE = {"kl_coef": 0.1, "learning_rate": 0.003}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two served runs, trained briefly: ``fair`` on the env's reward, ``punished`` on its negation."""
    root = tmp_path_factory.mktemp("served")
    built = {}
    for name, reward in (("fair", "env"), ("punished", PUNISHED)):
        built[name] = root / name
        Trainer(config(root / name, 256, reward=reward), progress=False).run()
    return built


def served_copy(runs: dict[str, Path], name: str, tmp_path: Path) -> Path:
    """A served run of its own for one test (promotion writes into it)."""
    return Path(shutil.copytree(runs[name], tmp_path / "served"))


def test_a_better_candidate_is_promoted_and_served(runs: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    served = served_copy(runs, "punished", tmp_path)
    incumbent_checkpoint = checkpoint_folder(served)
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(pipeline(tmp_path / "candidate", 1024, ppo=FINE_TUNE)))

    assert main(["run", str(path), "--continue-from", str(served), "--json"]) == 0
    out = capsys.readouterr().out
    decision = json.loads(out.strip().splitlines()[-1])["promotion"]
    candidate, incumbent = decision["candidate"]["greedy"]["success"], decision["incumbent"]["greedy"]["success"]
    assert candidate > incumbent + 0.2, decision
    assert decision["passed"] and decision["promoted"]
    assert f"promoted: {served} now serves" in out

    promotion = read_promotion(served)
    kept = tmp_path / "candidate" / "promoted-1024"
    assert promotion is not None and promotion.checkpoint == kept.resolve() and promotion.step == 1024
    assert checkpoint_folder(served) == kept.resolve()
    assert promotion.figures["candidate"]["eval/success"] == candidate
    assert decision["incumbent"]["checkpoint"] == str(incumbent_checkpoint)

    records = read_metrics(tmp_path / "candidate" / "metrics.jsonl")
    first_eval = next(r for r in records if r["kind"] == "eval")
    assert first_eval["step"] == 0 and first_eval["eval/success"] == incumbent  # it started from the served policy
    assert [r["promoted"] for r in records if r["kind"] == "promotion"] == [True]
    with pytest.raises(PolyfuseError, match=r"holds promoted-1024, promoted to be served"):  # a fresh run there
        Trainer(config(tmp_path / "candidate", 256), progress=False).run()
    assert checkpoint_folder(served) == kept.resolve()

    # the KL reference is the served policy, not a fresh initialisation
    reference = load_checkpoint(kept)["optimizer"]["reference"]
    served_policy, _ = read_policy_weights(incumbent_checkpoint)
    assert reference.keys() and all(torch.equal(reference[k], served_policy[k]) for k in reference)


def test_a_worse_candidate_is_refused_and_a_resumed_continuation_is_judged_again(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    served = served_copy(runs, "fair", tmp_path)
    continued = {"reward": PUNISHED, "ppo": FINE_TUNE, "continue_from": str(served)}
    summary = Trainer(config(tmp_path / "candidate", 512, **continued), progress=False).run()
    decision = summary["promotion"]
    assert decision["candidate"]["greedy"]["success"] < decision["incumbent"]["greedy"]["success"] - 0.2, decision
    assert not decision["passed"] and not decision["promoted"]
    assert not (served / POINTER_FILE).exists()
    assert not list((tmp_path / "candidate").glob("promoted-*"))

    longer = Trainer(config(tmp_path / "candidate", 1024, **continued), resume=True, progress=False).run()
    assert longer["steps"] == 1024 and longer["promotion"]["candidate"]["step"] == 1024
    assert not longer["promotion"]["promoted"] and not (served / POINTER_FILE).exists()
    with pytest.raises(PolyfuseError, match=r"config changed since the checkpoint \(trainer\.continue_from\)"):
        Trainer(config(tmp_path / "candidate", 2048, **{**continued, "continue_from": str(runs["punished"])}),
                resume=True, progress=False).run()


def test_no_promote_evaluates_without_promoting_and_resume_can_promote(runs: dict[str, Path], tmp_path: Path) -> None:
    served = served_copy(runs, "fair", tmp_path)
    summary = Trainer(config(tmp_path / "candidate", 256, continue_from=str(served),
                             promotion={"promote": False, "tolerance": 1.0}), progress=False).run()
    assert summary["promotion"]["passed"] and not summary["promotion"]["promoted"]
    assert not (served / POINTER_FILE).exists()
    # judged, looked at, then promoted: the gate's settings are not part of what a resume must keep
    promoting = config(tmp_path / "candidate", 256, continue_from=str(served), promotion={"tolerance": 1.0})
    assert Trainer(promoting, resume=True, progress=False).run()["promotion"]["promoted"]
    assert checkpoint_folder(served) == (tmp_path / "candidate" / "promoted-256").resolve()


def test_a_pipeline_that_does_not_fit_the_served_one_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(PolyfuseError, match=r"continue_from: .* differs from the one .* in fuser\.params\.output_dim"):
        Trainer(config(tmp_path / "other", 256, fuser_dim=32, continue_from=str(runs["fair"])), progress=False).run()
    head = config(tmp_path / "other", 256, ppo={"hidden_sizes": [16]}, continue_from=str(runs["fair"]))
    with pytest.raises(PolyfuseError, match=r"does not fit this pipeline's policy network; use the same"):
        Trainer(head, progress=False).run()


def test_an_optimizer_without_a_policy_network_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    data = pipeline(tmp_path / "dqn", 256, continue_from=str(runs["fair"]))
    data["optimizer"] = {"name": "dqn", "params": {"learning_starts": 64}}
    with pytest.raises(PolyfuseError, match=r"optimizer 'dqn' cannot start from a saved policy"):
        Trainer(validate_pipeline(data), progress=False).run()


def test_an_output_dir_holding_the_served_checkpoint_is_refused(runs: dict[str, Path]) -> None:
    with pytest.raises(PolyfuseError, match=r"holds .* the checkpoint .* serves, and a fresh run there would delete"):
        Trainer(config(runs["fair"], 256, continue_from=str(runs["fair"])), progress=False).run()
    assert checkpoint_folder(runs["fair"]).is_dir()


def test_a_missing_served_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolyfuseError, match=r"trainer.continue_from: .*nowhere does not exist"):
        Trainer(config(tmp_path / "run", 256, continue_from=str(tmp_path / "nowhere")), progress=False).run()


def test_the_flags_set_the_config_and_reach_every_rank_of_a_data_parallel_run(tmp_path: Path) -> None:
    from polyfuse.cli import build_parser
    from polyfuse.registry import default_registry
    from polyfuse.run import resolve_config
    from polyfuse.training.launch import rank_arguments

    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(pipeline(tmp_path / "candidate", 256)))
    args = build_parser().parse_args(["run", str(path), "--continue-from", "runs/served", "--no-promote",
                                      "--nproc", "2"])
    trainer = resolve_config(args, default_registry()).trainer
    assert trainer.continue_from == Path("runs/served") and not trainer.promotion.promote
    assert rank_arguments(args) == ["run", str(path), "--continue-from", "runs/served", "--no-promote"]


def test_the_retraining_examples_configs_are_valid_and_fit_each_other() -> None:
    """examples/continuous_retraining: finetune.yaml continues base.yaml's runs (run.sh runs the whole loop)."""
    pytest.importorskip("polyfuse_feedback")
    from polyfuse.config import load_pipeline

    folder = Path(__file__).resolve().parents[1] / "examples" / "continuous_retraining"
    base, finetune = load_pipeline(folder / "base.yaml"), load_pipeline(folder / "finetune.yaml")
    assert base.modalities == finetune.modalities and base.fuser == finetune.fuser
    assert finetune.optimizer.params["kl_coef"] > 0 and finetune.reward.name == "preference-model"
    assert finetune.trainer.output_dir != base.trainer.output_dir


def test_a2c_continues_a_served_ppo_policy(runs: dict[str, Path], tmp_path: Path) -> None:
    """The contract is the policy network's: an a2c run starts from a ppo run's policy (same head)."""
    data = pipeline(tmp_path / "a2c", 256, continue_from=str(runs["fair"]), promotion={"promote": False})
    data["optimizer"] = {"name": "a2c", "params": {"n_steps": 32, "activation": "relu"}}
    summary = Trainer(validate_pipeline(data), progress=False).run()
    first_eval = next(r for r in read_metrics(tmp_path / "a2c" / "metrics.jsonl") if r["kind"] == "eval")
    assert first_eval["step"] == 0 and first_eval["eval/success"] == summary["promotion"]["incumbent"]["success"]


def test_a_checkpoint_folder_is_compared_but_never_promoted_into(runs: dict[str, Path], tmp_path: Path) -> None:
    """A pointer written into a checkpoint folder is followed by nothing (serving a checkpoint folder serves it as
    it is) and a resumed run's rotation carries it away: refused before training, unless --no-promote."""
    folder = checkpoint_folder(served_copy(runs, "fair", tmp_path))
    with pytest.raises(PolyfuseError, match=r"is a checkpoint folder, .* give the served run's output_dir"):
        Trainer(config(tmp_path / "candidate", 256, continue_from=str(folder)), progress=False).run()
    assert not (tmp_path / "candidate").exists() and not (folder / POINTER_FILE).exists()


def test_a_continued_run_without_an_env_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    """No env: no held-out episodes, so no gate; refused rather than trained and never promoted."""
    from polyfuse.training.continuation import check_gateable

    continued = config(tmp_path / "candidate", 256, continue_from=str(runs["fair"]))
    check_gateable(continued)
    with pytest.raises(PolyfuseError, match=r"continue_from: the promotion gate .* has no env"):
        check_gateable(continued.model_copy(update={"env": None}))


def test_a_fresh_run_in_a_folder_holding_a_promotion_pointer_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    """Starting afresh keeps promoted.json (it is no run file), and serve/eval/--continue-from would follow it to
    the old candidate instead of the new run: refused, naming the pointer."""
    from polyfuse.training.promotion import Promotion, write_promotion

    served = served_copy(runs, "fair", tmp_path)
    write_promotion(served, Promotion(checkpoint_folder(runs["punished"]), 256))
    with pytest.raises(PolyfuseError, match=r"holds promoted\.json, which points it at .*delete .*promoted\.json"):
        Trainer(config(served, 256), progress=False).run()
    assert checkpoint_folder(served) == checkpoint_folder(runs["punished"]).resolve()


def test_a_promotion_made_during_the_gate_is_the_incumbent_judged(runs: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two rounds gating at once: the later one must not overwrite a promotion it never compared itself with."""
    from polyfuse.training import saved_policy
    from polyfuse.training.promotion import Promotion, write_promotion

    served, rival = served_copy(runs, "fair", tmp_path), checkpoint_folder(runs["punished"]).resolve()
    real, loaded = saved_policy.load_saved_policy, []

    def load_then_another_gate_promotes(path: Path, registry: Any) -> Any:
        policy = real(path, registry)
        loaded.append(policy.location)
        if len(loaded) == 1:
            write_promotion(served, Promotion(rival, 256))
        return policy

    monkeypatch.setattr(saved_policy, "load_saved_policy", load_then_another_gate_promotes)
    summary = Trainer(config(tmp_path / "candidate", 256, continue_from=str(served), promotion={"tolerance": 1.0}),
                      progress=False).run()
    assert loaded == [served / "checkpoint", rival]
    decision = summary["promotion"]
    assert decision["incumbent"]["checkpoint"] == str(rival) and decision["promoted"]
    assert checkpoint_folder(served) == (tmp_path / "candidate" / "promoted-256").resolve()


def test_a_stop_signal_during_the_gate_promotes_nothing(runs: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the gate evaluates: the run stops as interrupted, nothing promoted (before, it promoted and
    reported only 'interrupted'); --resume judges again."""
    import os
    import signal

    from polyfuse.training import saved_policy

    served, real = served_copy(runs, "fair", tmp_path), saved_policy.load_saved_policy

    def load_and_interrupt(path: Path, registry: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)  # the trainer's handler turns it into a stop request
        return real(path, registry)

    continued = config(tmp_path / "candidate", 256, continue_from=str(served), promotion={"tolerance": 1.0})
    monkeypatch.setattr(saved_policy, "load_saved_policy", load_and_interrupt)
    assert Trainer(continued, progress=False).run()["interrupted"] == "SIGINT"
    assert not (served / POINTER_FILE).exists() and not list((tmp_path / "candidate").glob("promoted-*"))
    assert not [r for r in read_metrics(tmp_path / "candidate" / "metrics.jsonl") if r["kind"] == "promotion"]

    monkeypatch.setattr(saved_policy, "load_saved_policy", real)
    assert Trainer(continued, resume=True, progress=False).run()["promotion"]["promoted"]
    assert checkpoint_folder(served) == (tmp_path / "candidate" / "promoted-256").resolve()


def test_a_served_run_gone_by_the_gate_is_named_and_the_candidate_judged_on_resume(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The served run deleted (or retrained with another pipeline) while the candidate trained: the gate checks
    it again and says how to judge the saved candidate later, instead of failing without context."""
    served = served_copy(runs, "fair", tmp_path)
    real_train = Trainer._train

    def train_then_delete_the_served_run(self: Trainer, *args: Any) -> None:
        real_train(self, *args)
        shutil.rmtree(served)

    monkeypatch.setattr(Trainer, "_train", train_then_delete_the_served_run)
    continued = config(tmp_path / "candidate", 256, continue_from=str(served), promotion={"tolerance": 1.0})
    with pytest.raises(PolyfuseError, match=r"(?s)promotion gate: trainer\.continue_from: .*served does not exist.*"
                                            r"candidate is saved in .*run again with --resume"):
        Trainer(continued, progress=False).run()

    monkeypatch.setattr(Trainer, "_train", real_train)
    shutil.copytree(runs["fair"], served)
    assert Trainer(continued, resume=True, progress=False).run()["promotion"]["promoted"]


def test_promoting_the_same_step_again_never_leaves_the_pointer_dangling(
    runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promoted run resumed as it is judges itself again and re-promotes promoted-STEP/: the served copy was
    deleted before its replacement was renamed in, so serve/eval reading the pointer then found nothing."""
    served = served_copy(runs, "fair", tmp_path)
    continued = config(tmp_path / "candidate", 256, continue_from=str(served), promotion={"tolerance": 1.0})
    assert Trainer(continued, progress=False).run()["promotion"]["promoted"]
    real_rmtree, dangling = shutil.rmtree, []

    def rmtree_then_read_the_pointer(path: Any, *args: Any, **kwargs: Any) -> None:
        real_rmtree(path, *args, **kwargs)
        try:
            checkpoint_folder(served)
        except PolyfuseError as exc:
            dangling.append(str(exc))

    monkeypatch.setattr(shutil, "rmtree", rmtree_then_read_the_pointer)
    assert Trainer(continued, resume=True, progress=False).run()["promotion"]["promoted"]
    assert dangling == []
    assert checkpoint_folder(served) == (tmp_path / "candidate" / "promoted-256").resolve()
    assert sorted(p.name for p in (tmp_path / "candidate").glob("promoted-*")) == ["promoted-256"]


def test_a_data_parallel_continued_run_is_judged_and_promoted(runs: dict[str, Path], tmp_path: Path) -> None:
    """--nproc 2 with --continue-from: rank 0 loads the incumbent at the gate while rank 1 waits at the run's last
    barrier; loading it ran setup's parameter broadcast, a collective rank 1 never joined: the run hung there."""
    import os
    import subprocess
    import sys

    served = served_copy(runs, "fair", tmp_path)
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(pipeline(tmp_path / "candidate", 256, promotion={"tolerance": 1.0})))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-m", "polyfuse", "run", str(path), "--continue-from", str(served),
                             "--nproc", "2", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["promotion"]["promoted"]
    assert checkpoint_folder(served) == (tmp_path / "candidate" / "promoted-256").resolve()
