"""Serving's input checks on spaces the DigitsVQA server test does not cover: audio, discrete, multi-binary."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from polyfuse.serving.inputs import InvalidInput, decode_request


class Waveform(spaces.Box):
    """An audio space as polyfuse-audio declares one: 1-D, with an integer sample_rate."""

    def __init__(self, length: int, sample_rate: int) -> None:
        super().__init__(-1.0, 1.0, (length,), np.float32)
        self.sample_rate = sample_rate


SPACE = spaces.Dict({"speech": Waveform(4, 16_000), "slot": spaces.Discrete(3, start=1),
                     "flags": spaces.MultiBinary(2)})
KEYS = ("speech", "slot", "flags")


def decode(observation: dict) -> dict:
    return decode_request({"observation": observation}, SPACE, KEYS, 8)[0]


def test_audio_as_samples_or_with_its_rate() -> None:
    plain = decode({"speech": [0.0, 0.5, -0.5, 1.0], "slot": 3, "flags": [1, 0]})
    assert plain["speech"].dtype == np.float32 and plain["speech"].shape == (1, 4)
    assert plain["slot"].tolist() == [3] and plain["flags"].tolist() == [[1, 0]]
    rated = decode({"speech": {"samples": [0.0, 0.5, -0.5, 1.0], "sample_rate": 16_000}, "slot": 1,
                    "flags": [0, 0]})
    np.testing.assert_array_equal(rated["speech"], plain["speech"])


@pytest.mark.parametrize(("speech", "field", "problem"), [
    ({"samples": [0.0] * 4, "sample_rate": 8_000}, "observation.speech.sample_rate", "expected 16000 Hz"),
    ({"samples": [0.0] * 4}, "observation.speech", "sample_rate"),
    ({"samples": [0.0] * 5, "sample_rate": 16_000}, "observation.speech.samples", "expected shape [4], got [5]"),
    ([0.0, 0.0, 2.0, 0.0], "observation.speech", "outside the space's range"),
])
def test_audio_mistakes_name_the_field(speech: object, field: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as error:
        decode({"speech": speech, "slot": 1, "flags": [0, 0]})
    assert error.value.field == field and problem in error.value.problem


@pytest.mark.parametrize(("observation", "field"), [
    ({"speech": [0.0] * 4, "slot": 0, "flags": [0, 0]}, "observation.slot"),
    ({"speech": [0.0] * 4, "slot": 1.0, "flags": [0, 0]}, "observation.slot"),
    ({"speech": [0.0] * 4, "slot": True, "flags": [0, 0]}, "observation.slot"),
    ({"speech": [0.0] * 4, "slot": 1, "flags": [0, 2]}, "observation.flags"),
    ({"slot": 1, "flags": [0, 2]}, "observation.speech"),
])
def test_discrete_and_binary_mistakes_name_the_field(observation: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as error:
        decode(observation)
    assert error.value.field == field
