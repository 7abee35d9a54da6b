"""Time to load a 1M-transition store of HalfCheetah shape (obs 17, act 6) into numpy and torch.

    .venv/bin/python tools/bench_store.py [--transitions 1000000] [--repeats 3] [--out results.json]

Writes a synthetic store to a temporary directory, then times TrajectoryStore.open(...).load() (one read
of every array, with the NaN/terminal checks) and the conversion to torch tensors (CPU, and the GPU when
present). Target (issue 2): under 2 s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from gta_data import TrajectoryStore, Transitions, write_store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    n = args.transitions
    rng = np.random.default_rng(0)
    data = Transitions(
        observations=rng.standard_normal((n, 17), dtype=np.float32),
        actions=rng.uniform(-1, 1, (n, 6)).astype(np.float32),
        rewards=rng.standard_normal(n, dtype=np.float32),
        next_observations=rng.standard_normal((n, 17), dtype=np.float32),
        terminals=np.zeros(n, bool),
        timeouts=np.zeros(n, bool),
    )
    ends = np.arange(1000, n + 1, 1000)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.zarr"
        t0 = time.perf_counter()
        write_store(path, data, ends, env_id="HalfCheetah-v5")
        results["write_s"] = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        results["store_mb"] = size / 2**20
        best_np, best_torch, best_gpu = [], [], []
        import torch

        for _ in range(args.repeats):
            t0 = time.perf_counter()
            loaded = TrajectoryStore.open(path).load()
            best_np.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            loaded = TrajectoryStore.open(path).load()
            tensors = {k: torch.from_numpy(v) for k, v in loaded.arrays().items()}
            best_torch.append(time.perf_counter() - t0)
            if torch.cuda.is_available():
                t0 = time.perf_counter()
                loaded = TrajectoryStore.open(path).load()
                tensors = {k: torch.from_numpy(v).cuda(non_blocking=False) for k, v in loaded.arrays().items()}
                torch.cuda.synchronize()
                best_gpu.append(time.perf_counter() - t0)
        assert np.array_equal(tensors["observations"].cpu().numpy(), data.observations)
        results["load_numpy_s"] = min(best_np)
        results["load_torch_cpu_s"] = min(best_torch)
        if best_gpu:
            results["load_torch_cuda_s"] = min(best_gpu)
    results["transitions"] = n
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(f"{'measure':<22}{'value':>10}")
    for key, value in results.items():
        print(f"{key:<22}{value:>10.3f}" if isinstance(value, float) else f"{key:<22}{value:>10}")


if __name__ == "__main__":
    main()
