"""Serving's input checks the DigitsVQA server test does not cover: audio, discrete, multi-binary spaces, numbers past
floats, images too large to open."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import pytest
from gymnasium import spaces
from polyfuse.serving.inputs import InvalidInput, decode_request, parse_json


class Waveform(spaces.Box):
    """An audio space as polyfuse-audio declares one: 1-D, with an integer sample_rate."""

    def __init__(self, length: int, sample_rate: int) -> None:
        super().__init__(-1.0, 1.0, (length,), np.float32)
        self.sample_rate = sample_rate


SPACE = spaces.Dict({"speech": Waveform(4, 16_000), "slot": spaces.Discrete(3, start=1),
                     "flags": spaces.MultiBinary(2)})
KEYS = ("speech", "slot", "flags")


def decode(observation: dict) -> dict:
    return decode_request({"observation": observation}, SPACE, KEYS, 8).observations


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


def test_episode_ids_go_with_their_observations() -> None:
    sample = {"speech": [0.0] * 4, "slot": 1, "flags": [0, 1]}
    assert decode_request({"observation": sample, "episode": 12}, SPACE, KEYS, 8).episodes == ["12"]
    assert decode_request({"observation": sample}, SPACE, KEYS, 8).episodes == [None]
    both = decode_request({"observations": [sample, sample], "episodes": ["a", None]}, SPACE, KEYS, 8)
    assert both.episodes == ["a", None] and not both.single
    for body, field in [({"observation": sample, "episode": ""}, "episode"),
                        ({"observation": sample, "episode": ["a"]}, "episode"),
                        ({"observation": sample, "episodes": ["a"]}, "episodes"),
                        ({"observations": [sample, sample], "episodes": ["a"]}, "episodes"),
                        ({"observations": [sample], "episode": "a"}, "episode"),
                        ({"observations": [sample], "episodes": [True]}, "episodes[0]"),
                        ({"episode": "a"}, "body")]:
        with pytest.raises(InvalidInput) as caught:
            decode_request(body, SPACE, KEYS, 8)
        assert caught.value.field == field, body


def test_a_number_too_large_for_a_float_is_refused_as_json_refuses_infinity() -> None:
    assert parse_json(b'{"x": 1e300}') == {"x": 1e300}
    for body in (b'{"x": 1e400}', b'{"x": [-1e400]}'):
        with pytest.raises(InvalidInput) as caught:
            parse_json(body)
        assert caught.value.status == 400 and "too large for a float" in caught.value.problem


def test_a_png_declaring_a_huge_image_is_refused_before_it_is_opened() -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 0, 0, 0, 0)  # 900 megapixels, past PIL's bomb limit
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    space = spaces.Dict({"image": spaces.Box(0, 255, (8, 8, 1), np.uint8)})
    with pytest.raises(InvalidInput) as caught:
        decode_request({"observation": {"image": base64.b64encode(bomb).decode()}}, space, ("image",), 8)
    assert caught.value.field == "observation.image" and caught.value.status == 422
    assert "expected a 8x8" in caught.value.problem


@pytest.mark.parametrize(("space", "value"), [
    (spaces.MultiBinary(2), [256, 1]),  # int8: would wrap round to [0, 1]
    (spaces.MultiDiscrete(np.array([3, 4]), dtype=np.int8), [256, 0]),
    (spaces.Box(-np.inf, np.inf, (2,), np.float32), [1e39, 0.0]),  # past float32: would be infinite
    (spaces.Box(-np.inf, np.inf, (2,), np.float16), [0.0, -70_000]),
])
def test_values_a_cast_to_the_spaces_dtype_would_change_are_refused(space: spaces.Space, value: list) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_request({"observation": {"v": value}}, spaces.Dict({"v": space}), ("v",), 8)
    assert caught.value.field == "observation.v" and caught.value.status == 422
