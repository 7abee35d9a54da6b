"""The benchmark script's CPU smoke mode runs the product paths end to end and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "tools" / "bench_diffusion.py"


def test_bench_quick_runs_and_writes_json(tmp_path):
    out = tmp_path / "quick.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([sys.executable, str(BENCH), "--quick", "--budget", "0.3", "--out", str(out)],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out.read_text())
    for name in ("eager-fp32", "fast"):
        row = results["paths"][name]
        assert "train_error" not in row and "augment_error" not in row, row
        assert row["train_steps_per_s"] > 0 and row["augment_transitions_per_s"] > 0
        assert row["start_index"] == 8  # mu = 0.5 of the 16-step quick schedule
    assert "train steps/s" in res.stdout and res.stdout.strip().splitlines()[-1].startswith("results written")
