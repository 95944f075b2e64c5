"""The issue's acceptance test: on DigitsVQA, DPO on preference pairs beats the warm start it begins from.

A policy is warm-started by behaviour cloning on a small labelled set (the
trainer's ``warm_start``), then trained with DPO on synthetic preference pairs
over answers (the expert's answer preferred to a uniformly drawn other one).
Its held-out accuracy must end clearly above the warm start's (the eval record
at step 0), and the reference must still be the warm-started policy.

Only the core and this plugin are needed: the question is read by a bag of
words defined here (no sentence-transformer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from polyfuse import ComponentConfig, hookimpl
from polyfuse.config import EnvConfig, validate_pipeline
from polyfuse.datasets.collect import collect_expert_preferences
from polyfuse.encoding import Encoder
from polyfuse.envs.digits_vqa import NUMBER_WORDS, QUESTIONS
from polyfuse.training.trainer import Trainer
from polyfuse_dpo.dpo import DPO
from polyfuse_dpo.plugin import DPOConfig

WORDS = sorted({w for q in QUESTIONS for p in q.phrasings for w in p.rstrip("?").split()}
               | set(NUMBER_WORDS) | {"is", "this", "a"})


class QuestionWords(Encoder):
    """The question's words as a multi-hot vector: frozen (no parameters), so the reference shares it."""

    cacheable = False

    def __init__(self) -> None:
        super().__init__()
        self.output_dim = len(WORDS)
        self.index = {word: i for i, word in enumerate(WORDS)}

    def forward(self, batch: Any) -> torch.Tensor:
        hot = np.zeros((len(batch), self.output_dim), dtype=np.float32)
        for row, text in enumerate(batch):
            for word in str(text).rstrip("?").split():
                hot[row, self.index[word]] = 1.0
        return torch.from_numpy(hot)


class Spy:
    """Registers ``question-words`` and ``dpo-spy``: a DPO that records itself and its policy at the first iterate."""

    def __init__(self) -> None:
        self.optimizers: list[Any] = []

    @hookimpl
    def register_encoders(self, register: Any) -> None:
        register("question-words", lambda config, space=None: QuestionWords(), config=ComponentConfig,
                 description="multi-hot DigitsVQA question words (test)")

    @hookimpl
    def register_optimizers(self, register: Any) -> None:
        spy = self

        class SpyDPO(DPO):
            def _start(self) -> None:
                self.policy_at_start = {k: v.clone() for k, v in self.policy.state_dict().items()}
                super()._start()

        def build(config: DPOConfig) -> SpyDPO:
            optimizer = SpyDPO(config)
            spy.optimizers.append(optimizer)
            return optimizer

        register("dpo-spy", build, config=DPOConfig, description="dpo that keeps a handle on itself (test)")


def test_dpo_beats_the_warm_start_on_held_out_digits(make_registry: Any, tmp_path: Path) -> None:
    env = EnvConfig(id="polyfuse/DigitsVQA-v0", num_envs=16, vectorization="native")
    pairs = collect_expert_preferences(env, 2000, seed=0, folder=tmp_path / "pairs")
    spy = Spy()
    registry = make_registry(spy)
    config = validate_pipeline({
        "env": env.model_dump(),
        "modalities": {"image": {"encoder": {"name": "small-cnn", "params": {"channels": [16, 32], "output_dim": 64}}},
                       "question": {"encoder": "question-words"}},
        "fuser": {"name": "concat", "params": {"output_dim": 64}},
        "dataset": {"name": "preferences", "params": {"path": str(pairs)}},
        "optimizer": {"name": "dpo-spy", "params": {"beta": 0.5, "learning_rate": 0.003}},
        "trainer": {"budget_unit": "gradient_steps", "total_steps": 1500, "eval_every": 1500, "eval_episodes": 500,
                    "checkpoint_every": 1500, "output_dir": str(tmp_path / "run"),
                    "warm_start": {"episodes": 300, "epochs": 20}},
    }, registry)
    summary = Trainer(config, registry, progress=False).run()

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r["eval/success"] for r in records if r["kind"] == "eval"}
    assert set(evals) == {0, 1500}
    assert any(r["kind"] == "warm_start" for r in records)
    print(f"held-out success: warm start {evals[0]:.3f}, after DPO {evals[1500]:.3f}")
    assert evals[1500] >= evals[0] + 0.1, evals
    assert summary["eval"]["success"] == evals[1500]

    [dpo] = spy.optimizers
    reference = dpo.reference.state_dict()
    for key, value in dpo.policy_at_start.items():
        assert torch.equal(reference[key], value), key  # the reference is the warm-started policy, untouched
    assert not any(p.requires_grad for p in dpo.reference.parameters())
    assert any(not torch.equal(value, dpo.policy.state_dict()[key]) for key, value in dpo.policy_at_start.items())
