#!/usr/bin/env bash
# One-step setup: a .venv with torch, this package (editable, with dev tools) and Stockfish.
#   bash scripts/setup.sh
# torch: on a machine with an NVIDIA GPU pip's default (CUDA) build; otherwise the CPU build
# (torch==$TORCH_CPU_VERSION from PyTorch's CPU wheel index, or from $TORCH_INDEX_URL if set, e.g. a mirror),
# so a laptop or CI box never pulls gigabytes of CUDA wheels. An existing torch is always kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the default (CUDA) torch build"
    "${PIP[@]}" install torch
  else
    # the public index's torch is the CUDA build: PyTorch's CPU wheel index unless TORCH_INDEX_URL names another
    index=${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}
    echo "setup: no NVIDIA GPU, installing the CPU torch build torch==${TORCH_CPU_VERSION:-2.13.0} from $index"
    "${PIP[@]}" install "torch==${TORCH_CPU_VERSION:-2.13.0}" --index-url "$index"
  fi
fi

# Reinstall the package only when pyproject.toml changed (the install is editable: code edits need none).
stamp=.venv/.rookworld-installed
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  echo "setup: installing rookworld-trl and its dependencies"
  "${PIP[@]}" install -e ".[dev]"
  cp pyproject.toml "$stamp"
fi

if [ -z "${STOCKFISH_PATH:-}" ] && ! command -v stockfish >/dev/null 2>&1 && [ ! -x /usr/games/stockfish ]; then
  echo "setup: installing Stockfish (Debian package 'stockfish')"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq stockfish >/dev/null
  else
    echo "setup: no apt-get here; install Stockfish yourself and set STOCKFISH_PATH" >&2; exit 1
  fi
fi
echo "setup: ready (.venv/bin/rookworld --help)"
