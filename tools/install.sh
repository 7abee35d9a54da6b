#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with every package installed editable.
# torch 2.13.0 (CPU) comes from this machine's local wheel; on a CUDA machine install torch first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q --disable-pip-version-check \
  "torch==2.13.0" \
  -e "packages/gta-data[all]" \
  -e "packages/gta-diffusion[tensorboard]" \
  -e "packages/gta-rl[tensorboard]" \
  -e packages/gta-eval \
  -e "packages/gta-pixel[dmc,vd4rl]" \
  "pytest>=8" "pytest-xdist>=3" 2>&1 | grep -v "is ignored" || true
# Triton (gta-rl[fused]) for the CPU interpreter tests of gta-rl's fused kernels; optional: without it those
# tests are skipped (torch's CUDA wheels bring their own Triton).
.venv/bin/python -m pip install -q --disable-pip-version-check "triton>=3.0" 2>&1 | grep -v "is ignored" || true
# pip's exit status is hidden by the filter above: check the result instead.
.venv/bin/python -c "import gta_data, gta_diffusion, gta_rl, gta_eval, gta_pixel, torch, pytest, xdist" \
  || { echo "install failed: see pip output above" >&2; exit 1; }
