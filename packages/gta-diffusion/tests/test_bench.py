"""The benchmark scripts' CPU smoke modes run the product paths end to end and write their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[3] / "tools"
BENCH = TOOLS / "bench_diffusion.py"


@pytest.mark.parametrize("network", ["fast-mixer", pytest.param("mixer-unet", marks=pytest.mark.slow)])
def test_bench_quick_runs_and_writes_json(tmp_path, network):
    out = tmp_path / "quick.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    # mixer-unet's compiled paths are checked against eager in test_compile.py; here its eager path is enough
    # to run the script end to end (compiling it on a CPU would double the suite's slowest test).
    paths = ("eager-fp32", "fast") if network == "fast-mixer" else ("eager-fp32",)
    res = subprocess.run([sys.executable, str(BENCH), "--quick", "--budget", "0.3", "--network", network,
                          "--paths", ",".join(paths), "--out", str(out)], capture_output=True, text=True,
                         timeout=400, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["network"] == ("fast-mixer-small" if network == "fast-mixer" else "mixer-unet")
    assert sorted(results["paths"]) == sorted(paths)
    for name in paths:
        row = results["paths"][name]
        assert "train_error" not in row and "augment_error" not in row, row
        assert row["train_steps_per_s"] > 0 and row["augment_transitions_per_s"] > 0
        assert row["start_index"] == 8  # mu = 0.5 of the 16-step quick schedule
    assert "train steps/s" in res.stdout and res.stdout.strip().splitlines()[-1].startswith("results written")


def test_head_to_head_quick_trains_both_networks_and_compares(tmp_path, make_toy_store):
    store = make_toy_store(tmp_path / "toy.zarr")
    out = tmp_path / "h2h"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    args = [sys.executable, str(TOOLS / "head_to_head.py"), "--quick", "--data", str(store.path), "--out", str(out),
            "--steps", "4", "--batch-size", "8", "--horizon", "4", "--log-every", "2", "--num-transitions", "20",
            "--sample-batch", "8", "--sampler-steps", "4"]
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = json.loads((out / "head_to_head.json").read_text())["runs"]
    assert set(runs) == {"toy-mixer-unet", "toy-fast-mixer"}
    for row in runs.values():
        assert set(row["loss"]) == {"2", "4"} and row["transitions"] == 20 and row["augment_transitions_per_s"] > 0
    assert runs["toy-mixer-unet"]["parameters"] != runs["toy-fast-mixer"]["parameters"]
    table = res.stdout.splitlines()
    assert any(line.split()[:1] == ["4"] and len(line.split()) == 3 for line in table)  # step 4: both losses
    # Repeating the command reuses the finished runs (no training) and rewrites the comparison.
    res = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0 and json.loads((out / "head_to_head.json").read_text())["runs"]["toy-fast-mixer"][
        "steps_run"] == 0, res.stderr[-3000:]
