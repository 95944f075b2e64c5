"""Preference datasets: the folder polyfuse writes, JSONL written by anything, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest

from polyfuse.config import EnvConfig
from polyfuse.datasets import read_preferences, write_preferences
from polyfuse.datasets.collect import collect_expert_preferences
from polyfuse.datasets.spaces import space_from_json, space_to_json
from polyfuse.envs.digits_vqa import observation_space
from polyfuse.errors import PolyfuseError

ACTIONS = gymnasium.spaces.Discrete(12)


def test_a_written_folder_reads_back_the_same_pairs(tmp_path: Path) -> None:
    images = np.arange(3 * 64, dtype=np.uint8).reshape(3, 8, 8, 1)
    questions = ("is it even?", "what digit is this?", "is this a seven?")
    write_preferences(tmp_path, {"image": images, "question": questions}, np.array([1, 4, 0]), np.array([0, 2, 1]),
                      observation_space(), ACTIONS, extras=[{"annotator": "a"}, {}, {"annotator": "b"}])
    pairs = read_preferences(tmp_path, observation_space(), ACTIONS)
    assert len(pairs) == 3 and pairs.observation_space == observation_space() and pairs.action_space == ACTIONS
    batch = pairs.batch(np.array([2, 0]))
    assert batch.observations["question"] == ("is this a seven?", "is it even?")
    assert np.array_equal(batch.observations["image"], images[[2, 0]]) and batch.chosen.tolist() == [0, 1]
    assert pairs.extras[0] == {"annotator": "a"}


def test_jsonl_with_inline_observations_takes_the_environments_spaces(tmp_path: Path) -> None:
    image = np.full((8, 8, 1), 16).tolist()
    lines = [{"observation": {"image": image, "question": "is it even?"}, "chosen": 10, "rejected": 11},
             {"observation": {"image": image, "question": "what digit is this?"}, "chosen": 3, "rejected": 4}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    pairs = read_preferences(path, observation_space(), ACTIONS)
    batch = pairs.batch(np.arange(2))
    assert batch.observations["image"].dtype == np.uint8 and batch.observations["image"].shape == (2, 8, 8, 1)
    assert batch.rejected.tolist() == [11, 4]
    alone = read_preferences(path)  # no environment: spaces inferred from the data
    assert alone.observation_space["image"].shape == (8, 8, 1) and alone.action_space == gymnasium.spaces.Discrete(12)


def test_jsonl_pixels_without_an_environment_are_read_as_uint8_images(tmp_path: Path) -> None:
    image = (np.arange(64).reshape(8, 8, 1) % 17).tolist()
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"observation": {"image": image, "question": "is it even?"}, "chosen": 1,
                                "rejected": 0}) + "\n")
    pairs = read_preferences(path)
    assert pairs.observation_space["image"] == gymnasium.spaces.Box(0, 255, (8, 8, 1), np.uint8)


def test_jsonl_values_must_fit_the_environments_space(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    image = np.full((8, 8, 1), 300).tolist()
    path.write_text(json.dumps({"observation": {"image": image, "question": "is it even?"}, "chosen": 1,
                                "rejected": 0}) + "\n")
    with pytest.raises(PolyfuseError, match="'image' is not an array of numbers of the environment's type"):
        read_preferences(path, observation_space(), ACTIONS)
    path.write_text(json.dumps({"observation": {"question": "is it even?"}, "chosen": 1, "rejected": 0}) + "\n")
    with pytest.raises(PolyfuseError, match=r"lack the environment's keys \['image'\]"):
        read_preferences(path, observation_space(), ACTIONS)
    path.write_text(json.dumps({"observation": {"x": [1.5]}, "chosen": "a", "rejected": "b"}) + "\n")
    with pytest.raises(PolyfuseError, match="no pair names its actions as whole numbers"):
        read_preferences(path)


@pytest.mark.parametrize(("line", "message"), [
    ('{"observation": {"image": [1]}, "chosen": 1, "rejected": 1}', "prefers an action to itself"),
    ('{"observation": {"image": [1]}, "chosen": 1, "rejected": 99}', r"'rejected' must be an action of Discrete\(12\)"),
    ('{"observation": "x", "chosen": 1, "rejected": 0}', "line 1: 'observation' must be an object"),
    ("not json", "line 1: not JSON"),
])
def test_bad_pairs_name_the_line_and_the_fix(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(PolyfuseError, match=message):
        read_preferences(path, None, ACTIONS)


def test_a_folder_from_another_environment_is_refused(tmp_path: Path) -> None:
    other = gymnasium.spaces.Dict({"image": gymnasium.spaces.Box(0, 1, (4,), np.float32)})
    write_preferences(tmp_path, {"image": np.zeros((1, 4), np.float32)}, np.array([0]), np.array([1]), other, ACTIONS)
    with pytest.raises(PolyfuseError, match="do not match the environment's"):
        read_preferences(tmp_path, observation_space(), ACTIONS)
    with pytest.raises(PolyfuseError, match="dataset not found"):
        read_preferences(tmp_path / "missing")


def test_expert_pairs_prefer_the_right_answer(tmp_path: Path) -> None:
    collect_expert_preferences(EnvConfig(id="polyfuse/DigitsVQA-v0"), 200, seed=0, folder=tmp_path)
    pairs = read_preferences(tmp_path)
    assert len(pairs) == 200 and np.all(pairs.chosen != pairs.rejected)
    assert len(set(pairs.rejected.tolist())) > 5, "rejected answers drawn across the other actions"
    assert pairs.extras[0] == {"annotator": "expert"}


@pytest.mark.parametrize("space", [
    gymnasium.spaces.Box(-np.inf, np.inf, (3, 2), np.float32), gymnasium.spaces.Discrete(5, start=2),
    gymnasium.spaces.MultiDiscrete([3, 4]), gymnasium.spaces.MultiBinary(6), observation_space(),
])
def test_spaces_round_trip_through_json(space: gymnasium.spaces.Space) -> None:
    assert space_from_json(json.loads(json.dumps(space_to_json(space)))) == space
