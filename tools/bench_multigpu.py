"""Multi-GPU scaling of gta-diffusion: data-parallel training and sharded augmentation through torchrun.

For each GPU count (default 1 and every count up to the GPUs present) this runs the real CLI,
``torchrun --nproc-per-node N -m gta_diffusion.cli train|augment ...``, on a synthetic halfcheetah-shaped
store (obs 17, act 6, fast-mixer network, H = 31) and reports:

* training steps/s at a fixed GLOBAL batch (256 = Table 6, and 1024), read from the run's metrics.jsonl
  (intervals after the first, so start-up and warm-up are excluded), samples/s and scaling efficiency;
* the loss curve of the N-GPU run against the 1-GPU run at equal samples seen (same global batch, same
  steps): the per-interval mean losses and their largest relative difference;
* augmentation transitions/s with the windows sharded over N ranks and merged into one store by rank 0,
  as the marginal rate between two sizes (so process start and model loading cancel out).

    python tools/bench_multigpu.py --out results.json                    # GPUs: bf16, eager
    python tools/bench_multigpu.py --quick --device cpu --out q.json     # CPU/gloo smoke test, seconds

Prints a table last; writes every number to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_diffusion import make_store  # noqa: E402  (the same synthetic store as the 1-GPU benchmark)


def torchrun(nproc: int, args: list[str], env: dict[str, str], timeout: float) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "gta_diffusion.cli", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} on {nproc} rank(s) failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="tiny network and sizes (CPU smoke test)")
    ap.add_argument("--device", default=None, help="cuda (default when present) or cpu (gloo)")
    ap.add_argument("--gpus", default=None, help="comma-separated rank counts (default: 1 and all GPUs)")
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    n_gpu = torch.cuda.device_count() if device == "cuda" else 2
    counts = [int(c) for c in args.gpus.split(",")] if args.gpus else sorted({1, n_gpu})
    env = dict(os.environ)
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off, as in the figures of BENCHMARKS.md
    env.setdefault("OMP_NUM_THREADS", "1")
    if args.quick:
        net = ["--network", "fast-mixer-small", "--horizon", "7"]
        batches, steps, log_every, aug_sizes = [32], 40, 10, (2_000, 6_000)
        episodes, length = 8, 64
    else:
        net = ["--network", "fast-mixer", "--horizon", "31", "--bf16"]
        batches, steps, log_every, aug_sizes = [256, 1024], args.steps, 100, (100_000, 1_000_000)
        episodes, length = 200, 1000
    results: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "torch": torch.__version__,
                     "rank_counts": counts, "train": [], "augment": [], "loss_curves": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = make_store(root / "data.zarr", episodes, length)
        model_run = None
        for batch in batches:
            curves = {}
            for n in counts:
                run = root / f"train-b{batch}-n{n}"
                wall = torchrun(n, ["train", "--data", str(store.path), "--out", str(run), *net,
                                    "--batch-size", str(batch), "--steps", str(steps), "--log-every", str(log_every),
                                    "--checkpoint-every", str(10 * steps), "--device", device], env, 900)
                recs = metrics(run)
                rates = [r["steps_per_s"] for r in recs[1:] if r.get("steps_per_s")]
                sps = float(np.median(rates)) if rates else float("nan")
                curves[n] = [r["loss"] for r in recs]
                results["train"].append({"ranks": n, "global_batch": batch, "steps_per_s": sps,
                                         "samples_per_s": sps * batch, "wall_s": wall})
                if model_run is None:
                    model_run = run
            base = next(r for r in results["train"] if r["global_batch"] == batch and r["ranks"] == counts[0])
            for row in results["train"]:
                if row["global_batch"] == batch:
                    row["scaling_efficiency"] = row["samples_per_s"] / (base["samples_per_s"] * row["ranks"] / base["ranks"])
            ref = np.asarray(curves[counts[0]])
            for n, curve in curves.items():
                rel = np.abs(np.asarray(curve) - ref) / np.abs(ref)
                results["loss_curves"][f"b{batch}-n{n}"] = {"loss": curve, "max_rel_diff_vs_first": float(rel.max())}
        for n in counts:
            times = []
            for size in aug_sizes:
                out = root / f"aug-n{n}-{size}.zarr"
                times.append(torchrun(n, ["augment", "--model", str(model_run), "--data", str(store.path),
                                          "--out", str(out), "--mu", "0.5", "--alpha", "1.3",
                                          "--num-transitions", str(size), "--batch-size", "8192",
                                          "--device", device, *(["--bf16"] if not args.quick else [])], env, 900))
            rate = (aug_sizes[1] - aug_sizes[0]) / max(times[1] - times[0], 1e-9)
            results["augment"].append({"ranks": n, "transitions_per_s": rate, "wall_s": times})
        base = results["augment"][0]
        for row in results["augment"]:
            row["scaling_efficiency"] = row["transitions_per_s"] / (base["transitions_per_s"] * row["ranks"] / base["ranks"])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\ndevice {results['device']} x{max(counts)}, torch {results['torch']}, "
          f"{'quick' if args.quick else 'fast-mixer network, bf16 eager'}")
    print(f"{'what':30s} {'ranks':>5s} {'rate':>12s} {'per rank':>10s} {'efficiency':>10s}")
    for row in results["train"]:
        print(f"{'train steps/s, batch ' + str(row['global_batch']):30s} {row['ranks']:>5d} "
              f"{row['steps_per_s']:>12,.1f} {row['samples_per_s'] / row['ranks']:>10,.0f} {row['scaling_efficiency']:>10.2f}")
    for row in results["augment"]:
        print(f"{'augment transitions/s':30s} {row['ranks']:>5d} {row['transitions_per_s']:>12,.0f} "
              f"{row['transitions_per_s'] / row['ranks']:>10,.0f} {row['scaling_efficiency']:>10.2f}")
    for key, curve in results["loss_curves"].items():
        print(f"loss curve {key}: max relative difference to 1 rank {curve['max_rel_diff_vs_first']:.3f}")


if __name__ == "__main__":
    main()
