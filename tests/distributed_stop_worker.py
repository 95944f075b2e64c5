"""One rank of test_distributed.py's stop test (started there by torchrun): ``polyfuse run ARGS`` in which rank 0
alone is sent SIGTERM at the end of its first evaluation after the start, when the other rank already waits for it in
its next iteration's collectives; rank 0 must go on to the next exchange rather than stop alone."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from polyfuse.cli import main
from polyfuse.training.trainer import Trainer


def signal_rank_0_after_its_second_evaluation() -> None:
    evaluate, calls = Trainer._evaluate, []

    def evaluate_then_signal(self: Trainer, *args: Any, **kwargs: Any) -> None:
        evaluate(self, *args, **kwargs)
        calls.append(None)
        if self.ranks.main and len(calls) == 2:  # the first: before training; the second: mid-run
            os.kill(os.getpid(), signal.SIGTERM)

    Trainer._evaluate = evaluate_then_signal  # type: ignore[method-assign]


if __name__ == "__main__":
    signal_rank_0_after_its_second_evaluation()
    sys.exit(main(["run", *sys.argv[1:]]))
