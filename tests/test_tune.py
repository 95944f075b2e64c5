"""`polyfuse tune`: the search space's checks, trials on DigitsVQA end to end, and a killed tuner resumed."""

import copy
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna  # the tune extra: the Makefile installs it for the tests
import pytest
import yaml
from polyfuse.cli import main
from polyfuse.errors import PolyfuseError
from polyfuse.registry import Registry
from polyfuse.tuning.space import load_space

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits_vqa_dqn.yaml"
EXAMPLE_SPACE = ROOT / "examples" / "digits_vqa_tune_space.yaml"


@pytest.fixture(scope="module")
def registry():
    return Registry.load()


def tiny_config(tmp_path: Path, steps: int = 400) -> Path:
    """The DQN example cut to seconds: a few hundred steps, evaluations on 50 episodes."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["optimizer"]["params"].update(learning_starts=250, batch_size=32)
    data["trainer"].update(total_steps=steps, eval_every=200, eval_episodes=50, checkpoint_every=200,
                           output_dir=str(tmp_path / "unused"))
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def load(tmp_path: Path, registry, text: str):
    base = yaml.safe_load(EXAMPLE.read_text())
    return load_space(space_file(tmp_path, text), base, registry, tmp_path / "probe")


def test_polyfuse_help_and_tune_help_import_no_optuna():
    code = ("import sys, contextlib, io\nfrom polyfuse.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['tune', '--help'])\n"
            "import polyfuse\nprint('OPTUNA', 'optuna' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "OPTUNA False" in done.stdout


def test_without_optuna_the_error_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    code = main(["tune", str(EXAMPLE), "--space", str(EXAMPLE_SPACE), "--trials", "1", "-o", str(tmp_path)])
    assert code == 2
    assert "pip install 'polyfuse[tune]'" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ("optimizer.params.learnin_rate: {log_uniform: [1.0e-4, 1.0e-2]}",
     "optimizer.params.learnin_rate: no setting 'learnin_rate' under optimizer.params"),
    ("optimizer.params.learnin_rate: {log_uniform: [1.0e-4, 1.0e-2]}", "did you mean optimizer.params.learning_rate"),
    ("trainer.warm_start.episodes: {int: [10, 100]}", "trainer.warm_start is not set in the config"),
    ("optimizer.params.learning_rate: {normal: [0, 1]}", "expected one distribution"),
    ("optimizer.params.learning_rate: {log_uniform: [0, 1.0e-2]}", "needs 0 < LOW < HIGH"),
    ("optimizer.params.batch_size: {int: [16, 64], log: true, step: 16}", "log: true needs LOW > 0 and no step"),
    ("optimizer.params.batch_size: {choice: [32, 32]}", "lists a value twice"),
    ("optimizer.params.learning_rate: {uniform: [0.5, 2.0]}",
     ("optimizer.params.learning_rate: 2.0 fails validation (optimizer.params.learning_rate: Input should be less "
      "than or equal to 1")),
    ("optimizer.params.learning_rate: {uniform: [0.5, 2.0]}", "narrow the range"),
    ("fuser.name: {choice: [gated, no-such-fuser]}", "fuser.name: 'no-such-fuser' fails validation"),
    ("fuser.name: {choice: [gated, no-such-fuser]}", "drop this choice"),
    ("fuser.name: {choice: [gated, concat]}\nfuser.params.rank: {int: [1, 8]}",
     "fuser.params.rank: none of fuser.name's choices ['gated', 'concat'] has this setting"),
])
def test_space_mistakes_name_the_path_and_the_fix(tmp_path, registry, text, expected):
    with pytest.raises(PolyfuseError) as caught:
        load(tmp_path, registry, text)
    assert expected in str(caught.value)


def test_params_of_a_tuned_component_are_conditional_and_a_swapped_component_starts_from_its_defaults(
        tmp_path, registry):
    space = load(tmp_path, registry, "fuser.params.hidden_dim: {choice: [32, 128]}\n"
                                     "fuser.name: {choice: [gated, concat]}\n"
                                     "optimizer.params.hidden_sizes: {choice: [[64], [128, 128]]}\n")
    assert space.entries[0].path == "fuser.name"  # names first: they decide the params
    concat = optuna.trial.FixedTrial({"fuser.name": "concat", "optimizer.params.hidden_sizes": "[128, 128]"})
    values = space.suggest(concat)
    assert values == {"fuser.name": "concat", "optimizer.params.hidden_sizes": [128, 128]}
    data = space.config(values)
    assert data["fuser"] == {"name": "concat", "params": {}}  # gated's hidden_dim is not concat's setting
    assert data["optimizer"]["params"]["hidden_sizes"] == [128, 128]
    gated = space.config(space.suggest(optuna.trial.FixedTrial(
        {"fuser.name": "gated", "fuser.params.hidden_dim": 128, "optimizer.params.hidden_sizes": "[64]"})))
    assert gated["fuser"] == {"name": "gated", "params": {"hidden_dim": 128}}
    assert EXAMPLE.read_text().count("hidden_dim: 64")  # the base config is never changed in place
    assert space.own_values() == ({"fuser.name": "gated", "optimizer.params.hidden_sizes": "[64]"},
                                  ["fuser.params.hidden_dim = 64"])


def test_a_trial_whose_sampled_config_is_invalid_is_recorded_as_failed_and_the_study_goes_on(tmp_path, registry):
    from polyfuse.tuning.space import Choice, Entry, Space
    from polyfuse.tuning.study import StudySettings, Tuner, import_optuna, open_study

    base = yaml.safe_load(EXAMPLE.read_text())
    # a space load_space would refuse (its probes catch the bad choice): here the invalid value reaches a trial
    space = Space(base, copy.deepcopy(base), [Entry("optimizer.params.batch_size", Choice(choice=[-1]))], "space")
    settings = StudySettings(f"sqlite:///{tmp_path}/study.db", "s", "eval/success", "maximize", "random", "none", 0)
    study = open_study(import_optuna(), settings, {"config": base})
    reports = []
    assert Tuner(study, space, registry, tmp_path, "eval/success", 3, 2, lambda: reports.append(1)).run()
    states = [trial.state.name for trial in study.trials]
    assert states == ["FAIL", "FAIL", "FAIL"] and len(reports) == 3  # two at a time, and no more than asked
    assert "invalid config: optimizer.params.batch_size: Input should be greater than 0" in \
        study.trials[0].user_attrs["error"]
    assert not (tmp_path / "trials" / "0000" / "metrics.jsonl").exists()  # nothing was trained
    with pytest.raises(PolyfuseError, match="was started with another config; resume it with the same command"):
        open_study(import_optuna(), settings, {"config": {**base, "fuser": "concat"}})


def fake_run(tmp_path: Path, monkeypatch, evaluations: list[str], then: str) -> None:
    """``python -m polyfuse run CONFIG`` replaced by a script writing eval lines, then exiting or awaiting SIGTERM."""
    script = tmp_path / "fake-python"
    script.write_text(f"""#!{sys.executable}
import pathlib, signal, sys, time
run_dir = pathlib.Path(next(arg for arg in sys.argv if arg.endswith(".yaml"))).parent
signal.signal(signal.SIGTERM, lambda *_: ((run_dir / "stopped").write_text("SIGTERM"), sys.exit(143)))
with (run_dir / "metrics.jsonl").open("w") as metrics:
    for line in {evaluations!r}:
        metrics.write(line + "\\n")
        metrics.flush()
        time.sleep(0.1)
    {then}
""")
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))


def test_a_pruned_trial_gets_sigterm_after_the_evaluation_that_condemned_it(tmp_path, monkeypatch):
    from polyfuse.tuning.runner import run_trial

    lines = ['{"kind": "eval", "step": 0, "eval/success": 0.0}', '{"kind": "train", "step": 50}',
             '{"kind": "eval", "step": 100, "eval/success": 0.25}', '{"kind": "eval", "step": 200, "eval/success": 0.5}']
    fake_run(tmp_path, monkeypatch, lines, "time.sleep(30)")
    reported = []
    outcome = run_trial({"trainer": {}}, tmp_path / "run", "eval/success",
                        lambda value, step: reported.append((step, value)) or step >= 100, lambda: None, lambda: False)
    assert (outcome.state, outcome.step, outcome.value) == ("pruned", 100, 0.25)
    assert reported[0] == (100, 0.25)  # step 0 (the untrained policy) is never reported
    assert (tmp_path / "run" / "stopped").read_text() == "SIGTERM"


def test_a_finished_trial_takes_its_last_evaluation_and_a_missing_metric_fails_it(tmp_path, monkeypatch):
    from polyfuse.tuning.runner import run_trial

    lines = ['{"kind": "eval", "step": 100, "eval/success": 0.25, "eval/return": 0.5}',
             '{"kind": "eval", "step": 200, "eval/success": 0.75, "eval/return": 1.5}']
    fake_run(tmp_path, monkeypatch, lines, "sys.exit(0)")
    def never(*_):
        return False

    done = run_trial({}, tmp_path / "a", "eval/return", never, lambda: None, never)
    assert (done.state, done.value, done.evaluations) == ("complete", 1.5, [(100, 0.5), (200, 1.5)])
    missing = run_trial({}, tmp_path / "b", "eval/accuracy", never, lambda: None, never)
    assert missing.state == "failed" and "(they have: eval/success, eval/return)" in missing.error


def test_a_storage_url_that_does_not_open_is_a_user_error(tmp_path):
    from polyfuse.tuning.study import StudySettings, import_optuna, open_study

    settings = StudySettings("nosuch://db", "s", "eval/success", "maximize", "tpe", "median", None)
    with pytest.raises(PolyfuseError, match="--storage nosuch://db: cannot open it as an Optuna storage"):
        open_study(import_optuna(), settings, {})


def test_a_sampler_whose_package_is_missing_says_what_to_install(monkeypatch):
    from polyfuse.tuning.study import import_optuna, make_sampler

    monkeypatch.setitem(sys.modules, "cmaes", None)
    with pytest.raises(PolyfuseError, match="--sampler cmaes needs the cmaes package: pip install cmaes"):
        make_sampler(import_optuna(), "cmaes", 0)


def test_a_stopped_tuner_stops_its_running_trial_and_queues_it_again(tmp_path, monkeypatch, registry):
    import threading

    from polyfuse.tuning.space import Entry, LogUniform, Space
    from polyfuse.tuning.study import StudySettings, Tuner, counted, import_optuna, open_study

    base = yaml.safe_load(EXAMPLE.read_text())
    space = Space(base, copy.deepcopy(base),
                  [Entry("optimizer.params.learning_rate", LogUniform(log_uniform=(1e-4, 1e-2)))], "space")
    settings = StudySettings(f"sqlite:///{tmp_path}/study.db", "s", "eval/success", "maximize", "random", "none", 0)
    study = open_study(import_optuna(), settings, {"config": base})
    fake_run(tmp_path, monkeypatch, ['{"kind": "eval", "step": 100, "eval/success": 0.5}'], "time.sleep(30)")
    metrics = tmp_path / "trials" / "0000" / "metrics.jsonl"

    def interrupt_once_training() -> None:  # as Ctrl-C or a scheduler's SIGTERM would
        while not metrics.is_file():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=interrupt_once_training, daemon=True).start()
    assert not Tuner(study, space, registry, tmp_path, "eval/success", 2, 1, lambda: None).run()
    first, again = study.get_trials()
    assert (first.state.name, again.state.name) == ("FAIL", "WAITING")
    assert again.user_attrs["retry_of"] == 0 and counted(study) == 0
    assert (tmp_path / "trials" / "0000" / "stopped").read_text() == "SIGTERM"


def test_a_trial_whose_tuner_on_another_machine_went_silent_is_failed_and_queued_again(
        tmp_path, monkeypatch, capsys):
    from polyfuse.tuning import study as studies

    monkeypatch.setattr(studies, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(studies, "GRACE_SECONDS", 1)
    optuna = studies.import_optuna()
    settings = studies.StudySettings(f"sqlite:///{tmp_path}/study.db", "s", "eval/success", "maximize", "tpe",
                                     "median", 0)
    study = studies.open_study(optuna, settings, {})
    trial = study.ask()
    trial.suggest_float("optimizer.params.learning_rate", 1e-4, 1e-2, log=True)
    trial.set_user_attr("worker", "another-host:1")
    study._storage.record_heartbeat(trial._trial_id)
    studies.recover_interrupted(optuna, study)
    assert study.trials[0].state.name == "RUNNING"  # its heartbeat is fresh: it may well be training
    time.sleep(2.5)
    studies.recover_interrupted(optuna, study)
    failed, again = study.get_trials()
    assert (failed.state.name, again.state.name, again.user_attrs["retry_of"]) == ("FAIL", "WAITING", 0)
    assert "trial 0 sent no heartbeat for 1 s (its tuner, another-host:1, is gone)" in capsys.readouterr().err


def tune(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "polyfuse", "tune", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, check=False)


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}


@pytest.mark.slow
def test_a_study_on_digits_vqa_killed_and_resumed_hands_back_a_config_polyfuse_run_takes_as_is(tmp_path):
    """Slow (35 s of CPU; 100 s wall on 2 shared cores): 4 real `polyfuse run` processes, each loading torch and
    sentence-transformers, are the point of the test."""
    config = tiny_config(tmp_path, steps=2000)  # long enough to be killed in the middle of trial 1
    out = tmp_path / "study"
    args = [str(config), "--space", str(EXAMPLE_SPACE), "--trials", "2", "--seed", "0", "-o", str(out)]
    tuner = subprocess.Popen([sys.executable, "-m", "polyfuse", "tune", *args], cwd=tmp_path, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (out / "trials" / "0001" / "metrics.jsonl").is_file():
            assert tuner.poll() is None and time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.2)
    finally:
        tuner.send_signal(signal.SIGKILL)
        tuner.wait()
    stderr = out / "trials" / "0001" / "stderr.log"
    while "SIGTERM: stopping" not in stderr.read_text():  # the trial dies with its tuner: no orphan run
        assert time.monotonic() < deadline + 60, "trial 1's run outlived its tuner"
        time.sleep(0.2)
    with sqlite3.connect(out / "study.db") as db:
        assert db.execute("select state from trials where number = 1").fetchone() == ("RUNNING",)
    done = tune(*args, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trial 1 was left running by a tuner that stopped" in done.stderr
    assert "marked failed, its parameters queued again" in done.stderr
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [row["state"] for row in rows] == ["complete", "fail", "complete"]
    assert rows[0]["note"] == "the config's own values"
    assert rows[0]["optimizer.params.learning_rate"] == "0.001" and rows[0]["fuser.name"] == "gated"
    assert rows[2]["note"] == "re-run of trial 1"
    assert rows[2]["optimizer.params.learning_rate"] == rows[1]["optimizer.params.learning_rate"] != "0.001"
    for row in rows:
        assert Path(row["run_dir"]).parent == out / "trials"
    for plot in ("history.png", "importances.png", "intermediate.png"):
        assert (out / plot).read_bytes().startswith(b"\x89PNG")
    best_value = max(float(row["eval/success"]) for row in rows if row["state"] == "complete")
    assert f"eval/success {best_value:.4g}" in (out / "best.yaml").read_text()
    assert tune(*args, cwd=tmp_path).returncode == 0  # the study is full: nothing more runs
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 3
    ran = subprocess.run([sys.executable, "-m", "polyfuse", "run", str(out / "best.yaml"), "--steps", "200"],
                         capture_output=True, text=True, cwd=tmp_path, env=ENV, check=False)
    assert ran.returncode == 0, ran.stderr
    assert Path(yaml.safe_load((out / "best.yaml").read_text())["trainer"]["output_dir"]) == out / "best"
    assert (out / "best" / "summary.json").is_file()


def test_set_changes_the_base_config_every_trial_starts_from(tmp_path, capsys):
    """--set applies before the space is checked: an invalid value is named by its path, before any trial."""
    space = space_file(tmp_path, "optimizer.params.batch_size: {choice: [16, 32]}\n")
    code = main(["tune", str(tiny_config(tmp_path)), "--space", str(space), "--trials", "1", "-o", str(tmp_path / "t"),
                 "--set", "optimizer.params.learning_rate=-1"])
    error = capsys.readouterr().err
    assert code == 2 and "optimizer.params.learning_rate" in error, error
    assert not (tmp_path / "t" / "study.db").exists()
