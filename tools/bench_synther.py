"""Throughput benchmark of the SynthER baseline: training steps/s and sampling transitions/s.

Measures the product code paths (``gta_diffusion.baselines.synther``: ``SynthERTrainer.step`` on the shared
Trainer, and ``sample_transitions`` = the shared EDM sampler from pure noise, plus the copy to the host) on a
synthetic halfcheetah-shaped store (obs 17, act 6: [s, a, r, s', terminal] has D = 42), SynthER paper preset
(residual MLP 6 x 2048, 25,566,890 parameters), training batch 1024, sampling batch 100,000 (SynthER's) with
128 stochastic Heun steps (255 network evaluations), for two paths in the same run:

    eager-fp32   plain eager float32 (TF32 off)
    fast         bf16 autocast + torch.compile (default mode; CUDA only)
    fast-graph   training only: bf16 + compile + the whole step in one CUDA graph (``--cuda-graph``: batch
                 draw, loss, backward, clipping, AdamW and EMA replayed as one graph; CUDA only, so the CPU
                 smoke test reports it as skipped); its sampler is the fast path's

    python tools/bench_synther.py --out results.json          # CUDA, full size (~2-3 min with compiles)
    python tools/bench_synther.py --quick --out quick.json    # CPU smoke test: tiny network, seconds

Prints a short table last and writes all numbers (plus errors of any path that failed) as JSON to --out.
TFLOP/s columns count 2 FLOPs per parameter per sample per network evaluation (x3 for training).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch


def make_store(path: Path, n: int, obs_dim: int = 17, act_dim: int = 6, episode_length: int = 1000, seed: int = 0):
    """Synthetic transitions (random-walk states, tanh actions); every 10th episode ends in a terminal."""
    from gta_data import Transitions, write_store

    rng = np.random.default_rng(seed)
    actions = np.tanh(rng.standard_normal((n, act_dim))).astype(np.float32)
    steps = 0.05 * rng.standard_normal((n, obs_dim)).astype(np.float32)
    states = np.cumsum(steps, axis=0)
    ends = np.arange(episode_length, n + 1, episode_length)
    terminals = np.zeros(n, bool)
    timeouts = np.zeros(n, bool)
    terminals[ends[::10] - 1] = True
    timeouts[ends - 1] = ~terminals[ends - 1]
    rewards = actions.mean(axis=1) + 0.1 * rng.standard_normal(n).astype(np.float32)
    tr = Transitions(states, actions, rewards, states + steps, terminals, timeouts)
    return write_store(path, tr, ends, env_id="BenchCheetah-v0")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(store, run_dir: Path, *, preset: str, overrides: dict, batch: int, bf16: bool, compile: bool,
                device: torch.device, warmup: int, budget_s: float, cuda_graph: bool = False) -> dict:
    from gta_diffusion.baselines.synther import create_synther_trainer, synther_train_config

    cfg = synther_train_config(store.num_transitions, batch_size=batch, preset=preset, network_overrides=overrides,
                               steps=10**9, bf16=bf16, compile=compile, cuda_graph=cuda_graph, log_every=10**9,
                               checkpoint_every=10**9)
    trainer = create_synther_trainer(run_dir, store.path, cfg, device=device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(5):
        trainer.step()
    _sync(device)
    per_step = (time.perf_counter() - t0) / 5
    steps = max(5, min(20_000, int(budget_s / max(per_step, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = trainer.step()
    _sync(device)
    dt = time.perf_counter() - t0
    params = trainer.config["network"]["parameters"]
    trainer.save()  # the sampling benchmark loads this checkpoint (weights barely trained: speed only)
    return {"train_steps_per_s": steps / dt, "train_steps_timed": steps, "train_warmup_s": warm_s,
            "train_final_loss": float(loss), "parameters": params,
            "train_tflops": 6 * params * batch * steps / dt / 1e12}


def bench_sample(trainer_run: Path, *, batch: int, bf16: bool, compile: bool, device: torch.device,
                 num_steps: int, budget_s: float) -> dict:
    from dataclasses import replace

    from gta_diffusion.baselines.synther import load_synther, sample_transitions

    denoiser, norm, edm, config = load_synther(trainer_run, device)
    net = torch.compile(denoiser) if compile else denoiser

    def run(steps: int, first: int) -> float:
        seeds = torch.arange(first, first + batch, dtype=torch.int64, device=device)
        _sync(device)
        t0 = time.perf_counter()
        x = sample_transitions(net, norm, replace(edm, num_steps=steps), seeds, bf16=bf16).cpu()
        _sync(device)
        assert torch.isfinite(x).all()
        return time.perf_counter() - t0

    warm_s = run(2, 0)  # compile at the timed shape (the step count does not change shapes)
    dt = run(num_steps, batch)
    reps = max(1, min(8, int(budget_s / max(dt, 1e-6))))
    if reps > 1:
        dt = sum(run(num_steps, (2 + r) * batch) for r in range(reps)) / reps
    params = config["network"]["parameters"]
    nfe = 2 * num_steps - 1
    return {"sample_transitions_per_s": batch / dt, "sample_batch": batch, "sample_batches_timed": reps,
            "sample_seconds_per_batch": dt, "sample_warmup_s": warm_s, "sampler_steps": num_steps,
            "network_evaluations": nfe, "sample_tflops": 2 * params * batch * nfe / dt / 1e12,
            "seconds_for_5M": 5_000_000 / (batch / dt)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: tiny network, few steps")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed work per measurement")
    ap.add_argument("--paths", default="eager-fp32,fast,fast-graph",
                    help="comma-separated subset of eager-fp32,fast,fast-graph")
    ap.add_argument("--sample-batch", type=int, default=None, help="sampling batch (default 100000; quick 256)")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the eager path is genuinely fp32
        torch.backends.cudnn.allow_tf32 = False
    if args.quick:
        preset, overrides = "synther-small", {"width": 64, "num_blocks": 2, "input_dim": 32, "emb_dim": 32}
        n_store, train_batch, sample_batch, num_steps = 4000, 64, args.sample_batch or 256, 8
        warmup, budget = 2, args.budget or 1.0
    else:
        preset, overrides = "synther", {}
        n_store, train_batch, sample_batch, num_steps = 200_000, 1024, args.sample_batch or 100_000, 128
        warmup, budget = 20, args.budget or 8.0
    if device.type == "cpu":
        torch.set_num_threads(1)  # tiny ops on a shared CPU: one thread beats spinning OpenMP workers
    use_compile = device.type == "cuda"  # CPU compile takes minutes: the quick smoke test runs bf16 only
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "preset": preset, "overrides": overrides, "transition_dim": 42,
               "train_batch": train_batch, "sample_batch": sample_batch, "sampler_steps": num_steps,
               "quick": args.quick, "paths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        store = make_store(root / "bench.zarr", n_store)
        results["store_seconds"] = time.perf_counter() - t0
        for name in args.paths.split(","):
            fast, graph = name in ("fast", "fast-graph"), name == "fast-graph"
            row: dict = {"bf16": fast, "compile": fast and use_compile, "cuda_graph": graph}
            if graph and device.type != "cuda":
                row["skipped"] = "the whole-step CUDA graph needs a CUDA device"
                results["paths"][name] = row
                continue
            run_dir = root / f"run-{name}"
            try:
                row.update(bench_train(store, run_dir, preset=preset, overrides=overrides, batch=train_batch,
                                       bf16=fast, compile=fast and use_compile, device=device,
                                       warmup=3 * warmup if fast else warmup, budget_s=budget, cuda_graph=graph))
            except Exception as exc:  # a failing path is reported, the others still run
                row["train_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                row["train_traceback"] = traceback.format_exc()[-4000:]
            try:
                if "train_error" in row:
                    raise RuntimeError("no trained run to sample from (training failed)")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                if not graph:  # the graph path's sampler is the fast path's: not measured twice
                    row.update(bench_sample(run_dir, batch=sample_batch, bf16=fast, compile=fast and use_compile,
                                            device=device, num_steps=num_steps, budget_s=budget))
            except Exception as exc:
                row["sample_error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                row["sample_traceback"] = traceback.format_exc()[-4000:]
            results["paths"][name] = row
            if device.type == "cuda":
                torch._dynamo.reset()
                torch.cuda.empty_cache()
    if device.type == "cuda":
        results["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def fmt(v, digits=1):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:,.{digits}f}"

    params = next((r.get("parameters") for r in results["paths"].values() if r.get("parameters")), None)
    print(f"\nresults written to {args.out}")
    print(f"device {results['device']}, torch {results['torch']}, preset {preset} ({fmt(params, 0)} params, D = 42), "
          f"train batch {train_batch}, sample batch {sample_batch}, {num_steps} sampler steps")
    print(f"{'path':<12} {'train steps/s':>14} {'train TFLOP/s':>14} {'sample trans/s':>15} {'sample TFLOP/s':>15} "
          f"{'5M samples (s)':>15}")
    for name, row in results["paths"].items():
        print(f"{name:<12} {fmt(row.get('train_steps_per_s')):>14} {fmt(row.get('train_tflops')):>14} "
              f"{fmt(row.get('sample_transitions_per_s'), 0):>15} {fmt(row.get('sample_tflops')):>15} "
              f"{fmt(row.get('seconds_for_5M')):>15}")
        for key in ("train_error", "sample_error", "skipped"):
            if key in row:
                print(f"  {key}: {row[key]}")


if __name__ == "__main__":
    main()
