#!/usr/bin/env bash
# One command for a GPU session: every GPU path, checked and measured, in one markdown report.
#   bash scripts/gpu_check.sh [--full] [OUT_DIR]  # default build/gpu_check; the report is OUT_DIR/report.md
#   PYTHON=python3 bash scripts/gpu_check.sh      # an environment that has the package (default: .venv, made
#                                                 # by scripts/setup.sh when missing)
# Rows: the environment (the device named), `rookworld doctor`, the GPU-relevant tests (CUDA tests run where
# CUDA is, skip elsewhere), the main job on the GPU (3 steps: `rookworld train` moves to CUDA by itself), and
# scripts/bench/bench_step.py --model 124m: the 124M-shape GRPO step, ours against plain TRL eager at the 124M recipe's 64
# completions (bench), and ours compiled at recipes/grpo_rookworld_124m_80gb.yaml's batch (bench_80gb:
# completions/s, MFU, recompilations after step 1, peak memory). ~5 min on an H200 by the 2026-11-26 run's
# timings (GPU_CHECK_STEPS=6 bench steps). --full: today's long form as well (GPU_CHECK_STEPS=20; plain TRL
# compiled, ours compiled at 64 with the step where compile pays back, the 80gb recipe's sweep over 64, 256 and
# 1,024 completions), 15-20 min. Without CUDA the GPU rows SKIP; the rest runs, so the script itself is checked
# on CPU (tests/test_gpu_check.py). Exit code 0 when no row FAILs.
set -uo pipefail
cd "$(dirname "$0")/.."
FULL=0
if [ "${1:-}" = "--full" ]; then FULL=1; shift; fi
OUT=${1:-build/gpu_check}
STEPS=${GPU_CHECK_STEPS:-$([ $FULL = 1 ] && echo 20 || echo 6)}
BIG=recipes/grpo_rookworld_124m_80gb.yaml
BENCH="scripts/bench/bench_step.py --model 124m --what step"
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
  [ -x .venv/bin/rookworld ] || bash scripts/setup.sh || exit 1
  PYTHON=.venv/bin/python
fi
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
start=$SECONDS
cuda=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))")
device=$("$PYTHON" -c "
import os, torch
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f'{torch.cuda.device_count()} x {p.name}, {p.total_memory / 2**30:.0f} GiB')
else:
    print(f'CPU only ({os.cpu_count()} cores), no CUDA device')
")
rows=()
failed=0

# row NAME CMD...: run CMD with its output in OUT/NAME.log; PASS or FAIL by its exit code, and its seconds
row() {
  local name=$1 log="$OUT/$1.log" start=$SECONDS result
  shift
  echo "gpu_check: $name ..."
  if "$@" >"$log" 2>&1; then result=PASS; else result=FAIL; failed=1; fi
  rows+=("| $name | $result | $((SECONDS - start)) s | \`$(echo "$*" | head -1)\` |")
  echo "gpu_check: $name $result ($((SECONDS - start)) s)"
}

skip() {
  rows+=("| $1 | SKIP | - | $2 |")
  echo "gpu_check: $1 SKIP ($2)"
}

row environment "$PYTHON" -c "
import torch, transformers, trl, accelerate, subprocess, shutil
print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| transformers', transformers.__version__,
      '| trl', trl.__version__, '| accelerate', accelerate.__version__)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f'cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}')
print('no CUDA device' if not torch.cuda.is_available() else '')
"
row doctor "$PYTHON" -m rookworld_trl.stages.cli doctor
row tests "$PYTHON" -m pytest -q -p no:cacheprovider -m "not slow" tests/test_decoding.py tests/test_doctor.py \
  tests/test_grpo.py tests/test_compile_shapes.py tests/test_nonfinite.py tests/test_step_guard.py
if [ "$cuda" = 1 ]; then
  # the main job as a GPU user runs it: `rookworld train` alone moves to CUDA in bf16 (3 steps, no evals)
  main_job() {
    "$PYTHON" -m rookworld_trl.stages.cli train --max_steps 3 --eval_samples 0 --eval_every_steps 0 \
      --save_strategy no --output_dir "$OUT/main_job_gpu" && grep -q "rookworld: device cuda" "$OUT/main_job_gpu.log"
  }
  row main_job_gpu main_job
  if [ $FULL = 1 ]; then
    row bench "$PYTHON" $BENCH --steps "$STEPS" --variants plain,plain_compiled,ours,ours_compiled \
      --markdown "$OUT/bench.md"
    row bench_80gb "$PYTHON" $BENCH --recipe $BIG --steps "$STEPS" --variants ours,ours_compiled \
      --completions 64,256,1024 --markdown "$OUT/bench_80gb.md"
  else
    row bench "$PYTHON" $BENCH --steps "$STEPS" --variants ours,plain --markdown "$OUT/bench.md"
    row bench_80gb "$PYTHON" $BENCH --recipe $BIG --steps "$STEPS" --variants ours_compiled --markdown "$OUT/bench_80gb.md"
  fi
else
  skip main_job_gpu "no CUDA device"
  skip bench "no CUDA device: the 124M-shape step is a GPU measurement"
  skip bench_80gb "no CUDA device: the 124M-shape step is a GPU measurement"
fi

{
  echo "# GPU check"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), \`bash scripts/gpu_check.sh$([ $FULL = 1 ] && echo ' --full')\`, $((SECONDS - start)) s"
  echo
  echo "Device: $device"
  echo
  echo '```'
  cat "$OUT/environment.log"
  echo '```'
  echo
  echo "| row | result | time | command |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "## rookworld doctor"
  echo
  echo '```'
  sed -n '/^check/,$p' "$OUT/doctor.log"
  echo '```'
  echo
  echo "## Tests"
  echo
  echo '```'
  grep -E "passed|failed|SKIPPED|FAILED|error" "$OUT/tests.log" | tail -20
  echo '```'
  if [ -f "$OUT/bench.md" ]; then
    echo
    echo "## Bench ($BENCH --steps $STEPS)"
    echo
    cat "$OUT/bench.md"
  fi
  if [ -f "$OUT/bench_80gb.md" ]; then
    echo
    echo "## Bench at $BIG's batch (--steps $STEPS)"
    echo
    cat "$OUT/bench_80gb.md"
  fi
  for log in "$OUT"/*.log; do
    name=$(basename "$log" .log)
    if printf '%s\n' "${rows[@]}" | grep -q "| $name | FAIL |"; then
      echo
      echo "## $name failed: the last lines of $log"
      echo
      echo '```'
      tail -40 "$log"
      echo '```'
    fi
  done
} >"$OUT/report.md"
echo "gpu_check: report in $OUT/report.md"
exit $failed
