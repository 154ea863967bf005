#!/usr/bin/env bash
# Rebuild the embedded default model and data (rookworld_trl/assets/) with the project's own commands:
# Stockfish-labelled data -> compact tokenizer -> SFT from scratch, then continued twice -> held-out eval
# -> copy into assets/.
#   bash scripts/setup.sh && bash scripts/build_default_model.sh          # ~3.2 h on 2 CPU cores
# BUILD (default build/default_model) keeps the intermediate outputs; re-running resumes the data step.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/default_model}
RW=.venv/bin/rookworld
ASSETS=rookworld_trl/assets

# 1. data: engine self-play + random play, depth-8 MultiPV-5 labels, A: transitions with illegal moves
$RW data generate --out "$BUILD/data" --selfplay 350 --random 1300 --plies_per_game 12 --max_plies 160 \
    --depth 8 --workers 2 --seed 0 --no-progress
# 2. a compact byte-level BPE on the training lines
$RW tokenizer train --data "$BUILD/data" --vocab_size 1024 --out "$BUILD/tokenizer"
# 3. SFT from scratch (recipe: recipes/sft_default_model.yaml)
$RW sft --config recipes/sft_default_model.yaml --dataset_name "$BUILD/data" \
    --tokenizer_name_or_path "$BUILD/tokenizer" --output_dir "$BUILD/sft"
# 3b. continue it: a second warmup + cosine with more P: rows (recipes/sft_default_model_continue.yaml)
$RW sft --config recipes/sft_default_model_continue.yaml --dataset_name "$BUILD/data" \
    --model_name_or_path "$BUILD/sft" --output_dir "$BUILD/sft2"
# 3c. and once more, shorter, with still more P: rows
$RW sft --config recipes/sft_default_model_continue.yaml --dataset_name "$BUILD/data" \
    --model_name_or_path "$BUILD/sft2" --output_dir "$BUILD/sft3" \
    --max_steps 1500 --learning_rate 3e-4 --mix_env_ratio 0.3 --seed 2
# 4. held-out evaluation of the result (figures go into the model card)
$RW eval "$BUILD/sft3" --data "$BUILD/data" --split test --suites policy,env \
    --policy_samples 500 --env_samples 500 --depth 8 --cache "$BUILD/data/analysis.sqlite" --out "$BUILD/eval"
# 5. ship: model + tokenizer, the Parquet splits and their stats, the eval and the card
rm -rf "$ASSETS/model" "$ASSETS/data"
mkdir -p "$ASSETS/model" "$ASSETS/data"
cp "$BUILD"/sft3/{config.json,generation_config.json,model.safetensors,tokenizer.json,tokenizer_config.json} "$ASSETS/model/"
cp "$BUILD"/data/{train,validation,test}.parquet "$BUILD/data/stats.json" "$ASSETS/data/"
cp "$BUILD/eval/eval.json" "$BUILD/eval/eval.md" "$ASSETS/model/"
echo "build_default_model: done; update $ASSETS/README.md (the model card) with $BUILD/eval/eval.md"
