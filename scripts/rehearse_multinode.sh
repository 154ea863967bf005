#!/usr/bin/env bash
# Two machines rehearsed on this box: accelerate's multi-node launcher (accelerate_configs/multi_node.yaml, the
# file real clusters use) started twice on localhost, machine_rank 0 and 1, one CPU process each (gloo).
#
#   bash scripts/rehearse_multinode.sh [OUTPUT_DIR]        # ~3-5 min on 2 CPU cores; exit 0 when it holds
#
# 1. both machines start GRPO on the embedded model (tiny: 64 rows, 8 completions per process, depth-4
#    Stockfish, max_steps 4, a checkpoint every 2 steps);
# 2. once checkpoint-2 is marked complete, every process of machine 1 gets SIGKILL (its launcher's process group
#    and the training process torchrun started in a session of its own): a machine lost; machine 0 fails on its
#    next collective (or is killed after 120 s);
# 3. both machines start again with the same command (--resume_from_checkpoint auto) and train on to step 4;
# 4. it prints each rank's sha256 of its final weights (tests/multi_rank_stage.py records them), whether they
#    are equal, and the metrics rows per step. Logs: OUTPUT_DIR/../logs/.
# PYTHON (default .venv/bin/python) and PORT (default 29621) can be set in the environment.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
PORT=${PORT:-29621}
OUT=${1:-$(mktemp -d)/run}
LOGS=$(dirname "$OUT")/logs
mkdir -p "$LOGS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

launch() {  # launch MACHINE_RANK LOG: one machine's `accelerate launch`, in the background ($! is its pid)
  "$PY" -m accelerate.commands.launch --config_file "$ROOT/accelerate_configs/multi_node.yaml" \
    --num_machines 2 --num_processes 2 --machine_rank "$1" --main_process_ip 127.0.0.1 \
    --main_process_port "$PORT" --mixed_precision no \
    "$ROOT/tests/multi_rank_stage.py" --config "$ROOT/recipes/grpo_tiny_cpu.yaml" --use_cpu true \
    --output_dir "$OUT" --max_steps 4 --save_steps 2 --resume_from_checkpoint auto \
    --dataset_max_samples 64 --per_device_train_batch_size 8 --num_generations 4 \
    --max_completion_length 56 --engine_depth 4 --engine_workers 1 --eval_samples 0 --eval_every_steps 0 \
    --report_to none --disable_tqdm true --log_completions false >"$2" 2>&1 &
}

tree() {  # tree PID: PID and all its descendants (torchrun starts each worker in a session of its own)
  echo "$1"
  local child
  for child in $(pgrep -P "$1"); do tree "$child"; done
}

lose() {  # lose PID: SIGKILL to a machine's launcher and everything under it, as when the machine dies
  # shellcheck disable=SC2046
  kill -KILL $(tree "$1") 2>/dev/null || true
}

wait_for() {  # wait_for PID SECONDS: the exit code; after SECONDS, kill it (lose) and return 137
  local pid=$1 left=$2
  while kill -0 "$pid" 2>/dev/null && ((left > 0)); do sleep 1; left=$((left - 1)); done
  if kill -0 "$pid" 2>/dev/null; then lose "$pid"; fi
  wait "$pid" && return 0 || return $?
}

trap 'for p in ${m0:-} ${m1:-}; do lose "$p"; done' EXIT  # interrupted: leave no training process behind
echo "rehearsal: output_dir $OUT, logs $LOGS"
launch 0 "$LOGS/machine0.run1.log"; m0=$!
launch 1 "$LOGS/machine1.run1.log"; m1=$!
marker="$OUT/checkpoint-2/rookworld_complete.json"
for _ in $(seq 1200); do
  [[ -f $marker ]] && break
  kill -0 "$m0" 2>/dev/null || break
  sleep 0.5
done
[[ -f $marker ]] || { echo "rehearsal: FAIL no checkpoint-2 (see $LOGS/machine0.run1.log)"; exit 1; }
lose "$m1"  # machine 1 is lost: its launcher, torchrun, its training process and its Stockfish engines
echo "rehearsal: $(date -u +%T) checkpoint-2 complete; killed every process of machine 1 (launcher $m1)"
rc1=0; { wait "$m1"; } 2>/dev/null || rc1=$?  # no "Killed" line from the shell
rc0=0; wait_for "$m0" 120 || rc0=$?
m0='' m1=''  # both ended: nothing left for the EXIT trap to stop
echo "rehearsal: $(date -u +%T) run 1 exit codes: machine 0 $rc0, machine 1 $rc1"
[[ -d $OUT/final ]] && { echo "rehearsal: FAIL run 1 finished before the kill"; exit 1; }

rm -f "$OUT"/rank*.json
launch 0 "$LOGS/machine0.run2.log"; m0=$!
launch 1 "$LOGS/machine1.run2.log"; m1=$!
rc0=0; wait_for "$m0" 900 || rc0=$?
rc1=0; wait_for "$m1" 60 || rc1=$?
m0='' m1=''
echo "rehearsal: $(date -u +%T) run 2 exit codes: machine 0 $rc0, machine 1 $rc1"
grep -h "resuming from" "$LOGS"/machine*.run2.log || true

"$PY" - "$OUT" "$rc0" "$rc1" <<'EOF'
import json, pathlib, sys
out, codes = pathlib.Path(sys.argv[1]), sys.argv[2:]
ranks = [json.loads((out / f"rank{r}.json").read_text()) if (out / f"rank{r}.json").is_file() else {} for r in (0, 1)]
for r, rec in enumerate(ranks):
    print(f"rank {r} weights sha256 {rec.get('sha256', 'missing')}")
equal = all(r.get("sha256") for r in ranks) and len({r["sha256"] for r in ranks}) == 1
print(f"equal weights on every rank: {'yes' if equal else 'NO'}")
rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
steps = [r["step"] for r in rows]
for r in rows:
    print(f"metrics step {r['step']}: loss {r['loss']:.4f} reward {r.get('reward', float('nan')):.4f}")
final = (out / "final" / "rookworld_complete.json").is_file()
ok = equal and steps == [1, 2, 3, 4] and final and codes == ["0", "0"]
print(f"metrics rows per step {steps}; final/ marked: {final}; rehearsal: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
EOF
