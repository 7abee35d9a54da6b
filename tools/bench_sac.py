"""Benchmark of online SAC (gta_rl.behaviour, the behaviour policies of the locomotion datasets; issue 8).

Two measurements, each for the eager update, the update replayed as a CUDA graph, and the update compiled
by torch.compile and replayed as a CUDA graph (the fast path of ``tools/train_behaviour_policies.py``):

- ``updates/s``: the SAC update alone (batch sampling, critic, actor and temperature steps, Polyak) at
  batch 256, 256-256 networks, on a buffer of 100k HalfCheetah-shaped rows;
- ``env steps/s``: the whole training loop (HalfCheetah-v5, one update per environment step, vector env of
  ``--num-envs`` copies), timed after the 5000 random warm-up steps.

Prints a table last and writes every number to ``--out`` (JSON).

    python tools/bench_sac.py --out sac.json            # CUDA (about 2 min on an H100)
    python tools/bench_sac.py --quick --out /tmp/q.json  # CPU smoke run (eager only, seconds)
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gta_rl.behaviour import ReplayBuffer, SACAgent, SACConfig, train_sac, update_runner

OBS, ACT = 17, 6


def update_rate(mode: str, device: torch.device, seconds: float, batch: int) -> float:
    cfg = SACConfig(env_id="HalfCheetah-v5", batch_size=batch, device=device.type)
    agent = SACAgent(cfg, OBS, ACT, -np.ones(ACT, np.float32), np.ones(ACT, np.float32), device)
    rng = np.random.default_rng(0)
    n = 100_000
    buffer = ReplayBuffer(n, OBS, ACT, device)
    buffer.add({"obs": rng.normal(size=(n, OBS)), "act": rng.uniform(-1, 1, (n, ACT)), "rew": rng.normal(size=n),
                "next_obs": rng.normal(size=(n, OBS)), "term": np.zeros(n), "trunc": np.zeros(n, bool),
                "env": np.zeros(n, np.int32)})
    runner = update_runner(agent, buffer, batch, compile=mode == "compile+graph", cuda_graph=mode != "eager")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(10):
        out = runner()
    sync()
    t0, count = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(50):
            out = runner()
        count += 50
        sync()
    rate = count / (time.perf_counter() - t0)
    if not torch.isfinite(out).all():
        raise FloatingPointError("non-finite SAC metrics")
    return rate


def loop_rate(mode: str, device: torch.device, steps: int, num_envs: int) -> dict[str, float]:
    warm = 5000
    cfg = SACConfig(env_id="HalfCheetah-v5", total_steps=warm + steps, num_envs=num_envs, learning_starts=warm,
                    checkpoint_every=10 * (warm + steps), log_every=warm, eval_episodes=1, device=device.type,
                    env_async=num_envs > 1, compile=mode == "compile+graph", cuda_graph=mode != "eager",
                    state_every=10 * (warm + steps))
    marks: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        train_sac(cfg, Path(tmp) / "run", progress=lambda step, total: marks.append((step, time.perf_counter())))
    # From the first step after the warm-up (and the graph capture / compile of the first updates) to the
    # mark before the last one (the last step is followed by the final evaluation and state save).
    first = next(i for i, (s, _) in enumerate(marks) if s >= warm + min(2000, steps // 2))
    (s0, t0), (s1, t1) = marks[first], marks[-2]
    return {"env_steps_per_s": (s1 - s0) / (t1 - t0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: eager only, a few seconds")
    ap.add_argument("--num-envs", type=int, default=4)
    ap.add_argument("--loop-steps", type=int, default=20_000, help="timed environment steps after the warm-up")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    modes = ["eager"] if device.type == "cpu" else ["eager", "graph", "compile+graph"]
    seconds = 0.5 if device.type == "cpu" else 3.0
    loop_steps = 1000 if device.type == "cpu" else args.loop_steps
    rows = []
    t_start = time.perf_counter()
    for mode in modes:
        row = {"mode": mode}
        try:
            row["updates_per_s"] = update_rate(mode, device, seconds, 256)
            row.update(loop_rate(mode, device, loop_steps, args.num_envs))
        except Exception as exc:  # report and go on
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
        print(row, flush=True)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "batch_size": 256, "num_envs": args.num_envs, "rows": rows,
              "wall_s": time.perf_counter() - t_start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nSAC on {result['device']} (batch 256, HalfCheetah-v5, {args.num_envs} env copies), "
          f"{result['wall_s']:.0f} s")
    print(f"{'mode':<15}{'updates/s':>11}{'env steps/s':>13}")
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:<15}{'failed: ' + r['error'][:60]}")
        else:
            print(f"{r['mode']:<15}{r['updates_per_s']:>11.1f}{r['env_steps_per_s']:>13.1f}")


if __name__ == "__main__":
    main()
