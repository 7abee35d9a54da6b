"""tools/bench_sac.py on the CPU: the quick run times the eager update and every loop data path end to end and
writes the JSON its docstring promises (the CUDA engines run on the GPU; BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[3] / "tools" / "bench_sac.py"
LOOPS = ["readable", "staged", "staged+t4", "overlap", "overlap+t4"]


def test_quick_run_times_the_update_and_every_loop(tmp_path):
    out = tmp_path / "q" / "sac.json"
    # Shorter than --quick's 600 timed steps after 500 warm-up steps, to stay a few seconds.
    proc = subprocess.run([sys.executable, str(TOOL), "--quick", "--num-envs", "2", "--loop-steps", "40",
                           "--warmup", "20", "--transfer-every", "4", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] and result["torch"] and result["wall_s"] > 0
    assert (result["batch_size"], result["num_envs"], result["warmup"], result["loop_steps"]) == (256, 2, 20, 40)
    assert [r["engine"] for r in result["updates"]] == ["eager"]  # the CUDA engines only on CUDA
    assert all("error" not in r and r["updates_per_s"] > 0 for r in result["updates"])
    assert [r["loop"] for r in result["loops"]] == LOOPS
    for row in result["loops"]:
        assert "error" not in row, row
        assert row["engine"] == "eager" and row["env_steps_per_s"] > 0
        # Timed from step warmup + loop_steps / 2 to the mark before the last: two env copies per env step.
        assert 0 < row["timed_steps"] <= 20
    assert "readable" in proc.stdout and "updates/s" in proc.stdout
    assert not list(out.parent.glob(".*tmp*"))  # written whole (temporary file renamed)


@pytest.mark.parametrize("bad", [("--loop-steps", "0"), ("--warmup", "0"), ("--num-envs", "2", "--loop-steps", "7")])
def test_step_counts_too_small_to_time_are_refused(tmp_path, bad):
    proc = subprocess.run([sys.executable, str(TOOL), "--quick", *bad, "--out", str(tmp_path / "sac.json")],
                          capture_output=True, text=True, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "error:" in last and "--loop-steps" in last
    assert not (tmp_path / "sac.json").exists()
