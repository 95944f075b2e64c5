#!/usr/bin/env python
"""Record DigitsVQA's questions with Debian's espeak-ng, in several voices, speeds and pitches.

Writes ``src/polyfuse_audio/data/spoken_questions.npz`` (or ``--output``), the file the spoken
DigitsVQA environment reads. Run once; the result ships with the package. Needs ``espeak-ng``
(``apt-get install espeak-ng``). A voice is an espeak-ng accent with a voice variant (36 for
training, 6 held out whose variants are never heard in training), each question spoken once per
voice at a speed and pitch drawn per recording.

    python plugins/polyfuse-audio/scripts/make_recordings.py [--takes 1] [--seed 0] [--output FILE]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from math import gcd
from pathlib import Path

import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from polyfuse.envs.digits_vqa import NUMBER_WORDS, QUESTIONS
from polyfuse_audio.recordings import DATA_FILE, SAMPLE_RATE, save

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f5", "klatt", "klatt3", "klatt4", "adam",
                  "Andy", "Annie", "Alicia", "benjamin", "caleb", "david", "ed", "linda", "steph", "john", "klatt5",
                  "klatt6", "Alex", "Andrea", "antonio", "belinda", "boris", "Denis", "edward", "Gene", "Hugo", "max")
TEST_VARIANTS = ("m6", "m8", "f4", "klatt2", "paul", "anika")  # never heard in training
TRAIN_VOICES = tuple(f"{ACCENTS[i % len(ACCENTS)]}+{v}" for i, v in enumerate(TRAIN_VARIANTS))
TEST_VOICES = tuple(f"{ACCENTS[(i + 3) % len(ACCENTS)]}+{v}" for i, v in enumerate(TEST_VARIANTS))
SPEEDS = (140, 200)  # words per minute (espeak-ng's default: 175)
PITCHES = (30, 70)  # 0..99 (default: 50)
SILENCE = 0.01  # of the loudest sample: quieter edges are trimmed
MARGIN = 0.03  # seconds of silence kept before and after the speech


def all_questions() -> list[str]:
    """Every question text DigitsVQA asks (see polyfuse.envs.digits_vqa.draw_episodes)."""
    return [text for question in QUESTIONS for text in question.phrasings] + [
        f"is this a {word}?" for word in NUMBER_WORDS
    ]


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng's recording of ``text`` as float32 at SAMPLE_RATE, its silent edges trimmed."""
    with tempfile.TemporaryDirectory() as folder:  # --stdout's WAV header gives no length
        path = Path(folder) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
                       capture_output=True, check=True)
        rate, samples = wavfile.read(path)
    waveform = samples.astype(np.float64) / 32768.0
    divisor = gcd(SAMPLE_RATE, rate)
    waveform = resample_poly(waveform, SAMPLE_RATE // divisor, rate // divisor)
    loud = np.flatnonzero(np.abs(waveform) > SILENCE * np.abs(waveform).max())
    margin = int(MARGIN * SAMPLE_RATE)
    return waveform[max(loud[0] - margin, 0): loud[-1] + margin].astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DATA_FILE)
    parser.add_argument("--takes", type=int, default=1, help="recordings per question and voice")
    parser.add_argument("--seed", type=int, default=0, help="of the speeds and pitches drawn")
    parser.add_argument("--voices", type=int, default=None, help="only the first N train and test voices")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("error: espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)", file=sys.stderr)
        return 2
    voices = [*TRAIN_VOICES[: args.voices], *TEST_VOICES[: args.voices]]
    questions = all_questions()
    rng = np.random.default_rng(args.seed)
    clips, question, voice, speed, pitch = [], [], [], [], []
    for v, name in enumerate(voices):
        for q, text in enumerate(questions):
            for _ in range(args.takes):
                s, p = int(rng.integers(*SPEEDS, endpoint=True)), int(rng.integers(*PITCHES, endpoint=True))
                clips.append(speak(text, name, s, p))
                question.append(q)
                voice.append(v)
                speed.append(s)
                pitch.append(p)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save(args.output, clips, question, questions, voice, voices, [v for v in voices if v in TEST_VOICES],
         speed, pitch)
    seconds = sum(len(clip) for clip in clips) / SAMPLE_RATE
    print(f"{len(clips)} recordings ({seconds:.0f} s of speech, longest {max(map(len, clips)) / SAMPLE_RATE:.2f} s) "
          f"-> {args.output} ({args.output.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
