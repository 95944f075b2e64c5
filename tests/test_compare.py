"""`polyfuse compare`: intervals, the leaderboard files, fusers that do not fit, failures, and a real resumable run."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from polyfuse.compare import Row, bar_chart_figure, markdown, t_quantile, write_leaderboard
from polyfuse.training.checkpoint import checkpoint_location, read_checkpoint_tree

ROOT = Path(__file__).resolve().parents[1]


def test_confidence_intervals_use_students_t():
    from scipy import stats

    for degrees in (1, 2, 4, 9, 30):
        assert t_quantile(degrees) == pytest.approx(stats.t.ppf(0.975, degrees), abs=2e-3)
    row = Row("concat", successes=[0.8, 0.9, 1.0])
    assert row.mean == pytest.approx(0.9)
    assert row.half_width == pytest.approx(stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3), rel=1e-3)
    assert Row("x", successes=[0.5]).half_width is None


def test_the_leaderboard_files_and_a_failed_fuser_in_the_table(tmp_path):
    rows = [Row("gated", [0.9, 1.0], [10.0, 12.0], [300.0, 320.0], 5000, 1200),
            Row("broken", errors=["RuntimeError: shapes do not match"])]
    table = markdown(rows, "title")
    assert "| gated | 0.950 ± 0.635 | 5,000 (1,200) | 11 s | 310 | 2 |" in table
    assert "| broken | failed: RuntimeError: shapes do not match |" in table
    write_leaderboard(rows, tmp_path, "title", table)
    assert (tmp_path / "leaderboard.png").read_bytes().startswith(b"\x89PNG")
    lines = (tmp_path / "leaderboard.csv").read_text().splitlines()
    assert lines[0].startswith("fuser,success_mean,success_ci95") and lines[2].startswith("broken,,,0")


@pytest.mark.parametrize("fusers", [2, 12])
@pytest.mark.parametrize("title", [
    "examples/babyai_goto_local_s8n7_ppo.yaml: held-out success over seeds 0,1,2,3,4,5,6,7,8,9",
    "examples/babyai_pickup_dist_memory_imitation.yaml --set env.id=BabyAI-OpenDoorColor-v0 --set "
    "trainer.warm_start.episodes=300 --set optimizer.params.kl_coef=1.0: held-out success over seeds 0,1,2",
])
def test_a_long_title_stays_inside_the_chart(fusers, title):
    """A title built from a long config path and its --set is wrapped, not cut off at the figure's edges."""
    rows = [Row(f"fuser{i}", [0.5, 0.6]) for i in range(fusers)]
    figure = bar_chart_figure(rows, title)
    renderer = figure.canvas.get_renderer()
    box = figure.axes[0].title.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= figure.bbox.x1 and box.y1 <= figure.bbox.y1


def polyfuse(*args, cwd):
    return subprocess.run([sys.executable, "-m", "polyfuse", *args], capture_output=True, text=True, cwd=cwd,
                          env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
                               "PATH": "/usr/bin:/bin", **({"HOME": str(cwd)})})


def test_compare_trains_each_fuser_over_seeds_and_resumes(tmp_path):
    pytest.importorskip("polyfuse_dqn", reason="the comparison trains with an optimizer plugin (polyfuse-dqn)")
    pytest.importorskip("polyfuse_sbert", reason="the DigitsVQA pipeline reads questions with polyfuse-sbert")
    config = yaml.safe_load((ROOT / "core/polyfuse/defaults/digits_vqa.yaml").read_text())
    config["trainer"].update(eval_every=1500, eval_episodes=50, checkpoint_every=1500)
    config["modalities"] = dict(reversed(config["modalities"].items()))  # not alphabetical: kept as written
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    args = ["compare", "pipeline.yaml", "--set", "optimizer.params.learning_starts=200", "--fusers",
            "concat,gated,no-such-fuser", "--seeds", "0,1", "--steps", "1500", "--jobs", "2", "-o", "board", "--json"]
    first = polyfuse(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "skipped no-such-fuser" in first.stderr
    rows = json.loads(first.stdout.strip().splitlines()[-1])
    assert [r["fuser"] for r in rows] == sorted([r["fuser"] for r in rows],
                                               key=lambda f: -next(r["success_mean"] for r in rows if r["fuser"] == f))
    assert {r["fuser"] for r in rows} == {"concat", "gated"}
    for row in rows:
        assert len(row["successes"]) == 2 and row["success_ci95"] is not None and not row["errors"]
        assert row["parameters"] > row["fuser_parameters"] > 0 and row["steps_per_second"] > 0
    assert sorted(p.name for p in (tmp_path / "board/cells").iterdir()) == [
        "concat-seed0.json", "concat-seed1.json", "gated-seed0.json", "gated-seed1.json"]
    board = (tmp_path / "board/leaderboard.md").read_text()
    assert "| concat |" in board and "| gated |" in board
    assert board.startswith("**pipeline.yaml --set optimizer.params.learning_starts=200: held-out success")
    for fuser in ("concat", "gated"):  # each cell trained the config as --set changed it, with its own fuser
        trained = read_checkpoint_tree(checkpoint_location(tmp_path / "board/runs" / fuser / "seed1"))["config"]
        assert trained["optimizer"]["params"]["learning_starts"] == 200 and trained["fuser"]["name"] == fuser
        assert list(trained["modalities"]) == list(config["modalities"]) == ["question", "image"]
    again = polyfuse(*args, cwd=tmp_path)  # every cell is done: nothing is trained again
    assert again.returncode == 0 and json.loads(again.stdout.strip().splitlines()[-1]) == rows
    assert "4/4" in again.stderr
