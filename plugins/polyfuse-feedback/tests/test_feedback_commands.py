"""``polyfuse feedback export|import|projects`` through the CLI's parser, registered by a stand-in hook."""

import json
import subprocess
import sys
import types

import numpy as np
import polyfuse
import pytest
from polyfuse.cli import build_parser
from polyfuse.errors import PolyfuseError
from polyfuse.feedback import Label
from polyfuse.rewards import Segment
from polyfuse_feedback import commands
from polyfuse_feedback.store import LabelStore


@pytest.fixture
def run_command(make_registry):
    """``run_command(*argv)``: parse as ``polyfuse`` would and call the handler; its exit status."""
    plugin = types.ModuleType("feedback_commands_under_test")
    plugin.register_commands = polyfuse.hookimpl(lambda register: commands.register_commands(register))
    registry = make_registry(plugin, installed=False)

    def run(*argv):
        args = build_parser(registry).parse_args(list(argv))
        return args.handler(args, registry)

    return run


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "run"
    store = LabelStore.in_run(folder)
    segment = Segment({"image": np.zeros((2, 4, 4, 1), np.uint8), "q": ("a", "b")}, np.array([0, 1]),
                      np.array([0.0, 1.0], np.float32), [{}, {}], True, False, 0)
    ids = store.add_segments("digits", [segment, segment])
    queries = store.post_queries("digits", [(ids[0], ids[1]), (ids[0], None, 2), (ids[1], ids[0])])
    store.record_label(queries[0], Label(preference=1.0), source="synthetic")
    store.record_label(queries[1], Label(rating=2), source="people", annotator="ana")
    store.close()
    return folder


def test_export_import_and_projects(run_command, run_dir, tmp_path, capsys):
    out = tmp_path / "labels.jsonl"
    assert run_command("feedback", "export", "--db", str(run_dir), "--project", "digits", "-o", str(out)) == 0
    assert "2 labels of project 'digits' written" in capsys.readouterr().out
    target = tmp_path / "team" / "labels.sqlite"
    for expected in (2, 0):
        assert run_command("feedback", "import", str(out), "--db", f"sqlite:///{target}", "--project", "all") == 0
        assert f"{expected} new labels imported into project 'all'" in capsys.readouterr().out
    assert run_command("feedback", "projects", "--db", str(target), "--json") == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line) | {"id": 0} == {"id": 0, "name": "all", "segments": 2, "queries": 2, "pending": 0,
                                            "labels": 2}
    assert run_command("feedback", "projects", "--db", str(run_dir)) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["project", "labels", "queries", "pending", "segments"]
    assert table[1].split() == ["digits", "2", "3", "1", "2"]


def test_user_mistakes_are_polyfuse_errors(run_command, run_dir, tmp_path):
    out = str(tmp_path / "x.jsonl")
    with pytest.raises(PolyfuseError, match="no project named 'nope'.*its projects: digits"):
        run_command("feedback", "export", "--db", str(run_dir), "--project", "nope", "-o", out)
    with pytest.raises(PolyfuseError, match="holds no label store"):
        run_command("feedback", "projects", "--db", str(tmp_path))
    with pytest.raises(PolyfuseError, match="no such run directory or SQLite file"):
        run_command("feedback", "projects", "--db", str(tmp_path / "missing"))
    with pytest.raises(PolyfuseError, match="no such label export"):
        run_command("feedback", "import", out, "--db", str(run_dir), "--project", "digits")
    (tmp_path / "x.jsonl").write_text('{"observation": {}, "chosen": 1, "rejected": 0}\n')
    with pytest.raises(PolyfuseError, match=r"x.jsonl:1 is not a polyfuse label export"):
        run_command("feedback", "import", out, "--db", str(run_dir), "--project", "digits")


def test_the_commands_module_imports_nothing_heavy():
    code = ("import sys, polyfuse_feedback.commands; "
            "assert not {'sqlalchemy', 'torch', 'polyfuse_feedback.store'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_installed_polyfuse_command_runs_them(run_dir, tmp_path):
    from polyfuse.registry import Registry

    if "feedback" not in Registry.load().commands:
        pytest.skip("polyfuse_feedback.plugin does not call commands.register_commands from its hook yet")
    polyfuse_cli = [sys.executable, "-m", "polyfuse.cli"]
    done = subprocess.run([*polyfuse_cli, "feedback", "projects", "--db", str(run_dir)], check=False,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "digits" in done.stdout, done.stderr
    done = subprocess.run([*polyfuse_cli, "feedback", "projects", "--db", str(tmp_path / "nowhere")], check=False,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: --db") and "Traceback" not in done.stderr
