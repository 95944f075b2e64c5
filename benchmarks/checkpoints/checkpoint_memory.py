"""Checkpoint cost on the default DQN job: resident memory over many saves, and the share of time spent saving.

Two measurements, each in a fresh process running the embedded default
pipeline (`polyfuse run` with no config: DigitsVQA, small CNN + frozen
sentence-transformer, gated fuser, DQN) through the trainer:

- ``many``: 20,000 steps with a checkpoint every 100 steps (200 saves);
  resident memory (VmRSS) is read after every save. Target: flat within 10%.
- ``default``: the default job as shipped (40,000 steps, a checkpoint every
  10,000); the time spent inside saves over the run's wall time. Target: < 5%.

``--checkpoint-module FILE`` saves with another version of
``checkpoint.py`` instead, for a before/after comparison on the same code otherwise:

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/checkpoints/checkpoint_memory.py
    git show 190d98f:core/polyfuse/training/checkpoint.py > /tmp/checkpoint_before.py
    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/checkpoints/checkpoint_memory.py \
        --checkpoint-module /tmp/checkpoint_before.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def rss_mb() -> float:
    """Resident memory of this process in MB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def use_checkpoint_module(path: Path) -> None:
    """Save with another version of ``polyfuse/training/checkpoint.py`` (e.g. the one before issue 9)."""
    import importlib.util

    from polyfuse.training import trainer

    spec = importlib.util.spec_from_file_location("other_checkpoint", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    trainer.save_checkpoint = lambda output_dir, state, frozen=(): module.save_checkpoint(output_dir, state)


def child(phase: str, module: Path | None, output_dir: Path) -> dict[str, Any]:
    """Train the default job in this process, timing every save and reading RSS after it."""
    from polyfuse.config import validate_pipeline
    from polyfuse.registry import default_registry
    from polyfuse.run import default_pipeline_data
    from polyfuse.training import trainer

    if module is not None:
        use_checkpoint_module(module)
    data = default_pipeline_data()
    if phase == "many":
        data["trainer"].update(total_steps=20_000, checkpoint_every=100, eval_every=20_000, eval_episodes=200)
    data["trainer"]["output_dir"] = str(output_dir)
    registry = default_registry()
    config = validate_pipeline(data, registry, source="benchmark")
    saves: list[tuple[float, float]] = []  # (seconds, RSS MB after)

    def timed_save(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = save(*args, **kwargs)
        saves.append((time.perf_counter() - started, rss_mb()))
        return result

    save = trainer.save_checkpoint
    trainer.save_checkpoint = timed_save  # type: ignore[assignment]
    started = time.perf_counter()
    summary = trainer.Trainer(config, registry, progress=False).run()
    wall = time.perf_counter() - started
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
             for p in output_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint")}
    return {"phase": phase, "writer": str(module or "current"), "wall_s": wall, "steps": summary["steps"],
            "eval_success": summary["eval"].get("success"), "save_s": [s for s, _ in saves],
            "rss_mb": [r for _, r in saves], "sizes_bytes": sizes}


def report(result: dict[str, Any]) -> None:
    saves, rss, wall = result["save_s"], result["rss_mb"], result["wall_s"]
    share = sum(saves) / wall
    print(f"\n[{result['phase']}, checkpoint.py: {result['writer']}] {result['steps']} steps in {wall:.1f} s, "
          f"{len(saves)} saves, held-out success {result['eval_success']}")
    print(f"  saving: {sum(saves):.2f} s in all ({share:.1%} of the run), mean {1000 * sum(saves) / len(saves):.0f} ms, "
          f"first {1000 * saves[0]:.0f} ms, max {1000 * max(saves):.0f} ms")
    if len(rss) > 10:
        marks = sorted({0, 9, *range(19, len(rss), 20), len(rss) - 1})
        print("  RSS after save: " + ", ".join(f"#{i + 1} {rss[i]:.0f} MB" for i in marks))
        for first in (0, 9):
            base = rss[first]
            print(f"  RSS from save {first + 1} to save {len(rss)}: {rss[-1] - base:+.0f} MB "
                  f"({(rss[-1] - base) / base:+.1%}); highest {max(rss[first:]):.0f} MB "
                  f"({(max(rss[first:]) - base) / base:+.1%})")
    print("  on disk: " + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in sorted(result["sizes_bytes"].items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", choices=["many", "default", "both"], default="both")
    parser.add_argument("--checkpoint-module", type=Path, help="save with this checkpoint.py instead")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(child(args.phase, args.checkpoint_module, Path(folder) / "run")))
        return
    phases = ["many", "default"] if args.phase == "both" else [args.phase]
    module = ["--checkpoint-module", str(args.checkpoint_module.resolve())] if args.checkpoint_module else []
    results = []
    for phase in phases:
        done = subprocess.run([sys.executable, __file__, "--child", "--phase", phase, *module],
                              capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"the {phase} run failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        report(results[-1])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
