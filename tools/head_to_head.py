"""Head-to-head of the two trajectory denoisers on real stores: GTA's A.2 network (mixer-unet) and fast-mixer.

For each store and each network, trains with the product code (``gta_diffusion.training.Trainer``) for the same
steps, seed and batch, then times augmentation (``gta_diffusion.augmentation.augment`` with the store's dataset
preset, or mu 0.5 / alpha 1.3) on the trained EMA weights. Prints the training loss of both networks at equal
steps (the metric lines of each run) and training steps/s and generated transitions/s, and writes it all as
JSON. The run directories and augmented stores stay under --out, so the quality metrics (dynamic MSE, oracle
reward, novelty: ``gta-eval quality``) and the TD3+BC scores (``gta-rl train``) can be computed on them next.

    python tools/head_to_head.py --data halfcheetah-medium.zarr hopper-medium.zarr --out h2h/ \\
        --steps 100000 --fast                                  # GPU: bf16 + compile + whole-step CUDA graph
    python tools/head_to_head.py --data toy.zarr --out h2h/ --quick    # CPU smoke test, tiny networks

A run directory that exists is resumed (or reused when finished), so the command can be repeated after a
time limit.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

NETWORKS = ("mixer-unet", "fast-mixer")
QUICK = {"mixer-unet": {"dim": 8, "dim_mults": (1, 2), "head_dim": 8},
         "fast-mixer": {"dim": 8, "dim_mults": (1, 2), "emb_dim": 16, "mid_blocks": 1}}
"""Tiny overrides of --quick (CPU), per network."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_one(store: Path, run_dir: Path, network: str, args: argparse.Namespace, device: torch.device) -> dict:
    from gta_diffusion.data import WindowConfig
    from gta_diffusion.training import TrainConfig, Trainer

    cfg = TrainConfig(preset=network, network_overrides=QUICK[network] if args.quick else {}, steps=args.steps,
                      batch_size=args.batch_size, seed=args.seed, log_every=args.log_every,
                      checkpoint_every=args.steps, bf16=args.fast, compile=args.fast, cuda_graph=args.fast)
    trainer = Trainer.create(run_dir, store, cfg, WindowConfig(horizon=args.horizon), device=device)
    start = trainer.step_count
    _sync(device)
    t0 = time.perf_counter()
    trainer.train()
    _sync(device)
    seconds = time.perf_counter() - t0
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # The steady rate: the median of the per-interval rates (the first interval includes compilation).
    rates = sorted(r["steps_per_s"] for r in lines if r.get("steps_per_s"))
    return {"parameters": trainer.config["network"]["parameters"], "steps_run": trainer.step_count - start,
            "train_seconds": seconds, "loss": {r["step"]: r["loss"] for r in lines},
            "train_steps_per_s": rates[len(rates) // 2] if rates else None}


def augment_one(store: Path, run_dir: Path, out: Path, args: argparse.Namespace, device: torch.device) -> dict:
    from gta_diffusion.augmentation import AugmentConfig, augment
    from gta_diffusion.errors import DiffusionError
    from gta_diffusion.presets import dataset_preset

    try:
        fields = dataset_preset(store.stem)
    except DiffusionError:
        fields = {"mu": 0.5, "alpha": 1.3}
    cfg = AugmentConfig(**fields, num_transitions=args.num_transitions, batch_size=args.sample_batch,
                        num_steps=args.sampler_steps, seed=args.seed, bf16=args.fast, compile=args.fast,
                        compile_mode="reduce-overhead" if args.fast else None)
    _sync(device)
    t0 = time.perf_counter()  # includes compilation and the copy to the host: a whole augmentation's rate
    result = augment(run_dir, store, out, cfg, device=device, overwrite=True)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"augment_seconds": seconds, "transitions": result.num_transitions,
            "augment_transitions_per_s": result.num_transitions / seconds, "augment": fields}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="training stores (.zarr), e.g. "
                    "halfcheetah-medium.zarr hopper-medium.zarr (the name picks the augmentation preset)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the runs, stores and head_to_head.json")
    ap.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated subset of " + ",".join(NETWORKS))
    ap.add_argument("--steps", type=int, default=100_000, help="training steps of every run (paper: 1e6)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--horizon", type=int, default=31)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=1000, help="steps between the losses compared")
    ap.add_argument("--num-transitions", type=int, default=1_000_000, help="generated per run (paper: 5M)")
    ap.add_argument("--sample-batch", type=int, default=8192, help="windows per sampler call")
    ap.add_argument("--sampler-steps", type=int, default=None, help="default: the model's (128)")
    ap.add_argument("--fast", action="store_true", help="bf16 + torch.compile + whole-step CUDA graph (GPU)")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--quick", action="store_true", help="CPU smoke test: tiny networks (overrides recorded)")
    args = ap.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    networks = args.networks.split(",")
    unknown = set(networks) - set(NETWORKS)
    if unknown:
        ap.error(f"unknown networks {sorted(unknown)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "settings": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    for store in args.data:
        for network in networks:
            name = f"{store.stem}-{network}"
            if device.type == "cuda":
                torch._dynamo.reset()
            row = train_one(store, args.out / name, network, args, device)
            row.update(augment_one(store, args.out / name, args.out / f"{name}-aug.zarr", args, device))
            results["runs"][name] = row
            (args.out / "head_to_head.json").write_text(json.dumps(results, indent=2) + "\n")
    for store in args.data:
        rows = {n: results["runs"][f"{store.stem}-{n}"] for n in networks}
        steps = sorted(set.intersection(*(set(r["loss"]) for r in rows.values())))
        print(f"\n{store.stem}: training loss at equal steps ({results['device']}, batch {args.batch_size}, "
              f"seed {args.seed}, {'bf16 + compile + CUDA graph' if args.fast else 'eager fp32'})")
        print(f"{'step':>10s} " + " ".join(f"{n:>14s}" for n in networks))
        for step in steps:
            print(f"{step:>10d} " + " ".join(f"{rows[n]['loss'][step]:>14.4f}" for n in networks))
        for key, label in (("parameters", "parameters"), ("train_steps_per_s", "train steps/s"),
                           ("augment_transitions_per_s", "augment trans/s")):
            print(f"{label:>16s} " + " ".join(f"{rows[n][key]:>14,.1f}" if rows[n][key] is not None else f"{'-':>14s}"
                                              for n in networks))
    print(f"results written to {args.out / 'head_to_head.json'}")


if __name__ == "__main__":
    main()
