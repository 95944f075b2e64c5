"""The annotation app in a real browser: Debian's Chromium, headless, driven by Playwright.

A person logs in with the link a run prints, answers with clicks and with keyboard shortcuts, skips, rates;
the labels land in the database; text from the run cannot inject script; the admin page shows progress and
the accuracy plot; and a running training job learns from the answers given in the browser. Screenshots
of the main pages are saved under build/screenshots/feedback-app/ for a person to look at.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from annotation_helpers import DISPLAY
from app_clients import free_port, kill, start_server
from polyfuse.rewards import Segment
from polyfuse.training.checkpoint import checkpoint_location
from polyfuse.training.metrics import read_metrics
from polyfuse_feedback.access import issue_token
from polyfuse_feedback.store import LabelStore, NewQuery
from test_store import make_segment

CHROMIUM = shutil.which(os.environ.get("CHROMIUM", "chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[3] / "build" / "screenshots" / "feedback-app"
# Without the background-networking switches Chromium keeps dialling Google's services, refused here.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (polyfuse's test extra)")
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed: apt-get install chromium (`make setup` does it as root)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 820})
    opened = context.new_page()
    opened.set_default_timeout(20_000)
    yield opened
    context.close()


def screenshot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def babyai_segment(steps=8):
    """A real BabyAI episode start: the agent's views and its actions, as a run stores them."""
    from polyfuse.envs import make_env

    env = make_env("BabyAI-GoToLocalS6N2-v0", {})
    observation, _ = env.reset(seed=3)
    views, missions, actions = [], [], []
    for step in range(steps):
        views.append(observation["image"])
        missions.append(observation["mission"])
        action = [0, 2, 2, 1, 2, 2, 0, 2][step % 8]
        actions.append(action)
        observation, *_ = env.step(action)
    env.close()
    return Segment({"image": np.stack(views), "mission": tuple(missions), "direction": np.zeros(steps, np.int64)},
                   np.array(actions), np.zeros(steps, np.float32), [{}] * steps, False, False, 0)


@pytest.fixture
def served(tmp_path):
    """A server process on a SQLite store with a DigitsVQA-like project, a BabyAI project and their people."""
    url = f"sqlite:///{tmp_path / 'feedback.sqlite'}"
    with LabelStore(url) as store:
        store.configure_project("digits", display=DISPLAY, instructions='Which answer is right? <img src=x '
                                'onerror="window.injected=1"><script>window.injected=2</script>')
        ids = store.add_segments("digits", [make_segment(s, length=1) for s in range(6)])
        queries = store.post_queries("digits", [NewQuery(ids[i], ids[i + 1], priority=10.0 - i, source="human")
                                                for i in range(4)] + [NewQuery(ids[5], None, 5, 0.0, "human")])
        store.configure_project("babyai", display={"env": "BabyAI-GoToLocalS6N2-v0",
                                                   "actions": ["left", "right", "forward", "pickup", "drop",
                                                               "toggle", "done"],
                                                   "observations": {"image": "minigrid", "mission": "text",
                                                                    "direction": "discrete"}},
                                instructions="Which agent goes to the right object more directly?")
        episodes = store.add_segments("babyai", [babyai_segment(8), babyai_segment(6)])
        store.post_queries("babyai", [NewQuery(episodes[0], episodes[1], source="human")])
        store.record_metrics("digits", 1, {"heldout_accuracy": 0.55, "labels": 20})
        store.record_metrics("digits", 2, {"heldout_accuracy": 0.71, "labels": 40})
        people = {"ann": issue_token(store, "ann", project="digits"), "bea": issue_token(store, "bea", project="babyai"),
                  "root": issue_token(store, "root", role="admin")}
    port = free_port()
    server = start_server(url, port)
    yield f"http://127.0.0.1:{port}", url, queries, people
    kill(server)
    log = Path(server.log_path).read_text(errors="replace")
    assert '"GET /login HTTP/1.1" 200' in log, "the access log was written"
    assert not any(token.split("_", 2)[2] in log for token in people.values()), "no token in the server's log"


def answer_and_wait(page, action):
    """Do ``action`` (a click or a key press) and wait for the next query's page."""
    with page.expect_navigation():
        action()


def test_a_person_answers_with_clicks_and_keys_and_the_labels_land(page, served):
    address, url, queries, people = served
    page.goto(f"{address}/login#token={people['ann']}")
    page.wait_for_url(f"{address}/projects/digits")
    assert "#token" not in page.url
    assert page.evaluate("window.injected") is None, "the run's text was shown as text, not run"
    assert "<script>window.injected=2</script>" in page.inner_text("#instructions")
    assert page.locator(".segment").count() == 2 and page.locator("img.pixelated").count() == 2
    screenshot(page, "annotate-comparison")
    answer_and_wait(page, lambda: page.get_by_role("button", name=re.compile("Left is better")).click())
    answer_and_wait(page, lambda: page.keyboard.press("2"))
    answer_and_wait(page, lambda: page.keyboard.press("t"))
    answer_and_wait(page, lambda: page.keyboard.press("s"))
    assert "This one" in page.inner_text(".segment h2"), "the rating query comes after the skipped comparison"
    screenshot(page, "annotate-rating")
    answer_and_wait(page, lambda: page.keyboard.press("4"))
    assert page.inner_text("#instructions") == "No queries waiting"
    assert page.inner_text("#answered") == "4"
    with LabelStore(url) as store:
        given = [(r.query_id, r.preference, r.rating, r.annotator) for r in store.labels("digits")]
        assert given == [(queries[0], 0.0, None, "ann"), (queries[1], 1.0, None, "ann"),
                         (queries[2], 0.5, None, "ann"), (queries[4], None, 4, "ann")]
        assert store.status([queries[3]]) == {queries[3]: "pending"}, "skipped: left for someone else"


def test_minigrid_episodes_are_drawn_by_minigrids_renderer_as_animation_and_filmstrip(page, served):
    address, _, _, people = served
    page.goto(f"{address}/login#token={people['bea']}")
    page.wait_for_url(f"{address}/projects/babyai")
    assert page.locator("img.filmstrip").count() == 2
    assert page.locator("img[src^='data:image/gif']").count() == 2
    assert "go to" in page.inner_text(".segment .text")
    assert page.locator(".segment").first.locator(".action").count() == 8
    screenshot(page, "annotate-babyai")


def test_the_admin_page_shows_progress_and_the_reward_models_accuracy(page, served):
    address, _, _, people = served
    page.goto(f"{address}/login#token={people['root']}")
    page.wait_for_url(f"{address}/")
    page.goto(f"{address}/admin")
    assert "held-out accuracy 0.710" in page.inner_text("main")
    plot = page.locator("img.plot")
    assert plot.count() == 1 and page.evaluate("document.querySelector('img.plot').naturalWidth") > 100
    screenshot(page, "admin")
    page.goto(f"{address}/projects/digits")
    assert page.locator(".segment").count() == 2, "an admin may annotate every project"


def test_a_wrong_token_stays_on_the_login_page_with_a_message(page, served):
    address = served[0]
    page.goto(f"{address}/login")
    page.fill("#token", "pf_1_" + "x" * 43)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "not valid" in page.inner_text("[role=alert]")
    screenshot(page, "login-refused")


def test_a_running_training_job_learns_from_labels_given_in_the_browser(page, make_registry, tmp_path):
    pytest.importorskip("polyfuse_dqn", reason="the end-to-end run needs an optimizer plugin (polyfuse-dqn)")
    from rlhf_runs import rlhf_config

    # Long enough for a person (a browser here) to answer before it ends; SIGTERM stops it sooner.
    config = rlhf_config(make_registry(), tmp_path / "run", total_steps=100_000).model_dump(mode="json")
    config["reward"]["params"].update(
        feedback={"name": "human", "params": {"port": 0, "annotators": ["ann"]}}, max_labels=40,
        initial_share=0.5, heldout_fraction=0.0)
    config["trainer"].update(eval_every=1_000_000, checkpoint_every=1_000_000)
    path = tmp_path / "human.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    run = subprocess.Popen([sys.executable, "-m", "polyfuse", "run", str(path)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    printed, found = [], threading.Event()

    def read_stderr():
        for line in run.stderr:
            printed.append(line)
            if "ann: http" in line:
                found.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        assert found.wait(240), f"the run printed no login link:\n{''.join(printed)[-3000:]}"
        link = re.search(r"ann: (http://\S+)", "".join(printed)).group(1)
        page.goto(link)
        page.wait_for_selector(".segment")
        for _ in range(6):
            answer_and_wait(page, lambda: page.keyboard.press("1"))
        metrics = tmp_path / "run" / "metrics.jsonl"
        deadline = time.monotonic() + 180
        learnt = 0
        while time.monotonic() < deadline and learnt < 6:
            time.sleep(1)
            rows = [r for r in read_metrics(metrics) if "reward/labels" in r] if metrics.is_file() else []
            learnt = rows[-1]["reward/labels"] if rows else 0
        assert learnt >= 6, "the reward model trained on the labels given in the browser"
        assert rows[-1]["reward/feedback/human/labelled"] >= 6
        run.send_signal(signal.SIGTERM)  # stops after the current iteration, with a checkpoint
        assert run.wait(120) == 128 + signal.SIGTERM, "stopped by the signal, not crashed"
        assert checkpoint_location(tmp_path / "run") is not None
    finally:
        if run.poll() is None:
            run.kill()
    with LabelStore.in_run(tmp_path / "run") as store:
        assert [r.annotator for r in store.labels("run")][:6] == ["ann"] * 6
