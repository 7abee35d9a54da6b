"""Throughput benchmark of a GTA denoiser: training steps/s and augmentation transitions/s.

Measures the product code paths (``gta_diffusion.training.Trainer.step`` and
``gta_diffusion.augmentation.Augmenter.generate``) on a synthetic halfcheetah-sized store (obs 17, act 6:
D = 24, H = 31 -> 32 rows) for the network given by ``--network`` (fast-mixer, the default, or mixer-unet,
GTA's A.2 network), training batch 256, augmentation at mu = 0.5 with classifier-free guidance (w = 2, s = 3),
for two paths in the same run:

    eager-fp32   plain eager float32 (TF32 off), sampling batch 2048
    fast         bf16 autocast + torch.compile; training captures the whole step (batch drawing, loss,
                 backward, clipping, AdamW, EMA) in one CUDA graph (TrainConfig.cuda_graph), sampling uses
                 compile's reduce-overhead mode (CUDA graphs); each falls back to compile's other modes if
                 graphs fail (the JSON records the mode used and the error), sampling batch 16384
                 (mixer-unet: 8192)

The table gives each path's speed-up over eager-fp32 of the same network in the same run. Targets on one
H100 (fast path): fast-mixer >= 200 training steps/s and >= 40,000 transitions/s; mixer-unet >= 10x its eager
fp32 path (the authors' code: 13.4-15.6 training steps/s, ~2,200 transitions/s).

    python tools/bench_diffusion.py --out results.json                          # CUDA, fast-mixer
    python tools/bench_diffusion.py --network mixer-unet --out mixer-unet.json  # CUDA, GTA's network
    python tools/bench_diffusion.py --quick --out quick.json    # CPU smoke test: tiny network, seconds

Prints a short table last and writes all numbers (plus errors of any path that failed) as JSON to --out.
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

TARGETS = {"fast-mixer": {"train_steps_per_s": 200.0, "augment_transitions_per_s": 40_000.0},
           "mixer-unet": {"speedup_over_eager_fp32": 10.0}}
AUTHORS = {"train_steps_per_s": 13.4, "augment_transitions_per_s": 2_200.0}
QUICK = {"fast-mixer": ("fast-mixer-small", {"dim": 16, "dim_mults": (1, 2), "emb_dim": 32}),
         "mixer-unet": ("mixer-unet", {"dim": 8, "dim_mults": (1, 2), "head_dim": 8})}
"""The tiny network of --quick for each --network."""


def make_store(path: Path, episodes: int, length: int, obs_dim: int = 17, act_dim: int = 6, seed: int = 0):
    """Synthetic smooth trajectories (random-walk states, tanh actions, reward from the action)."""
    from gta_data import Transitions, write_store

    rng = np.random.default_rng(seed)
    n = episodes * length
    actions = np.tanh(rng.standard_normal((n, act_dim))).astype(np.float32)
    steps = 0.05 * rng.standard_normal((n, obs_dim)).astype(np.float32)
    states = np.cumsum(steps, axis=0)
    ends = np.arange(1, episodes + 1) * length
    obs = states.copy()
    nxt = states + steps
    rewards = actions.mean(axis=1) + 0.1 * rng.standard_normal(n).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[ends - 1] = True
    tr = Transitions(obs, actions, rewards, nxt, np.zeros(n, bool), timeouts)
    return write_store(path, tr, ends, env_id="BenchCheetah-v0")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_train(store, root: Path, name: str, *, preset: str, overrides: dict, batch: int, bf16: bool,
                compile: bool, compile_mode: str | None, device: torch.device, warmup: int, budget_s: float,
                cuda_graph: bool = False) -> dict:
    from gta_diffusion.data import WindowConfig
    from gta_diffusion.training import TrainConfig, Trainer

    cfg = TrainConfig(preset=preset, network_overrides=overrides, steps=10**9, batch_size=batch, bf16=bf16,
                      compile=compile, compile_mode=compile_mode, cuda_graph=cuda_graph, warmup_steps=100,
                      log_every=10**9, checkpoint_every=10**9)
    trainer = Trainer.create(root / f"run-{name}-{compile_mode}-{cuda_graph}", store.path, cfg, WindowConfig(horizon=31), device=device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.step()
    _sync(device)
    warm_s = time.perf_counter() - t0
    # Calibrate on a short burst, then run for about budget_s.
    t0 = time.perf_counter()
    for _ in range(5):
        trainer.step()
    _sync(device)
    per_step = (time.perf_counter() - t0) / 5
    steps = max(5, min(5000, int(budget_s / max(per_step, 1e-6))))
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = trainer.step()
    _sync(device)
    dt = time.perf_counter() - t0
    return {"train_steps_per_s": steps / dt, "train_steps_timed": steps, "train_warmup_s": warm_s,
            "train_final_loss": float(loss), "parameters": trainer.config["network"]["parameters"]}


def bench_augment(store, *, preset: str, overrides: dict, batch: int, bf16: bool, compile: bool,
                  compile_mode: str | None, device: torch.device, budget_s: float, num_steps: int) -> dict:
    from gta_diffusion.augmentation import AugmentConfig, Augmenter, window_seeds
    from gta_diffusion.data import WindowConfig, WindowSet, fit_normalizer
    from gta_diffusion.edm import EDMConfig
    from gta_diffusion.training import build_denoiser

    data = store.load()
    wcfg = WindowConfig(horizon=31)
    norm = fit_normalizer(data, store.episode_ends, wcfg, store.env_id)
    ws = WindowSet(data, store.episode_ends, norm, wcfg, device)
    network = {"preset": preset, "overrides": overrides, "transition_dim": norm.transition_dim, "horizon_rows": 32}
    torch.manual_seed(0)
    denoiser = build_denoiser(network, 1.0)
    cfg = AugmentConfig(mu=0.5, alpha=1.3, guidance_weight=2.0, batch_size=batch, bf16=bf16, compile=compile,
                        compile_mode=compile_mode, num_steps=num_steps)
    aug = Augmenter(denoiser, norm, wcfg, EDMConfig(num_steps=num_steps), cfg, device)
    rng = np.random.default_rng(0)

    def run(n_windows: int, first: int) -> float:
        starts = ws.starts_np[rng.integers(0, len(ws), n_windows)]
        _sync(device)
        t0 = time.perf_counter()
        aug.generate(ws, starts, window_seeds(0, n_windows, first))  # includes the copy to the host
        _sync(device)
        return time.perf_counter() - t0

    warm_s = run(batch, 0) + run(batch, batch)  # compile / graph capture, then one clean batch
    per_batch = run(batch, 2 * batch)
    batches = max(1, min(64, int(budget_s / max(per_batch, 1e-6))))
    dt = run(batches * batch, 3 * batch)
    return {"augment_transitions_per_s": batches * batch * 31 / dt, "augment_windows_timed": batches * batch,
            "augment_warmup_s": warm_s, "sample_batch": batch, "start_index": aug.start_index,
            "sampler_steps_run": num_steps - aug.start_index}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: tiny network, few steps")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed work per measurement")
    ap.add_argument("--paths", default="eager-fp32,fast", help="comma-separated subset of eager-fp32,fast")
    ap.add_argument("--network", default="fast-mixer", choices=sorted(QUICK), help="the denoiser to time")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # the eager path is genuinely fp32
        torch.backends.cudnn.allow_tf32 = False
    if args.quick:
        preset, overrides = QUICK[args.network]
        episodes, length, train_batch, sample_batches = 8, 64, 32, {"eager-fp32": 64, "fast": 128}
        warmup, budget, num_steps = 2, args.budget or 1.0, 16
    else:
        preset, overrides = args.network, {}
        # mixer-unet keeps [B, C, T, D] activations (D times more than fast-mixer's [B, T, C]): half the batch.
        fast_batch = 16384 if args.network == "fast-mixer" else 8192
        episodes, length, train_batch, sample_batches = 200, 1000, 256, {"eager-fp32": 2048, "fast": fast_batch}
        warmup, budget, num_steps = 30, args.budget or 10.0, 128
    use_compile = device.type == "cuda"  # CPU compile takes minutes: the quick smoke test runs bf16 only
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
               "torch": torch.__version__, "network": preset, "overrides": overrides, "train_batch": train_batch,
               "horizon_rows": 32, "transition_dim": 24, "mu": 0.5, "guidance_weight": 2.0, "quick": args.quick,
               "targets": TARGETS[args.network], "authors": AUTHORS, "paths": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        store = make_store(root / "bench.zarr", episodes, length)
        results["store_seconds"] = time.perf_counter() - t0
        for name in args.paths.split(","):
            fast = name == "fast"
            row: dict = {"bf16": fast, "compile": fast and use_compile}
            modes = ["reduce-overhead", None] if fast and use_compile else [None]
            # Training: the whole step in one CUDA graph first, then compile's own graphs, then plain compile.
            train_modes = [(None, True), ("reduce-overhead", False), (None, False)] if fast and use_compile \
                else [(None, False)]
            for mode, graph in train_modes:
                try:
                    if fast and use_compile:
                        torch._dynamo.reset()
                    row.update(bench_train(store, root, name, preset=preset, overrides=overrides, batch=train_batch,
                                           bf16=fast, compile=fast and use_compile, compile_mode=mode,
                                           device=device, warmup=warmup if not fast else 3 * warmup,
                                           budget_s=budget, cuda_graph=graph))
                    row["train_compile_mode"] = "whole-step CUDA graph" if graph else (
                        mode or ("default" if fast and use_compile else "eager"))
                    row.pop("train_error", None)
                    break
                except Exception as exc:  # a failing path is reported, the others still run
                    row["train_error"] = f"[{mode}, graph={graph}] {type(exc).__name__}: {exc}".splitlines()[0]
                    row["train_traceback"] = traceback.format_exc()[-4000:]
            for mode in modes:
                try:
                    if mode is None and fast and use_compile:
                        torch._dynamo.reset()
                    row.update(bench_augment(store, preset=preset, overrides=overrides, batch=sample_batches[name],
                                             bf16=fast, compile=fast and use_compile, compile_mode=mode,
                                             device=device, budget_s=budget, num_steps=num_steps))
                    row["augment_compile_mode"] = mode or ("default" if fast and use_compile else "eager")
                    row.pop("augment_error", None)
                    break
                except Exception as exc:
                    row["augment_error"] = f"[{mode}] {type(exc).__name__}: {exc}".splitlines()[0]
                    row["augment_traceback"] = traceback.format_exc()[-4000:]
            results["paths"][name] = row
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if device.type == "cuda":
        results["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def fmt(v, digits=1):
        return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:,.{digits}f}"

    base = results["paths"].get("eager-fp32", {})

    def speedup(row: dict, key: str) -> str:
        return f"{row[key] / base[key]:.1f}x" if row.get(key) and base.get(key) else "-"

    print(f"\ndevice {results['device']}, torch {results['torch']}, network {preset} "
          f"({next((r.get('parameters') for r in results['paths'].values() if r.get('parameters')), '?'):,} params), "
          f"train batch {train_batch}, augment mu=0.5 s=3 H=31")
    print(f"{'path':12s} {'train steps/s':>14s} {'(vs eager)':>10s} {'augment trans/s':>16s} {'(vs eager)':>10s} "
          f"{'sample batch':>13s}  notes")
    for name, row in results["paths"].items():
        notes = "; ".join(x for x in (row.get("train_error"), row.get("augment_error"),
                                      f"train {row.get('train_compile_mode')}, augment {row.get('augment_compile_mode')}")
                         if x)
        print(f"{name:12s} {fmt(row.get('train_steps_per_s')):>14s} {speedup(row, 'train_steps_per_s'):>10s} "
              f"{fmt(row.get('augment_transitions_per_s'), 0):>16s} {speedup(row, 'augment_transitions_per_s'):>10s} "
              f"{row.get('sample_batch', '-'):>13}  {notes}")
    print(f"targets: {results['targets']}")
    print(f"{'authors':12s} {fmt(AUTHORS['train_steps_per_s']):>14s} {'':>10s} "
          f"{fmt(AUTHORS['augment_transitions_per_s'], 0):>16s}")
    print(f"results written to {args.out}")


if __name__ == "__main__":
    main()
