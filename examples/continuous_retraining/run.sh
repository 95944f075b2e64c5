#!/usr/bin/env bash
# Continuous retraining end to end, with a simulated deployment and a synthetic annotator:
#   1. train the policy that is deployed first;
#   2. serve it, logging its episodes into a label store and posting each as a good/bad query;
#   3. a simulated client plays DigitsVQA against the server and reports each answer's reward;
#   4. the synthetic annotator answers the queries (good iff the reward says the answer was right);
#   5. fine-tune the served policy on a reward model learnt from those labels (--continue-from), with a KL
#      penalty to it; the gate promotes the candidate only if it is not worse on held-out episodes;
#   6. the server, still running, reloads the promoted checkpoint: /health's step changes.
# Run from the repository root:  bash examples/continuous_retraining/run.sh
# Needs polyfuse-ppo, polyfuse-sbert, polyfuse-feedback and the serve extra (`make setup` installs them all into .venv: run it with .venv/bin on PATH).
set -euo pipefail
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
here=examples/continuous_retraining
root=runs/retraining
port=${PORT:-8765}
url=http://127.0.0.1:$port
rm -rf "$root/finetune-1" "$root/served.sqlite"* "$root/base/promoted.json"

[ -d "$root/base/checkpoint" ] || polyfuse run "$here/base.yaml"                                      # 1

polyfuse serve "$root/base" --port "$port" --reload-interval 2 \
  --log-feedback "$root/served.sqlite" --query-share 1.0 --query-source synthetic &                     # 2
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
until curl -sf "$url/health" >/dev/null; do sleep 1; done
echo "serving: $(curl -s "$url/health")"

python "$here/../serve_simulated_client.py" --url "$url" --episodes 5000 --train-settings                # 3
sleep 3                                                                  # the server writes episodes once a second

polyfuse feedback answer --db "$root/served.sqlite" --project served-base --source synthetic             # 4

polyfuse run "$here/finetune.yaml" --continue-from "$root/base"                                          # 5

sleep 5                                                                                                  # 6
echo "serving: $(curl -s "$url/health")"
