#!/usr/bin/env bash
# Re-makes the embedded tactics (rookworld_trl/assets/tactics): the main job's tactics prompts, labels and its
# tactics eval. ~20 min on 2 busy cores (Stockfish depth 8, 2 workers); the analysis cache makes a re-run fast.
#   bash scripts/build_tactics.sh [OUT=build/tactics]
# Then drops from the test split the positions the embedded data trains on (1 position, an opening reached in
# self-play), so that the main job's tactics eval is held out from every split it trains on.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/tactics}
.venv/bin/rookworld data generate --out "$out" --tactics --selfplay 64 --random 1200 --plies_per_game 1 \
  --tactics_per_game 4 --random_move_prob 0.15 --max_plies 160 --test_fraction 0.4 --validation_fraction 0.0 \
  --seed 1 --workers 2 --games_per_chunk 16 --no-progress
mkdir -p rookworld_trl/assets/tactics
.venv/bin/python - "$out" <<'PY'
import json, sys
import pyarrow as pa
import pyarrow.parquet as pq
from rookworld_trl.data.layout import position_key

out, assets = sys.argv[1], "rookworld_trl/assets"
trained = {position_key(f) for f in pq.read_table(f"{assets}/data/train.parquet", columns=["fen"])["fen"].to_pylist()}
stats = json.load(open(f"{out}/stats.json"))
for split in ("train", "validation", "test"):
    table = pq.read_table(f"{out}/{split}.parquet")
    keep = [position_key(f) not in trained for f in table["fen"].to_pylist()]
    stats.setdefault("dropped_as_in_embedded_train", {})[split] = keep.count(False)
    table = table.filter(pa.array(keep, type=pa.bool_()))
    pq.write_table(table, f"{assets}/tactics/{split}.parquet", compression="zstd", compression_level=19)
    if table.num_rows:
        stats["rows"][split] = {"P": table.num_rows}
json.dump(stats, open(f"{assets}/tactics/stats.json", "w"), indent=2, sort_keys=True)
print({s: pq.read_metadata(f"{assets}/tactics/{s}.parquet").num_rows for s in ("train", "test")}, stats["dropped_as_in_embedded_train"])
PY
