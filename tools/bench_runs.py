"""Whole gta-rl training runs, started as a user starts them (one `gta-rl train` process each), for each
way of evaluating: S sequential one-seed runs against one S-seed run (issue 5).

The paper's protocol evaluates every 5k of 1M updates (10 episodes per seed), so a run's wall time is
its updates, its evaluations and its start (data, compile, graph capture). Per run this reports the wall
time of the process and, from the seed's metrics.jsonl, the steady training rate (median of the logged
windows without an evaluation), the cost of one evaluation to the run (the extra time of the windows in
which an evaluation ran, per evaluation; the final evaluation is not in a window) and the rest (wall -
updates / rate - evaluations x cost; every run compiles with empty torch.compile caches unless
--shared-caches). Evaluation modes (`gta-rl train` flags):

  in-process        --no-eval-overlap               envs and policies in the training process (before: the default)
  overlap           (none)                          the same in a background thread while training goes on
  workers           --eval-async --no-eval-overlap  env copies and CPU policies in worker processes
  workers+overlap   --eval-async                    both

    python tools/bench_runs.py --out runs.json                 # GPU: synthetic HalfCheetah store, TD3+BC
    python tools/bench_runs.py --quick --out runs.json         # CPU smoke run on the toy task
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
MODES = {
    "in-process": ["--no-eval-overlap"],
    "overlap": [],
    "workers": ["--eval-async", "--no-eval-overlap"],
    "workers+overlap": ["--eval-async"],
}


def window_stats(metrics: Path, steps: int, log_every: int, eval_every: int) -> dict[str, float]:
    """Steady rate, per-evaluation cost and number of timed evaluations from one seed's log."""
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line]
    windows = [(r["step"], r["updates_per_s"]) for r in records if r.get("kind") == "train"]
    # An evaluation at step e runs after the log line of step e: its time is in the window that ends next.
    after_eval = {e + log_every for e in range(eval_every, steps, eval_every)} if eval_every else set()
    plain = [rate for i, (step, rate) in enumerate(windows) if i > 0 and step not in after_eval]
    steady = statistics.median(plain) if plain else float("nan")
    extra = [log_every / rate - log_every / steady for step, rate in windows if step in after_eval]
    return {"steady_updates_per_s": steady, "eval_cost_s": statistics.mean(extra) if extra else 0.0,
            "timed_evals": len(extra), "evaluations": sum(r.get("kind") == "eval" for r in records)}


def run_one(store: Path, out: Path, algo: str, seeds: int, mode: str, args, fast: list[str]) -> dict:
    env = os.environ.copy()
    if not args.shared_caches:  # every run compiles cold, as a first run does (the caches of torch.compile)
        cache = out.parent / f"cache-{out.name}"
        env |= {"TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": str(cache / "triton")}
    cmd = [sys.executable, "-c", "from gta_rl.cli import app; app()", "train", algo, "--data", str(store),
           "--seeds", f"0-{seeds - 1}" if seeds > 1 else "0", "--steps", str(args.steps),
           "--eval-every", str(args.eval_every), "--eval-episodes", str(args.episodes),
           "--log-every", str(args.log_every), "--out", str(out), *fast, *MODES[mode]]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{mode}, {seeds} seed(s) failed: {proc.stderr.strip().splitlines()[-1:]}")
    stats = window_stats(out / "seed_0" / "metrics.jsonl", args.steps, args.log_every, args.eval_every)
    rest = wall - args.steps / stats["steady_updates_per_s"] - stats["evaluations"] * stats["eval_cost_s"]
    return {"mode": mode, "seeds": seeds, "wall_s": wall, **stats, "rest_s": rest}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON results path")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run on the toy task")
    ap.add_argument("--algo", default="td3bc")
    ap.add_argument("--seeds", type=int, default=None, help="seeds of the stacked run (8; --quick: 2)")
    ap.add_argument("--steps", type=int, default=None, help="updates per run (30000; --quick: 40)")
    ap.add_argument("--eval-every", type=int, default=None, help="5000 (the paper's); --quick: 20")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--log-every", type=int, default=None, help="1000; --quick: 10")
    ap.add_argument("--modes", default="in-process,overlap,workers+overlap",
                    help=f"comma-separated subset of {', '.join(MODES)} (the first is the baseline)")
    ap.add_argument("--shared-caches", action="store_true",
                    help="let runs share torch.compile's on-disk caches (later runs then compile faster)")
    ap.add_argument("--flags", default=None,
                    help="training flags (default on CUDA: --fullgraph --cuda-graph --tf32 --bf16; --quick: none)")
    args = ap.parse_args()
    modes = args.modes.split(",")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    args.seeds = args.seeds or (2 if args.quick else 8)
    args.steps = args.steps or (40 if args.quick else 30_000)
    args.eval_every = args.eval_every if args.eval_every is not None else (20 if args.quick else 5000)
    args.log_every = args.log_every or (10 if args.quick else 1000)
    if args.quick:
        args.episodes = min(args.episodes, 3)
        fast = ["--batch-size", "32", "--device", "cpu", "--set", "hidden=[16,16]"] if args.flags is None else args.flags.split()
    else:
        fast = (args.flags or "--fullgraph --cuda-graph --tf32 --bf16").split()

    import torch

    device = "cpu" if args.quick else torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "store.zarr"
        if args.quick:
            from gta_rl.toy import write_point_dataset

            write_point_dataset(store, episodes=100, expert_prob=0.25, seed=0)
        else:
            sys.path.insert(0, str(TOOLS))
            from bench_rl import make_store

            make_store(store, 200_000)  # synthetic HalfCheetah-shaped transitions, HalfCheetah-v5 for evaluation
        for mode in modes:
            for seeds in (1, args.seeds):
                row = run_one(store, Path(tmp) / f"{mode}-{seeds}", args.algo, seeds, mode, args, fast)
                rows.append(row)
                print(f"{mode:16s} seeds {seeds}: wall {row['wall_s']:7.1f} s, {row['steady_updates_per_s']:8.1f} "
                      f"updates/s, {row['eval_cost_s']:6.3f} s per evaluation, rest {row['rest_s']:5.1f} s", flush=True)
    summary = {}
    for mode in modes:
        one, many = (next(r for r in rows if r["mode"] == mode and r["seeds"] == s) for s in (1, args.seeds))
        summary[mode] = {"sequential_wall_s": args.seeds * one["wall_s"], "stacked_wall_s": many["wall_s"],
                         "stacked_vs_sequential": args.seeds * one["wall_s"] / many["wall_s"]}
        print(f"{mode:16s} {args.seeds} sequential one-seed runs {args.seeds * one['wall_s']:7.1f} s, one "
              f"{args.seeds}-seed run {many['wall_s']:6.1f} s: {summary[mode]['stacked_vs_sequential']:.2f}x")
    args.out.write_text(json.dumps({"device": device, "algo": args.algo, "steps": args.steps,
                                    "eval_every": args.eval_every, "episodes": args.episodes, "flags": fast,
                                    "rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
