#!/usr/bin/env bash
# Are pyproject.toml's lower bounds true? A fresh venv gets every dependency (and the dev extra) at EXACTLY its
# declared floor, then runs the default test tier and a 3-step `rookworld train`.
#   bash scripts/check_floors.sh [VENV_DIR]       # default build/floors-venv; exit 0 when all of it passes
# The floors are read from pyproject.toml (no second list). torch comes as scripts/setup.sh installs it: the CPU
# build where there is no NVIDIA GPU (PyTorch's CPU index, or TORCH_INDEX_URL), the default build where there is.
# Needs only the package registries. Takes 10-20 minutes (the install, then the default tier). Where PyTorch's
# CPU index cannot be reached (nor TORCH_INDEX_URL set), torch comes from PyPI's build (CUDA, ~5 GB with its
# nvidia-* wheels), whose CPU paths run on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-build/floors-venv}
PYTHON=${PYTHON:-python3}
start=$SECONDS
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip -q --disable-pip-version-check)

# name==floor for every `name>=floor` of [project].dependencies and the dev extra
mapfile -t pins < <("$VENV/bin/python" - <<'EOF'
import re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
    name, floor = re.match(r"^([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([^,;\s]+)", req).groups()
    print(f"{name}=={floor}")
EOF
)
torch_pin=$(printf '%s\n' "${pins[@]}" | grep '^torch==')
others=$(printf '%s\n' "${pins[@]}" | grep -v '^torch==')
echo "check_floors: pins: ${pins[*]}"

cpu_index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
if [ -z "${TORCH_INDEX_URL:-}" ] && ! "$PYTHON" -c "import urllib.request as u; u.urlopen('$cpu_index/', timeout=10)" \
    >/dev/null 2>&1; then
  cpu_index=https://pypi.org/simple  # only the package registries reach here: PyPI's build (~5 GB with nvidia-*)
  echo "check_floors: PyTorch's CPU index cannot be reached; torch from PyPI (set TORCH_INDEX_URL to choose)"
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  "${PIP[@]}" install "$torch_pin"
else
  "${PIP[@]}" install "$torch_pin" --index-url "$cpu_index"
fi
# the pins in one resolve, so that pip proves they install together (torch pinned again: it must not move)
# shellcheck disable=SC2086
"${PIP[@]}" install "$torch_pin" $others
"${PIP[@]}" install --no-deps -e .
echo "check_floors: installed"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as m, re, tomllib
from packaging.version import Version
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wrong = []
for req in project["dependencies"] + project["optional-dependencies"]["dev"]:
    name, floor = re.match(r"^([A-Za-z0-9_.\-]+)\s*>=\s*([^,;\s]+)", req).groups()
    got = m.version(name)
    print(f"  {name:18} floor {floor:10} installed {got}")
    if Version(got.split("+")[0]) != Version(floor):  # 2.11.0+cpu (or +cu130) is floor 2.11
        wrong.append(f"{name} {got} (floor {floor})")
if wrong:
    raise SystemExit(f"check_floors: not at the floor: {', '.join(wrong)}")
EOF

echo "check_floors: the default test tier"
if ! "$VENV/bin/python" -m pytest -q -n auto -p no:cacheprovider >"$VENV/tests.log" 2>&1; then
  tail -30 "$VENV/tests.log"
  echo "check_floors: FAIL: the default tier failed at the floors ($VENV/tests.log)"
  exit 1
fi
tail -3 "$VENV/tests.log"

echo "check_floors: rookworld train, 3 steps"
out=build/floors-run
rm -rf "$out"
"$VENV/bin/rookworld" train --max_steps 3 --eval_samples 0 --eval_every_steps 0 --save_strategy no \
  --output_dir "$out" --report_to none >"$VENV/train.log" 2>&1 || { tail -30 "$VENV/train.log"; exit 1; }
tail -8 "$VENV/train.log"
[ -f "$out/final/model.safetensors" ] || { echo "check_floors: FAIL: the 3-step run wrote no final model"; exit 1; }
echo "check_floors: PASS: every floor installs together, the default tier and a 3-step run pass ($((SECONDS - start)) s)"
