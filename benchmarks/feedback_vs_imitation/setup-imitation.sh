#!/usr/bin/env bash
# Creates benchmarks/feedback_vs_imitation/.venv-imitation: imitation 1.0.1 (which pins
# stable-baselines3~=2.2.1 and gymnasium~=0.29, incompatible with polyfuse's .venv) and seals,
# with torch pinned to the version in the repository's constraints.txt (taken from this machine's disk).
#   bash benchmarks/feedback_vs_imitation/setup-imitation.sh        # idempotent; PYTHON=python3.11 by default
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$HERE/.venv-imitation"
PYTHON="${PYTHON:-python3}"
if [[ -f "$VENV/.installed" ]]; then
  echo "$VENV is set up (delete it to reinstall)"; exit 0
fi
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c "$ROOT/constraints.txt" "imitation==1.0.1" "seals==0.2.1" torch
"$VENV/bin/python" - <<'PY'
import imitation, seals, stable_baselines3, gymnasium, torch
print(f"imitation {imitation.__version__}, seals {seals.__version__}, stable-baselines3 "
      f"{stable_baselines3.__version__}, gymnasium {gymnasium.__version__}, torch {torch.__version__}")
PY
touch "$VENV/.installed"
