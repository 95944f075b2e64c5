"""Spoken DigitsVQA: its spaces, the voice split, the recordings, and what polyfuse needs of an environment."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from polyfuse.envs import eval_kwargs, make_env, make_vector_env
from polyfuse.envs.digits_vqa import ANSWERS
from polyfuse_audio.recordings import DATA_FILE, load, mu_law_decode, mu_law_encode
from polyfuse_audio.spaces import Audio
from polyfuse_audio.spoken_digits import SpokenDigitsVQAEnv, SpokenDigitsVQAVectorEnv

ENV_ID = "polyfuse/SpokenDigitsVQA-v0"


def test_made_by_id_through_polyfuses_factory():
    env = make_env(ENV_ID)
    assert isinstance(env.unwrapped, SpokenDigitsVQAEnv)
    assert eval_kwargs(ENV_ID, {"question_modality": "both"}) == {"question_modality": "both", "split": "test"}


def test_spaces_for_audio_only_and_for_both():
    audio = SpokenDigitsVQAEnv().observation_space
    assert set(audio) == {"image", "speech"}
    speech = audio["speech"]
    assert isinstance(speech, Audio) and speech.sample_rate == 8000 and speech.dtype == np.int16
    assert 1.0 < speech.seconds < 2.0
    both = SpokenDigitsVQAEnv(question_modality="both").observation_space
    assert set(both) == {"image", "speech", "question"} and isinstance(both["question"], gym.spaces.Text)
    with pytest.raises(ValueError, match="question_modality must be 'audio'.*or 'both'"):
        SpokenDigitsVQAEnv(question_modality="video")


def test_observations_speak_the_episodes_question():
    recordings = load()
    env = SpokenDigitsVQAEnv(question_modality="both")
    for seed in range(20):
        observation, info = env.reset(seed=seed)
        assert env.observation_space.contains(observation)
        clip = env.get_state()["clip"]
        assert recordings.questions[recordings.question[clip]] == observation["question"]
        assert np.array_equal(observation["speech"], recordings.waveforms[clip])
        _, reward, terminated, _, step_info = env.step(info["expert_action"])
        assert reward == 1.0 and terminated and step_info["success"]


def test_held_out_questions_are_spoken_by_unseen_voices():
    recordings = load()
    voices = {}
    for split in ("train", "test"):
        envs = SpokenDigitsVQAVectorEnv(num_envs=300, split=split)
        envs.reset(seed=0)
        voices[split] = {recordings.voices[recordings.voice[clip]] for clip in envs.get_state()["clips"]}
    assert voices["test"] <= recordings.test_voices and not voices["train"] & recordings.test_voices
    variants = {split: {name.split("+")[1] for name in names} for split, names in voices.items()}
    assert not variants["train"] & variants["test"], "a held-out voice's variant is never heard in training"
    assert len(voices["train"]) >= 30 and len(voices["test"]) == 6


def test_every_question_is_recorded_in_both_splits_and_the_file_is_small():
    recordings = load()
    assert DATA_FILE.stat().st_size < 5_500_000
    assert len(recordings.questions) == 18
    for text in recordings.questions:
        assert len(recordings.clips(text, "train")) >= 8 and len(recordings.clips(text, "test")) >= 3
    loud = np.abs(recordings.waveforms.astype(np.int32)).max(axis=1)
    assert (loud > 3000).all(), "every clip holds speech"


def test_mu_law_round_trip_is_close():
    signal = np.linspace(-1, 1, 1001, dtype=np.float32)
    decoded = mu_law_decode(mu_law_encode(signal))
    assert (np.abs(decoded - signal) <= 0.035 * np.abs(signal) + 2e-4).all(), "8-bit mu-law: error relative to level"


def test_native_vector_env_and_its_state():
    envs = make_vector_env(ENV_ID, {"question_modality": "both"}, num_envs=4, vectorization="native", seed=0)
    observations, _ = envs.reset(seed=3)
    assert observations["speech"].shape == (4, envs.single_observation_space["speech"].shape[0])
    saved = envs.get_state()
    _, _, terminated, _, infos = envs.step(np.zeros(4, dtype=np.int64))
    assert terminated.all() and set(infos["final_obs"][0]) == {"image", "speech", "question"}
    assert np.array_equal(infos["final_obs"][2]["speech"], observations["speech"][2])
    after, *_ = envs.step(np.zeros(4, dtype=np.int64))
    envs.set_state(saved)
    envs.step(np.zeros(4, dtype=np.int64))
    again, *_ = envs.step(np.zeros(4, dtype=np.int64))
    assert np.array_equal(after["speech"], again["speech"]) and after["question"] == again["question"]
    scratch = envs.scratch_env()
    episode = envs.episode_states()[1]
    scratch.reset(seed=0)
    scratch.set_state(episode)
    assert np.array_equal(scratch._observation()["speech"], after["speech"][1])
    assert len(ANSWERS) == envs.single_action_space.n


def test_gymnasium_env_checker_passes():
    from gymnasium.utils.env_checker import check_env

    check_env(SpokenDigitsVQAEnv(), skip_render_check=True)


def test_vector_env_is_the_single_envs_task():
    envs = SpokenDigitsVQAVectorEnv(num_envs=8, split="test")
    observations, infos = envs.reset(seed=0)
    recordings = load()
    for clip in envs.get_state()["clips"]:
        assert recordings.voices[recordings.voice[clip]] in recordings.test_voices
    assert envs.single_observation_space == SpokenDigitsVQAEnv(split="test").observation_space
