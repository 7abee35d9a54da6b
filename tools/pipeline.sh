#!/usr/bin/env bash
# The GTA pipeline on a small embedded default, composed from the packages' CLIs as a user would:
#   A. gta-data       make a D4RL maze2d-style PointMaze dataset               -> original.zarr
#   B. gta-diffusion  train the conditional trajectory diffusion model (4.1)   -> diffusion/
#   C. gta-diffusion  augment: partial noising + amplified return guidance    -> augmented.zarr
#   D. gta-rl         TD3+BC on the original data alone (none) and on original + augmented (gta),
#                     2 seeds each, the two arms in one stack                  -> rl/none, rl/gta
#   E. gta-eval       the comparison (mean +- std, Welch's t-test)            -> compare/, summary.md
#   F. gta-eval       data quality of the augmented data (oracle, novelty)     -> quality/
# Sizes are tiny so that it runs on a laptop CPU in a few minutes; every knob is an environment variable.
# Usage: tools/pipeline.sh [OUT_DIR]   (uses .venv/bin; run tools/install.sh first)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-out/quickstart}
BIN=${GTA_BIN:-.venv/bin}
SIZE=${GTA_SIZE:-20000}              # original transitions
DIFF_STEPS=${GTA_DIFF_STEPS:-400}    # diffusion training steps (paper: 1M)
AUG=${GTA_AUG:-20000}                # generated transitions (paper: 5M)
RL_STEPS=${GTA_RL_STEPS:-3000}       # TD3+BC steps per seed (paper: 1M)
DEVICE=${GTA_DEVICE:-cpu}
mkdir -p "$OUT"

echo "== A. dataset: pointmaze-umaze, $SIZE transitions"
"$BIN/gta-data" make pointmaze-umaze --out "$OUT/original.zarr" --size "$SIZE" --seed 0 --overwrite
"$BIN/gta-data" info "$OUT/original.zarr"

echo "== B. diffusion model: fast-mixer-small network, $DIFF_STEPS steps"
rm -rf "$OUT/diffusion"
"$BIN/gta-diffusion" train --data "$OUT/original.zarr" --out "$OUT/diffusion" --network fast-mixer-small \
  --steps "$DIFF_STEPS" --batch-size 64 --log-every 100 --checkpoint-every "$DIFF_STEPS" --device "$DEVICE"

echo "== C. augmentation: $AUG transitions, maze2d preset (mu 0.5, alpha 1.3, successful episodes x10)"
"$BIN/gta-diffusion" augment --model "$OUT/diffusion" --data "$OUT/original.zarr" --out "$OUT/augmented.zarr" \
  --dataset-preset maze2d --num-transitions "$AUG" --batch-size 1024 --device "$DEVICE" --overwrite
"$BIN/gta-data" info "$OUT/augmented.zarr"

echo "== D. offline RL: TD3+BC on the original data (none) and on original + augmented (gta), seeds 0-1, $RL_STEPS steps"
rm -rf "$OUT/rl"
"$BIN/gta-rl" train td3bc --arm "none=$OUT/original.zarr" --arm "gta=$OUT/original.zarr,$OUT/augmented.zarr" \
  --seeds 0-1 --steps "$RL_STEPS" --batch-size 256 --eval-every "$RL_STEPS" --eval-episodes 5 --out "$OUT/rl" \
  --device "$DEVICE"

echo "== E. does GTA make the agent better? (at this tiny scale: a smoke test, not a result; see RESULTS.md)"
"$BIN/gta-eval" compare "$OUT/rl/none" "$OUT/rl/gta" --out "$OUT/compare" --overwrite
cp "$OUT/compare/scores.md" "$OUT/summary.md"

echo "== F. data quality of the augmented data"
"$BIN/gta-eval" quality --original "$OUT/original.zarr" --augmented "$OUT/augmented.zarr" --samples 5000 \
  --segments 100 --workers 2 --out "$OUT/quality" --overwrite
echo "done: results in $OUT (score table: $OUT/summary.md; comparison: $OUT/compare; quality report: $OUT/quality)"
