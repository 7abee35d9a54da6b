#!/usr/bin/env bash
# The GTA pipeline on a small embedded default, composed from the packages' CLIs as a user would:
#   1. gta-data      make a PointMaze (maze2d-umaze style) dataset            -> $OUT/original.zarr
# Usage: tools/pipeline.sh [OUT_DIR]   (uses .venv/bin; run tools/install.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/quickstart}
BIN=.venv/bin
mkdir -p "$OUT"
SIZE=${GTA_QUICKSTART_SIZE:-20000}

echo "== 1/1 dataset: pointmaze-umaze, $SIZE transitions"
"$BIN/gta-data" make pointmaze-umaze --out "$OUT/original.zarr" --size "$SIZE" --seed 0 --overwrite
"$BIN/gta-data" info "$OUT/original.zarr"
