"""tools/bench_sac_versions.py on the CPU: the quick run times every variant of the SAC update after checking
that they compute the same update (the CUDA comparison runs on the GPU; BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[3] / "tools" / "bench_sac_versions.py"


def test_quick_run_times_every_variant_of_the_same_update(tmp_path):
    out = tmp_path / "v.json"
    proc = subprocess.run([sys.executable, str(TOOL), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["engine"] == "eager"
    assert [r["variant"] for r in result["rows"]] == ["current", "old-runner", "old-runner+columns",
                                                      "old-runner+columns+f64-adam"]
    assert all(r["updates_per_s"] > 0 and len(r["rounds"]) == 2 for r in result["rows"])
    # Eager on the CPU the packed and the column buffer gather the same values, and the float64 bias
    # corrections round to the float32 ones over the checked updates: the same metrics.
    assert all(r["check_max_abs_diff"] <= 1e-6 for r in result["rows"])
    assert result["rows"][0]["vs_first"] == 1.0
    assert not out.with_name(out.name + ".tmp").exists()


def test_unknown_variant_and_graph_engine_on_the_cpu_are_refused(tmp_path):
    for args in (["--variants", "current,nope"], ["--engine", "graph"]):
        proc = subprocess.run([sys.executable, str(TOOL), "--quick", "--out", str(tmp_path / "v.json"), *args],
                              capture_output=True, text=True, timeout=120)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and "error:" in last
        assert "nope" in last or "needs CUDA" in last
    assert not (tmp_path / "v.json").exists()
