#!/usr/bin/env bash
# GTA end to end on a locomotion dataset, on one GPU: make the dataset (gta-data), train the denoiser and
# augment (gta-diffusion), TD3+BC with 8 seeds at once on the original data and on original + augmented
# (gta-rl, fastest path), data quality and the comparison with Welch's t-test (gta-eval). Prints the time of
# every stage. The defaults are a reduced scale that fits about 10 minutes of an H100; the paper's scale is
# DIFF_STEPS=1000000 AUG=5000000 RL_STEPS=1000000.
# Usage: tools/e2e_locomotion.sh OUT_DIR [DATASET]   (DATASET: a gta-data locomotion recipe, default
# halfcheetah-medium; it also names the augmentation preset). Environment: GTA_BIN (default .venv/bin),
# DIFF_STEPS (40000), AUG (1000000), RL_STEPS (100000), SEEDS (0-7), BASELINE (1: also train on the original
# data alone), DEVICE (cuda; cpu runs the eager paths, for a smoke test), SIZE (dataset transitions, default the
# recipe's), NETWORK (denoiser network: fast-mixer, or mixer-unet for GTA's A.2 network).
set -euo pipefail
OUT=${1:?usage: tools/e2e_locomotion.sh OUT_DIR [DATASET]}
DATASET=${2:-halfcheetah-medium}
BIN=${GTA_BIN:-.venv/bin}
DIFF_STEPS=${DIFF_STEPS:-40000}; AUG=${AUG:-1000000}; RL_STEPS=${RL_STEPS:-100000}; SEEDS=${SEEDS:-0-7}
BASELINE=${BASELINE:-1}; DEVICE=${DEVICE:-cuda}; NETWORK=${NETWORK:-fast-mixer}
if [ "$DEVICE" = cpu ]; then
  FAST=(--device cpu); DFAST=(--device cpu); AFAST=(--device cpu --batch-size 256)
else
  FAST=(--fullgraph --cuda-graph --tf32 --bf16 --eval-async --device "$DEVICE")
  DFAST=(--bf16 --compile --cuda-graph --device "$DEVICE"); AFAST=(--bf16 --compile --device "$DEVICE")
fi
mkdir -p "$OUT"
T0=$(date +%s)
stage() { echo "[$(( $(date +%s) - T0 )) s] $*"; }

stage "A. dataset $DATASET"
[ -d "$OUT/original.zarr" ] || "$BIN/gta-data" make "$DATASET" --out "$OUT/original.zarr" ${SIZE:+--size "$SIZE"}
stage "B. denoiser: $NETWORK network, $DIFF_STEPS steps"
rm -rf "$OUT/diffusion"
"$BIN/gta-diffusion" train --data "$OUT/original.zarr" --out "$OUT/diffusion" --network "$NETWORK" \
  --steps "$DIFF_STEPS" --log-every 5000 --checkpoint-every "$DIFF_STEPS" "${DFAST[@]}"
stage "C. augmentation: $AUG transitions, preset $DATASET"
"$BIN/gta-diffusion" augment --model "$OUT/diffusion" --data "$OUT/original.zarr" --out "$OUT/augmented.zarr" \
  --dataset-preset "$DATASET" --num-transitions "$AUG" "${AFAST[@]}" --overwrite
runs=()
if [ "$BASELINE" = 1 ]; then
  stage "D0. TD3+BC on the original data, seeds $SEEDS, $RL_STEPS steps"
  rm -rf "$OUT/td3bc-original"
  "$BIN/gta-rl" train td3bc --data "$OUT/original.zarr" --seeds "$SEEDS" --steps "$RL_STEPS" \
    --eval-every "$(( RL_STEPS / 2 ))" --out "$OUT/td3bc-original" "${FAST[@]}"
  runs+=("$OUT/td3bc-original")
fi
stage "D. TD3+BC on original + augmented, seeds $SEEDS, $RL_STEPS steps"
rm -rf "$OUT/td3bc-gta"
"$BIN/gta-rl" train td3bc --data "$OUT/original.zarr" --data "$OUT/augmented.zarr" --seeds "$SEEDS" \
  --steps "$RL_STEPS" --eval-every "$(( RL_STEPS / 2 ))" --out "$OUT/td3bc-gta" "${FAST[@]}"
runs+=("$OUT/td3bc-gta")
"$BIN/gta-rl" summary "${runs[@]}"
if [ "${#runs[@]}" -gt 1 ]; then
  "$BIN/gta-eval" compare "${runs[@]}" --out "$OUT/compare" --overwrite
fi
stage "E. data quality"
"$BIN/gta-eval" quality --original "$OUT/original.zarr" --augmented "$OUT/augmented.zarr" --samples 5000 \
  --segments 200 --workers 0 --out "$OUT/quality" --overwrite
stage "done: $OUT"
