#!/bin/bash
# Issue 62's warm-up pilot: SFT on the tactics train split (alone, or mixed 1:1 with embedded train rows), then
# the main job from the warmed-up model on seeds 0 and 1, each final model evaluated against the embedded model.
#   bash scripts/experiments/warmup_pilot.sh OUT tactics|mixed SFT_STEPS REPLAY_COEF   # e.g. build/warm_mixed mixed 300 0.3
# ~40 min on 2 cores. OUT/table.md: the pair's table (scripts/five_seeds.py's); docs/EXPERIMENTS.md, "No harm".
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=$1 DATA=$2 STEPS=$3 COEF=$4
PY=.venv/bin/python RW=.venv/bin/rookworld
mkdir -p "$OUT"
SFT_DATA=rookworld_trl/assets/tactics
if [ "$DATA" = mixed ]; then  # the tactics train rows and as many embedded train rows (P: and A:), shuffled
  SFT_DATA=$OUT/sft_data
  mkdir -p "$SFT_DATA"
  $PY - "$SFT_DATA" <<'EOF'
import random, shutil, sys
import pyarrow as pa, pyarrow.parquet as pq
out = sys.argv[1]
tactics = pq.read_table("rookworld_trl/assets/tactics/train.parquet")
data = pq.read_table("rookworld_trl/assets/data/train.parquet")
mixed = pa.concat_tables([tactics, data.take(sorted(random.Random(0).sample(range(len(data)), len(tactics))))])
order = list(range(len(mixed)))
random.Random(1).shuffle(order)
pq.write_table(mixed.take(order), f"{out}/train.parquet")
shutil.copy("rookworld_trl/assets/tactics/test.parquet", f"{out}/test.parquet")  # read by no selection
EOF
fi
[ -f "$OUT/sft/model.safetensors" ] || $RW sft --dataset_name "$SFT_DATA" --dataset_test_split test \
  --max_train_samples 4000 --max_steps "$STEPS" --eval_strategy no --load_best_model_at_end false \
  --early_stopping_patience 0 --save_strategy no --output_dir "$OUT/sft" --seed 0 > "$OUT/sft.log" 2>&1
$PY scripts/five_seeds.py --out "$OUT/runs" --seeds 0,1 --jobs 2 -- --model_name_or_path "$OUT/sft" \
  --tactics_replay_coef "$COEF" > "$OUT/runs.log" 2>&1
for s in 0 1; do  # against the embedded model, with the main job's eval settings
  [ -f "$OUT/vs/seed$s/eval/eval.json" ] || OMP_NUM_THREADS=1 $RW eval "$OUT/runs/seed$s/final" \
    --baseline rookworld_trl/assets/model --suites policy,env,tactics --policy_samples 100000 --env_samples 500 \
    --tactics rookworld_trl/assets/tactics --seed $s --depth 8 --max_new_tokens 96 \
    --cache "$OUT/runs/seed$s/engine_cache.sqlite" --out "$OUT/vs/seed$s/eval" > "$OUT/vs$s.log" 2>&1 &
done
wait
$PY scripts/five_seeds.py --out "$OUT/vs" --seeds 0,1 --table_only | tee "$OUT/table.md"
