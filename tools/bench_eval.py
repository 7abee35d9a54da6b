"""Benchmark of gta-eval's data-quality metrics (GTA section 5.4, appendix D).

Measures
  * oracle throughput (transitions/s) of ``gta_eval.oracle.run_oracle`` on HalfCheetah-v5 and Hopper-v5
    with 1 worker and with all CPU cores;
  * exact nearest-neighbour throughput (queries/s) of ``gta_eval.metrics.nearest_neighbor`` on the GPU
    (when present) and the CPU, against a reference set of 1M rows (GPU) / 100k rows (CPU), D=23
    (HalfCheetah state-action), float32 candidates + float64 re-scoring as in the novelty metric.

    python tools/bench_eval.py --quick --out /tmp/bench_eval.json     # seconds, CPU
    python tools/bench_eval.py --out results.json                     # full size, < 3 min on 16 cores + GPU

Prints a table last and writes the results as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np


def _states(env_id: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Realistic (s, a) rows: a random-action rollout tiled to n rows."""
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows, acts = [], []
    for _ in range(min(n, 5000)):
        a = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
        rows.append(obs)
        acts.append(a)
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            obs, _ = env.reset()
    reps = -(-n // len(rows))
    return np.tile(np.asarray(rows, np.float32), (reps, 1))[:n], np.tile(np.asarray(acts), (reps, 1))[:n]


def bench_oracle(env_id: str, n: int, workers: int) -> dict:
    from gta_eval.oracle import OracleSpec, run_oracle

    obs, act = _states(env_id, n)
    spec = OracleSpec.create(env_id, obs.shape[1], act.shape[1])
    t0 = time.perf_counter()
    out = run_oracle(spec, obs, act, workers=workers, chunk_size=2048)
    dt = time.perf_counter() - t0  # includes pool start-up (spawn + env creation), as a user sees it
    return {"what": f"oracle {env_id}", "workers": workers, "rows": n, "seconds": dt,
            "rate": n / dt, "unit": "transitions/s", "valid": int(out.valid.sum())}


def bench_nn(device: str, n_ref: int, n_query: int, dim: int = 23) -> dict:
    import torch

    from gta_eval.metrics import nearest_neighbor

    rng = np.random.default_rng(0)
    ref = rng.normal(size=(n_ref, dim)).astype(np.float32)
    query = (ref[rng.choice(n_ref, n_query)] + 0.3 * rng.normal(size=(n_query, dim))).astype(np.float32)
    nearest_neighbor(query[:256], ref[:4096], device=device)  # warm-up (CUDA context, kernels)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    d, _ = nearest_neighbor(query, ref, device=device)
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"what": f"exact NN {device}", "workers": 1, "rows": n_query, "reference_rows": n_ref, "dim": dim,
            "seconds": dt, "rate": n_query / dt, "unit": "queries/s", "mean_l2": float(np.sqrt(d).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="Small sizes (seconds, CPU).")
    p.add_argument("--out", required=True, help="JSON file for the results.")
    p.add_argument("--workers", type=int, default=0, help="Oracle processes for the parallel run (0: all cores).")
    args = p.parse_args()
    import torch

    cores = os.cpu_count() or 1
    workers = args.workers or cores
    has_cuda = torch.cuda.is_available()
    rows = []
    for env_id in ("HalfCheetah-v5", "Hopper-v5"):
        n1 = 2_000 if args.quick else 50_000
        rows.append(bench_oracle(env_id, n1, 1))
        if workers > 1:
            rows.append(bench_oracle(env_id, n1 * (2 if args.quick else min(workers, 16)), workers))
    if has_cuda:
        rows.append(bench_nn("cuda", 100_000 if args.quick else 1_000_000, 2_000 if args.quick else 100_000))
    rows.append(bench_nn("cpu", 20_000 if args.quick else 100_000, 500 if args.quick else 2_000))

    result = {
        "benchmark": "gta-eval data-quality metrics",
        "quick": args.quick,
        "cpu_cores": cores,
        "gpu": torch.cuda.get_device_name(0) if has_cuda else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "results": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\ngta-eval benchmark ({'quick' if args.quick else 'full'}; {cores} cores; GPU {result['gpu']})")
    print(f"{'what':28s} {'workers':>7s} {'rows':>9s} {'ref rows':>9s} {'seconds':>8s} {'rate':>12s}  unit")
    for r in rows:
        print(f"{r['what']:28s} {r['workers']:7d} {r['rows']:9d} {r.get('reference_rows', 0):9d} "
              f"{r['seconds']:8.2f} {r['rate']:12,.0f}  {r['unit']}")


if __name__ == "__main__":
    main()
