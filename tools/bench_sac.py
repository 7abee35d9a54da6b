"""Benchmark of online SAC (gta_rl.behaviour, the behaviour policies of the locomotion datasets; issues 8, 27).

Two measurements:

- ``updates/s``: the SAC update alone (batch sampling, critic, actor and temperature steps, Polyak) at
  batch 256, 256-256 networks, on a buffer of 100k HalfCheetah-shaped rows, for the eager update, the update
  replayed as a CUDA graph, and the update compiled by torch.compile and replayed as a CUDA graph;
- ``env steps/s``: the whole training loop (HalfCheetah-v5, one update per environment step, vector env of
  ``--num-envs`` copies in worker processes), timed after the random warm-up steps, for each data path of the
  loop (``--loops``), all in this one process and with the same update engine (``--engine``; default the
  fastest the machine has):

  - ``readable``: every transition written to the device as it comes, every action read back synchronously
    (the loop before the staged one; the reference it is tested against);
  - ``staged``: the default: transitions staged in pinned host memory, one copy per env step, actions read
    back through pinned memory (the same numbers as ``readable``);
  - ``staged+tK``: transitions copied every K (``--transfer-every``) transitions (updates see them later);
  - ``overlap``, ``overlap+tK``: the envs step while the GPU runs the previous env step's updates (acting
    one env step stale).

Prints a table last and writes every number to ``--out`` (JSON).

    python tools/bench_sac.py --out sac.json            # CUDA (about 4 min on an H100)
    python tools/bench_sac.py --quick --out /tmp/q.json  # CPU smoke run (eager, one thread, a minute or two)
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gta_rl.behaviour import ReplayBuffer, SACAgent, SACConfig, train_sac, update_runner
from gta_rl.checkpoint import write_json

OBS, ACT = 17, 6
ENGINES = {"eager": {}, "graph": {"cuda_graph": True}, "compile+graph": {"cuda_graph": True, "compile": True}}


def agent_and_buffer(device: torch.device, batch: int, hidden: tuple[int, ...] = (256, 256),
                     rows: int = 100_000) -> tuple[SACAgent, ReplayBuffer]:
    """A fresh SAC agent of HalfCheetah's shapes and a buffer of ``rows`` random transitions (seeded)."""
    cfg = SACConfig(env_id="HalfCheetah-v5", batch_size=batch, hidden=hidden, device=device.type)
    agent = SACAgent(cfg, OBS, ACT, -np.ones(ACT, np.float32), np.ones(ACT, np.float32), device)
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(rows, OBS, ACT, device)
    buffer.add({"obs": rng.normal(size=(rows, OBS)), "act": rng.uniform(-1, 1, (rows, ACT)),
                "rew": rng.normal(size=rows), "next_obs": rng.normal(size=(rows, OBS)), "term": np.zeros(rows),
                "trunc": np.zeros(rows, bool), "env": np.zeros(rows, np.int32)})
    return agent, buffer


def update_rate(mode: str, device: torch.device, seconds: float, batch: int) -> float:
    agent, buffer = agent_and_buffer(device, batch)
    runner = update_runner(agent, buffer, batch, **ENGINES[mode])
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(10):
        runner()
    return timed_rate(runner, sync, seconds, "SAC")


def timed_rate(runner, sync, seconds: float, name: str) -> float:
    """Updates/s of ``runner`` over about ``seconds`` (50 updates between synchronisations), its metrics checked."""
    sync()
    t0, count = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(50):
            out = runner()
        count += 50
        sync()
    rate = count / (time.perf_counter() - t0)
    if not torch.isfinite(out).all():
        raise FloatingPointError(f"{name}: non-finite metrics")
    return rate


def loop_options(loop: str, transfer_every: int) -> dict:
    if loop == "readable":
        return {"readable_loop": True}
    options = {"overlap": loop.startswith("overlap")}
    if loop.endswith("+t"):
        options["transfer_every"] = transfer_every
    return options


def loop_rate(engine: str, loop: str, device: torch.device, steps: int, num_envs: int, warm: int,
              transfer_every: int) -> dict[str, float]:
    total = warm + steps
    cfg = SACConfig(env_id="HalfCheetah-v5", total_steps=total, num_envs=num_envs, learning_starts=warm,
                    checkpoint_every=10 * total, log_every=warm, eval_episodes=1, device=device.type,
                    env_async=num_envs > 1, state_every=10 * total, **ENGINES[engine],
                    **loop_options(loop, transfer_every))
    marks: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        train_sac(cfg, Path(tmp) / "run", progress=lambda step, _: marks.append((step, time.perf_counter())))
    # From the first step well after the warm-up (and the graph capture / compile of the first updates) to
    # the mark before the last one (the last step is followed by the final evaluation and state save).
    first = next(i for i, (s, _) in enumerate(marks) if s >= warm + min(2000, steps // 2))
    (s0, t0), (s1, t1) = marks[first], marks[-2]
    return {"env_steps_per_s": (s1 - s0) / (t1 - t0), "timed_steps": s1 - s0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: eager, small")
    ap.add_argument("--num-envs", type=int, default=4)
    ap.add_argument("--loop-steps", type=int, default=None,
                    help="timed environment steps after the warm-up (default 20000; --quick: 600)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="random warm-up steps before updates start (default 5000; --quick: 500)")
    ap.add_argument("--engine", choices=sorted(ENGINES), default=None,
                    help="update engine of the loop runs (default: compile+graph on CUDA, eager on CPU)")
    ap.add_argument("--loops", default="readable,staged,staged+t,overlap,overlap+t",
                    help="loop data paths to time (staged+t / overlap+t: with --transfer-every)")
    ap.add_argument("--transfer-every", type=int, default=16, help="transitions per device copy of the +t paths")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if args.quick:
        torch.set_num_threads(1)  # a small update on a shared CPU: more threads only contend
    engines = ["eager"] if device.type == "cpu" else list(ENGINES)
    engine = args.engine or ("compile+graph" if device.type == "cuda" else "eager")
    seconds = 0.5 if device.type == "cpu" else 3.0
    steps, warm = (600, 500) if args.quick else (20_000, 5000)
    steps = steps if args.loop_steps is None else args.loop_steps
    warm = warm if args.warmup is None else args.warmup
    if args.num_envs < 1 or warm < 1 or steps < 4 * args.num_envs:
        ap.error(f"--warmup must be positive and --loop-steps at least 4 x --num-envs (a timed span between "
                 f"progress marks), got {warm} and {steps} with {args.num_envs} env copies")
    loops = [name for name in args.loops.split(",") if name]
    t_start = time.perf_counter()
    updates = []
    for mode in engines:
        row = {"engine": mode}
        try:
            row["updates_per_s"] = update_rate(mode, device, seconds, 256)
        except Exception as exc:  # report and go on
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        updates.append(row)
        print(row, flush=True)
    rows = []
    for loop in loops:
        row = {"loop": loop.replace("+t", f"+t{args.transfer_every}"), "engine": engine}
        try:
            row.update(loop_rate(engine, loop, device, steps, args.num_envs, warm, args.transfer_every))
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        rows.append(row)
        print(row, flush=True)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "batch_size": 256, "num_envs": args.num_envs, "warmup": warm,
              "loop_steps": steps, "updates": updates, "loops": rows, "wall_s": time.perf_counter() - t_start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"\nSAC on {result['device']} (batch 256, HalfCheetah-v5, {args.num_envs} env copies), "
          f"{result['wall_s']:.0f} s")
    print(f"{'engine':<15}{'updates/s':>11}")
    for r in updates:
        print(f"{r['engine']:<15}" + (f"{'failed: ' + r['error'][:60]}" if "error" in r else f"{r['updates_per_s']:>11.1f}"))
    base = next((r["env_steps_per_s"] for r in rows if r["loop"] == "readable" and "error" not in r), None)
    print(f"\n{'loop (' + engine + ')':<28}{'env steps/s':>13}{'vs readable':>13}")
    for r in rows:
        if "error" in r:
            print(f"{r['loop']:<28}{'failed: ' + r['error'][:60]}")
        else:
            speed = f"{r['env_steps_per_s'] / base:>12.2f}x" if base else f"{'':>13}"
            print(f"{r['loop']:<28}{r['env_steps_per_s']:>13.1f}{speed}")


if __name__ == "__main__":
    main()
