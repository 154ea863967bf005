#!/usr/bin/env bash
# Build the embedded default model (rookworld_trl/assets/model) with the project's own commands, in resumable
# stages: Stockfish-labelled data -> SFT from scratch -> learning curve -> bf16 pack -> held-out eval -> ship.
#   bash scripts/setup.sh && bash scripts/build_default_model.sh            # every stage not done yet
#   bash scripts/build_default_model.sh status                              # how far each stage is
#   bash scripts/build_default_model.sh sft curve                           # only these stages
#   bash scripts/build_default_model.sh cooldown curve                      # a finished model from the SFT so far
#   MODEL=build/default_model/cooldown-4000 bash scripts/build_default_model.sh pack eval ship   # ship that one
#   SFT_S=7200 bash scripts/build_default_model.sh sft cooldown    # a 2-hour sitting, then its model, finished
#   nohup bash scripts/build_default_model.sh > build/default_model.log 2>&1 &   # hours on 2 cores: background it
# Each stage resumes where it stopped: data from its finished chunks (16 games each), SFT from its last checkpoint
# (every 500 steps), the curve and the eval from the checkpoints already evaluated. A stage that finished writes
# BUILD/STAGE.done; re-running skips it. BUILD/timings.tsv has a line per sitting of each stage (where, seconds).
# The SFT holds its learning rate until its last fifth (the recipe's warmup_stable_decay), so `cooldown` can decay
# any checkpoint K (COOLDOWN_FROM, default the newest) into BUILD/cooldown-K over the recipe's share of the steps
# (0.3: 0.43 K more steps) or over COOLDOWN_DECAY steps: the model that K steps give, finished, for the curve or
# to ship, while the SFT itself goes on from K in a later sitting. SFT_S
# ends a sitting at a deadline: the SFT saves the step it reached and its stage stays open.
# On a GPU machine the same command trains in bf16 on the GPU and labels with one Stockfish per core. The data is
# made on CPU and carried: `carry` writes its train and validation lines, text only (~24 bytes a row, ~25 MB), with
# the shipped train and tactics train splits added to train, to build/carry/, which the GPU run trains on (the
# device tool's carry: ["build/carry", ".gpu"]):
#   bash .gpu/device.sh env SFT_DATA=build/carry BUILD=build/gpu bash scripts/build_default_model.sh sft curve eval
# Settings (environment): BUILD (build/default_model), WORKERS (Stockfish processes: the cores), DEVICE (cpu or
# cuda: CUDA when there is one), SFT_ARGS / EVAL_ARGS (extra `rookworld sft` / `rookworld eval` flags, e.g.
# SFT_ARGS="--max_steps 2000"), DATA (the `data generate` settings, starting "--selfplay N --random N"), SFT_DATA
# (what sft trains on: BUILD/data), CARRY (where `carry` writes: build/carry), COOLDOWN_FROM (a checkpoint's
# step), COOLDOWN_DECAY (its decay's steps: the recipe's share), SFT_S (a sitting's deadline, seconds), MODEL (the run pack, eval and ship take: BUILD/sft, or a
# BUILD/cooldown-K; after `pack`, BUILD/packed), RECIPE (the SFT recipe:
# recipes/sft_strong_model.yaml from scratch, or recipes/sft_strong_model_continue.yaml for a sitting that continues
# the shipped model on fresh games; its header has the command).
# Decontamination: the shipped validation and test splits and the tactics validation and test splits are excluded
# from the training data by position (--exclude), so the eval and the main job's eval never see a trained position.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/default_model}
PY=${PYTHON:-.venv/bin/python}
RW=("$PY" -m rookworld_trl.stages.cli)
RECIPE=${RECIPE:-"recipes/sft_strong_model.yaml"}
ASSETS=rookworld_trl/assets
WORKERS=${WORKERS:-$(nproc)}
DEVICE=${DEVICE:-$("$PY" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
HELD_OUT=("$ASSETS/data/validation.parquet" "$ASSETS/data/test.parquet"
          "$ASSETS/tactics/validation.parquet" "$ASSETS/tactics/test.parquet")
# the data: engine self-play (every ply analysed; games reach mates) and random play (odd positions, illegal
# moves); seed 1, so none of the shipped data's games (seed 0) is made again
DATA_ARGS=(--selfplay 4000 --random 12000 --plies_per_game 12 --max_plies 160 --depth 8 --seed 1
           --validation_fraction 0.01 --test_fraction 0.01)
[ -n "${DATA:-}" ] && read -ra DATA_ARGS <<< "$DATA"
read -ra EVAL_EXTRA <<< "${EVAL_ARGS:-}"
SFT_DATA=${SFT_DATA:-$BUILD/data}
MODEL=${MODEL:-$BUILD/sft}
CARRY=${CARRY:-build/carry}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
mkdir -p "$BUILD"

# run STAGE FUNCTION: FUNCTION unless BUILD/STAGE.done exists; then the marker. Every sitting of a stage, finished
# or stopped (Ctrl-C, kill, an error), adds its line to BUILD/timings.tsv: stage, host, where, seconds, how it ended.
STAGE="" STARTED=0 OPEN="" DEADLINE=()
timing() { printf '%s\t%s\t%s\t%s\t%s\n' "$STAGE" "$(hostname)" "$(where)" $((SECONDS - STARTED)) "$1" >> "$BUILD/timings.tsv"; }
trap '[ -n "$STAGE" ] && timing stopped' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
run() {
  if [ -f "$BUILD/$1.done" ]; then echo "build: $1 done ($(cat "$BUILD/$1.done"))"; return; fi
  echo "build: $1 ... ($(date -u +%H:%M:%S) UTC, $DEVICE, $WORKERS engine workers)"
  STAGE=$1 STARTED=$SECONDS OPEN=""
  "$2"
  if [ -n "$OPEN" ]; then timing "$OPEN"; STAGE=""; return; fi  # stopped on purpose: not done, resumable
  timing done
  echo "$(where), $((SECONDS - STARTED)) s in its last sitting" > "$BUILD/$1.done"
  echo "build: $1 done in $((SECONDS - STARTED)) s"
  STAGE=""
}

where() {
  if [ "$DEVICE" = cuda ]; then
    "$PY" -c "import torch, os; print(f'{torch.cuda.get_device_name(0)} + {os.cpu_count()} cores')"
  elif [[ "$STAGE" == sft || "$STAGE" == cooldown-* ]] && cpu_bf16; then
    echo "CPU bf16, $(nproc) cores"
  else
    echo "CPU, $(nproc) cores"
  fi
}

# a CPU with bf16 dot products trains 1.32x faster under bf16 autocast (scripts/bench/bench_sft.py --variants
# packed,bf16 on a Zen4); elsewhere bf16 is emulated and slower. SFT_ARGS="--bf16 false" keeps fp32 (any spelling
# the SFT's parser takes as false: --bf16=False, no, n, 0; so that timings.tsv says what ran).
cpu_bf16() {
  local sft_args=${SFT_ARGS:-}
  [ "$DEVICE" = cpu ] && grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo \
    && ! [[ "${sft_args,,}" =~ --bf16[=\ ]+(false|no|n|0)( |$) ]]
}

data() {
  "${RW[@]}" data generate --out "$BUILD/data" "${DATA_ARGS[@]}" --workers "$WORKERS" --exclude "${HELD_OUT[@]}"
}

# train OUTPUT_DIR RESUME [FLAGS]: the recipe's SFT on this machine; FLAGS come after SFT_ARGS, so they win
train() {
  local device_args=()
  [ "$DEVICE" = cuda ] && device_args=(--use_cpu false --bf16 true --dataloader_num_workers 4)
  cpu_bf16 && device_args=(--bf16 true)
  # shellcheck disable=SC2086  # SFT_ARGS is a list of flags
  "${DEADLINE[@]}" "${RW[@]}" sft --config "$RECIPE" --dataset_name "$SFT_DATA" --output_dir "$1" \
    --resume_from_checkpoint "$2" "${device_args[@]}" ${SFT_ARGS:-} "${@:3}"
}

# sft: the recipe's SFT, resumed from its newest checkpoint. SFT_S (seconds) is a sitting's deadline: then SIGTERM to
# the front `rookworld sft` (it saves the step and stops); the stage stays open, so `cooldown` finishes that
# checkpoint and a later sitting goes on from it. --foreground keeps Ctrl-C reaching the SFT.
sft() {
  [ -n "${SFT_S:-}" ] || { train "$BUILD/sft" auto; return; }
  local rc=0 DEADLINE=(timeout --foreground -s TERM "$SFT_S")
  train "$BUILD/sft" auto || rc=$?
  ((rc == 124)) || return $rc
  echo "build: sft stopped at its deadline (SFT_S=$SFT_S s), its step saved; cooldown finishes it"
  OPEN=deadline
}

# cooldown_step: "K MAX_STEPS": the step to cool down (COOLDOWN_FROM, default the SFT's newest checkpoint) and the
# max_steps whose decay (the recipe's share) starts at K, checked before the stage starts: a checkpoint that exists,
# at the constant rate (past it, a cooldown would climb back to the peak)
cooldown_step() {
  local steps step total start cool
  steps=$(find "$BUILD/sft" -maxdepth 1 -name 'checkpoint-*' 2>/dev/null | sed 's/.*checkpoint-//' | sort -n)
  [ -n "$steps" ] || { echo "build: no checkpoint in $BUILD/sft to cool down; run the sft stage first" >&2; exit 2; }
  step=${COOLDOWN_FROM:-$(tail -n 1 <<< "$steps")}
  if ! grep -qxF "$step" <<< "$steps"; then
    echo "build: no checkpoint-$step in $BUILD/sft; COOLDOWN_FROM takes one of its steps:" $steps >&2
    exit 2
  fi
  read -r total start cool < <("$PY" - "$RECIPE" "$BUILD/sft/checkpoint-$step/trainer_state.json" "$step" \
    "${COOLDOWN_DECAY:-}" <<'PYTHON'
import json, sys, yaml
from rookworld_trl.training.sft import cooldown_max_steps, decay_steps
share = yaml.safe_load(open(sys.argv[1]))["lr_scheduler_kwargs"]["num_decay_steps"]
total, step = json.load(open(sys.argv[2]))["max_steps"], int(sys.argv[3])
cool = step + int(sys.argv[4]) if sys.argv[4] else cooldown_max_steps(step, share)
print(total, total - decay_steps(total, share), cool)
PYTHON
  )
  if ((step > start)); then
    echo "build: checkpoint $step is in the SFT's own decay (from step $start of its $total): its end is" \
      "the finished model; set COOLDOWN_FROM to a step <= $start" >&2
    exit 2
  fi
  echo "$step $cool"
}

# checkpoint K's run with a max_steps whose decay starts at K (COOLDOWN_STEPS); with COOLDOWN_DECAY, a decay of
# that many steps (the recipe's decay_type)
cooldown() {
  local out=$BUILD/cooldown-$COOLDOWN_FROM resume=$BUILD/sft/checkpoint-$COOLDOWN_FROM decay=()
  compgen -G "$out/checkpoint-*" > /dev/null && resume=auto  # a cooldown stopped midway goes on from its own
  if [ -n "${COOLDOWN_DECAY:-}" ]; then
    local kind
    kind=$("$PY" -c "import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))['lr_scheduler_kwargs']['decay_type'])" \
      "$RECIPE")
    decay=(--lr_scheduler_kwargs "{\"num_decay_steps\": $COOLDOWN_DECAY, \"decay_type\": \"$kind\"}")
  fi
  train "$out" "$resume" --max_steps "$COOLDOWN_STEPS" "${decay[@]}"
}

carry() {
  mkdir -p "$CARRY"
  "$PY" - "$BUILD/data" "$CARRY" "$ASSETS/data/train.parquet" "$ASSETS/tactics/train.parquet" <<'PYTHON'
import sys, pyarrow as pa, pyarrow.parquet as pq
data, carry, *shipped = sys.argv[1:]
for split in ("train", "validation"):  # the loader parses text-only splits into every column again
    files = [f"{data}/{split}.parquet"] + (shipped if split == "train" else [])
    table = pa.concat_tables([pq.read_table(f, columns=["text"]) for f in files])
    pq.write_table(table, f"{carry}/{split}.parquet", compression="zstd", compression_level=19)
    print(f"carry: {split} {table.num_rows:,} rows ({' + '.join(files)})")
PYTHON
  du -sh "$CARRY"
}

cooled() { find "$BUILD" -maxdepth 1 -name 'cooldown-*' -type d | sort; }

curve() {
  local runs=()
  mapfile -t runs < <(cooled)
  "$PY" scripts/learning_curve.py "$BUILD/sft" "${runs[@]}" --device "$DEVICE" --workers "$WORKERS" \
    -- "${EVAL_EXTRA[@]}"
}

eval_final() {
  "${RW[@]}" eval "$MODEL" --baseline "$ASSETS/model" --data "$ASSETS/data" --split test \
    --suites policy,env,tactics --tactics "$ASSETS/tactics" --policy_samples 100000 --env_samples 500 \
    --tactics_samples 100000 --device "$DEVICE" --engine_workers "$WORKERS" --out "$BUILD/eval" "${EVAL_EXTRA[@]}"
}

# pack: MODEL's files with its weights stored in bf16 (half the bytes in git) in BUILD/packed, which the stages after
# it take; config.json keeps dtype float32, so GPT2LMHeadModel.from_pretrained loads it as fp32, as it trains.
# Written beside it and renamed: a kill midway leaves the last whole pack, never half of one.
pack() {
  rm -rf "$BUILD/packed.tmp" && mkdir -p "$BUILD/packed.tmp"
  cp "$MODEL"/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json} "$BUILD/packed.tmp/"
  "$PY" - "$MODEL" "$BUILD/packed.tmp" <<'PYTHON'
import json, sys, torch
from safetensors.torch import load_file, save_file
src, out = sys.argv[1:]
weights = load_file(f"{src}/model.safetensors")
save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
          f"{out}/model.safetensors", metadata={"format": "pt"})
config = json.load(open(f"{out}/config.json"))
open(f"{out}/config.json", "w").write(json.dumps({**config, "dtype": "float32"}, indent=2) + "\n")
print(f"pack: {len(weights)} tensors of {src} in bf16")
PYTHON
  rm -rf "$BUILD/packed" && mv "$BUILD/packed.tmp" "$BUILD/packed" && echo "pack: -> $BUILD/packed"
}

ship() {
  rm -rf "$ASSETS/model" && mkdir -p "$ASSETS/model"
  cp "$MODEL"/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json} \
    "$ASSETS/model/"
  cp "$BUILD/eval/eval.json" "$BUILD/eval/eval.md" "$ASSETS/model/"
  [ -f "$BUILD/sft/curve.md" ] && cp "$BUILD/sft/curve.md" "$ASSETS/model/"  # a continued sitting has no curve
  echo "build: shipped $MODEL; put $BUILD/eval/eval.md (and any curve.md) into $ASSETS/README.md (the model card)"
}

status() {
  echo "build: $BUILD ($DEVICE)"
  local games=() i runs=()
  mapfile -t runs < <(cooled)
  for ((i = 0; i < ${#DATA_ARGS[@]}; i++)); do  # the game counts, wherever DATA puts them
    case "${DATA_ARGS[i]}" in --selfplay | --random) games+=("${DATA_ARGS[i]}" "${DATA_ARGS[i + 1]}") ;; esac
  done
  "$PY" scripts/learning_curve.py "$BUILD/sft" "${runs[@]}" --status --data "$BUILD/data" "${games[@]}"
  [ -f "$BUILD/timings.tsv" ] && { printf 'stage\thost\twhere\tseconds\tended\n'; cat "$BUILD/timings.tsv"; }
  return 0
}

stages=("$@")
[ ${#stages[@]} = 0 ] && stages=(data sft curve pack eval ship)
for stage in "${stages[@]}"; do
  case $stage in
    status) status ;;
    data|carry|sft|curve|ship) run "$stage" "$stage" ;;
    pack) run pack pack; MODEL=$BUILD/packed ;;
    cooldown) cool=$(cooldown_step)  # its own line: set -e stops the build on a refusal
      read -r COOLDOWN_FROM COOLDOWN_STEPS <<< "$cool"
      run "cooldown-$COOLDOWN_FROM" cooldown ;;
    eval) run eval eval_final ;;
    *) echo "build: no stage '$stage'; stages: data carry sft cooldown curve pack eval ship, or status" >&2; exit 2 ;;
  esac
done
