"""tools/bench_rl.py on the CPU: the quick run, the fresh-process measurement and its errors (the full
benchmark runs on the GPU; BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[3] / "tools"


@pytest.fixture(scope="module")
def bench_rl():
    sys.path.insert(0, str(TOOLS))
    try:
        import bench_rl

        yield bench_rl
    finally:
        sys.path.remove(str(TOOLS))


def test_quick_run_writes_every_rate(tmp_path):
    out = tmp_path / "rl.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_rl.py"), "--quick", "--algos", "td3bc,iql",
                           "--seconds", "0.05", "--batch-size", "16", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    impls = [(r["algorithm"], r["impl"], r["seeds"]) for r in result["rows"]]
    assert impls == [("td3bc", "corl-eager", 1), ("td3bc", "eager", 1), ("td3bc", "eager", 2),
                     ("td3bc", "eager+bf16", 1), ("td3bc", "eager+bf16", 2),
                     ("iql", "eager", 1), ("iql", "eager", 2), ("iql", "eager+bf16", 1), ("iql", "eager+bf16", 2)]
    assert all(r["steps_per_s"] > 0 for r in result["rows"])
    iql = result["summary"]["iql"]
    rate = {(r["impl"], r["seeds"]): r["steps_per_s"] for r in result["rows"] if r["algorithm"] == "iql"}
    assert iql["same_mode_speedup"] == pytest.approx(
        {m: 2 * rate[m, 2] / rate[m, 1] for m in ("eager", "eager+bf16")})
    assert iql["best_1_seed_impl"] in ("eager", "eager+bf16")
    assert iql["multi_vs_sequential_speedup"] == pytest.approx(
        2 * iql["best_2_seed_steps_per_s"] / iql["best_1_seed_steps_per_s"])
    assert result["targets"]["td3bc_best_1_seed_fp32"] == rate_fp32(result, "td3bc")


def rate_fp32(result, algo):
    return max(r["steps_per_s"] for r in result["rows"] if r["algorithm"] == algo and r["seeds"] == 1
               and r["impl"] == "eager")


def test_run_without_td3bc_prints_its_summary(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_rl.py"), "--quick", "--algos", "iql",
                           "--seconds", "0.05", "--batch-size", "16", "--out", str(tmp_path / "iql.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[-1].startswith("iql: 2 seeds at once vs 2 sequential:")


def test_child_error_names_the_exception(bench_rl):
    stderr = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
              "torch._inductor.exc.InductorError: AssertionError: boom\n\n"
              "Set TORCHDYNAMO_VERBOSE=1 for the internal stack trace\n")
    assert bench_rl._exception_line(stderr) == "torch._inductor.exc.InductorError: AssertionError: boom"
    assert bench_rl._exception_line("") == "no output"


def test_describe_unwraps_compiler_errors(bench_rl):
    import torch

    exc = torch._inductor.exc.InductorError(AssertionError("reorder_loops_by_dep_pair\nmore"), None)
    assert bench_rl.describe_error(exc) == "AssertionError: reorder_loops_by_dep_pair"
    assert bench_rl.describe_error(ValueError()) == "ValueError"


def test_requested_modes_that_cannot_run_are_reported(tmp_path):
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_rl.py"), "--quick", "--algos", "iql", "--modes",
                           "eager,graph", "--seconds", "0.05", "--batch-size", "16", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "iql graph S=1 skipped: a --quick / CPU run times only the eager modes" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [(r["impl"], "skipped" in r) for r in rows] == [("eager", False)] * 2 + [("graph", True)] * 2


def test_unknown_mode_is_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_rl.py"), "--quick", "--modes", "eager,warp",
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown mode(s) warp" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def test_measurements_past_the_budget_are_skipped(tmp_path):
    out = tmp_path / "x.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_rl.py"), "--quick", "--algos", "iql", "--budget", "0",
                           "--seconds", "0.05", "--batch-size", "16", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["impl"], r["seeds"], r.get("skipped")) for r in rows] == [
        (impl, seeds, "past the 0 s budget") for impl in ("eager", "eager+bf16") for seeds in (1, 2)]
    assert "iql: 2 seeds at once vs 2 sequential: nanx" in proc.stdout


def test_measure_in_child_runs_in_a_fresh_process(bench_rl, tmp_path):
    store = tmp_path / "s.zarr"
    bench_rl.make_store(store, 3000)
    assert bench_rl.measure_in_child(store, "td3bc", "eager", 2, 16, 0.05, 1) > 0
    with pytest.raises(RuntimeError, match="child failed: StoreError: .*no store at"):
        bench_rl.measure_in_child(tmp_path / "missing.zarr", "td3bc", "eager", 1, 16, 0.05, 1)


def test_bench_runs_window_stats(tmp_path):
    sys.path.insert(0, str(TOOLS))
    try:
        from bench_runs import window_stats
    finally:
        sys.path.remove(str(TOOLS))
    # log every 10 steps, evaluations at 20 and 40 (and at the end, 60): windows 30 and 50 hold one each;
    # the first window holds the compile. Steady 100 updates/s = 0.1 s per window; the two evaluation windows
    # took 0.6 and 0.4 s, i.e. 0.5 and 0.3 s of evaluation.
    rates = {10: 1.0, 20: 100.0, 30: 10 / 0.6, 40: 100.0, 50: 10 / 0.4, 60: 100.0}
    lines = [json.dumps({"step": s, "kind": "train", "updates_per_s": r}) for s, r in rates.items()]
    lines.insert(2, json.dumps({"step": 20, "kind": "eval", "score_mean": 1.0}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    stats = window_stats(tmp_path / "m.jsonl", steps=60, log_every=10, eval_every=20)
    assert stats["steady_updates_per_s"] == pytest.approx(100.0)
    assert stats["eval_cost_s"] == pytest.approx(0.4)
    assert stats["timed_evals"] == 2 and stats["evaluations"] == 1


def test_bench_runs_quick(tmp_path):
    out = tmp_path / "runs.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_runs.py"), "--quick", "--modes", "in-process,workers+overlap",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(r["mode"], r["seeds"]) for r in result["rows"]] == [
        ("in-process", 1), ("in-process", 2), ("workers+overlap", 1), ("workers+overlap", 2)]
    # 40 updates, evaluated at 20 and 40 (counted from the runs' logs), the first one in a timed window
    assert all(r["wall_s"] > 0 and r["steady_updates_per_s"] > 0 for r in result["rows"])
    assert all(r["evaluations"] == 2 and r["timed_evals"] == 1 for r in result["rows"])
    for mode, s in result["summary"].items():
        one, two = (next(r for r in result["rows"] if r["mode"] == mode and r["seeds"] == k) for k in (1, 2))
        assert s["stacked_vs_sequential"] == pytest.approx(2 * one["wall_s"] / two["wall_s"])
    bad = subprocess.run([sys.executable, str(TOOLS / "bench_runs.py"), "--quick", "--modes", "nope", "--out",
                          str(tmp_path / "x.json")], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "unknown mode" in bad.stderr


def test_profile_rl_sets_inductor_config(bench_rl):
    import profile_rl
    import torch._inductor.config as config

    before = (config.coordinate_descent_tuning, config.triton.cudagraphs)
    try:
        profile_rl.set_inductor_config("coordinate_descent_tuning=True")
        profile_rl.set_inductor_config("triton.cudagraphs=False")
        assert (config.coordinate_descent_tuning, config.triton.cudagraphs) == (True, False)
        for bad, says in [("no_such_setting=1", "not KEY=VALUE"), ("coordinate_descent_tuning", "not KEY=VALUE"),
                          ("triton.no_such=1", "not KEY=VALUE"), ("coordinate_descent_tuning=yes", "not a Python literal")]:
            with pytest.raises(ValueError, match=says):
                profile_rl.set_inductor_config(bad)
    finally:
        config.coordinate_descent_tuning, config.triton.cudagraphs = before


def test_quick_arms_run_compares_a_stack_with_sequential_runs(tmp_path):
    out = tmp_path / "arms.json"
    proc = subprocess.run([sys.executable, str(TOOLS / "bench_rl.py"), "--quick", "--algos", "td3bc", "--modes",
                           "eager", "--arms", "3", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    rows = {(r["impl"], r["seeds"], r["arms"]): r for r in result["rows"] if "steps_per_s" in r}
    stacked, alone = rows["eager", 2, 3], rows["eager", 2, 1]
    assert stacked["seed_updates_per_s"] == pytest.approx(stacked["steps_per_s"] * 6)
    summary = result["summary"]["td3bc"]
    assert summary["arms_vs_sequential_speedup"]["eager"] == pytest.approx(
        stacked["steps_per_s"] * 3 / alone["steps_per_s"])
    assert "3 arms x 2 seeds at once vs 3 sequential 2-seed runs" in proc.stdout
