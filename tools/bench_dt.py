"""Benchmark of gta-rl's Decision Transformer updates (GTA appendix E.4; CORL DT settings).

Updates/s at batch 4096, context 20, 3 layers, 1 head, embedding 128, on synthetic HalfCheetah-shaped
sequence data (obs 17, act 6, 1000-step episodes) written to a temporary store, in one run:

- ``eager-fp32``: the plain update (1 seed): the baseline;
- ``bf16``: bf16 autocast of the forward;
- ``bf16+compile``: bf16 + torch.compile of the transformer's forward only (default mode);
- ``bf16+compile+graph``: the same with the whole step (sampling, loss, backward, clip, AdamW) captured
  in a CUDA graph;
- the best fast path with ``--seeds`` seeds stacked (seed-updates/s).

A variant that fails (e.g. compilation) is recorded with its error in the JSON and the next one runs;
if compilation fails, ``bf16+compile`` falls back to eager bf16 and says so. Prints a table last and
writes every number to ``--out``. ``--quick`` runs a few updates on the CPU in seconds (batch 64;
torch.compile with the 'eager' backend, which exercises tracing but not code generation).

    python tools/bench_dt.py --out dt.json              # CUDA, full size (about a minute on an H100)
    python tools/bench_dt.py --quick --out /tmp/dt.json  # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from gta_rl.algorithms import build_config
from gta_rl.dt import DT
from gta_rl.fast import StepRunner
from gta_rl.sequences import load_sequence_data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rl import ACT, OBS, make_store, timed  # noqa: E402  (the same synthetic store and timer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON results path")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run in seconds")
    ap.add_argument("--batch-size", type=int, default=None, help="4096 (--quick: 64)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds stacked in the multi-seed row (4; --quick: 2)")
    ap.add_argument("--seconds", type=float, default=None, help="timing window per variant (5; --quick: 0.5)")
    args = ap.parse_args()
    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    quick = args.quick or device.type == "cpu"
    batch = args.batch_size or (64 if quick else 4096)
    seeds = args.seeds or (2 if quick else 4)
    seconds = args.seconds or (0.5 if quick else 5.0)
    warmup = 2 if quick else 10
    backend = "eager" if quick else "inductor"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 baseline means fp32
    t_start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "cheetah.zarr"
        make_store(store, 20_000 if quick else 200_000)
        cfg = build_config("dt", "halfcheetah", {})
        data, _ = load_sequence_data([store], context=cfg.context, return_scale=cfg.return_scale, device=device)
        variants = [("eager-fp32", False, False, False)]
        if device.type == "cuda":
            variants.append(("bf16", True, False, False))
        variants.append(("bf16+compile" if device.type == "cuda" else "compile", device.type == "cuda", True, False))
        if device.type == "cuda":
            variants.append(("bf16+compile+graph", True, True, True))

        def run(impl: str, bf16: bool, comp: bool, graph: bool, n_seeds: int) -> dict:
            row = {"impl": impl, "seeds": n_seeds, "batch_size": batch}
            try:
                agent = DT(build_config("dt", "halfcheetah", {"bf16": bf16}), OBS, ACT, list(range(n_seeds)),
                           device=device)
                if comp:
                    try:
                        agent.compile_forward(backend)
                        agent.train_step(data, batch, actor_step=True)  # compiles now, so failures show here
                    except Exception as exc:  # noqa: BLE001 - any compiler failure: record it, run eager
                        row["compile_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                        agent.forward_fn = agent.net.forward
                        impl = row["impl"] = impl + " (eager fallback)"
                runner = StepRunner(agent, data, batch, cuda_graph=graph)
                rate = timed(runner, device, warmup, seconds, 10**9, chunk=10 if device.type == "cuda" else 2)
                row.update(steps_per_s=rate, seed_updates_per_s=rate * n_seeds)
                print(f"  {impl:32s} S={n_seeds}: {rate:8.1f} steps/s", flush=True)
            except Exception as exc:  # noqa: BLE001 - a failed variant is a result, the others still run
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                print(f"  {impl:32s} S={n_seeds}: failed: {row['error']}", flush=True)
            return row

        for impl, bf16, comp, graph in variants:
            rows.append(run(impl, bf16, comp, graph, 1))
        ok = [(r, v) for r, v in zip(rows, variants, strict=True) if "steps_per_s" in r and v[0] != "eager-fp32"]
        if ok:
            best_row, best = max(ok, key=lambda rv: rv[0]["steps_per_s"])
            rows.append(run(best[0], *best[1:], seeds))
    base = rows[0].get("steps_per_s")
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "batch_size": batch, "context": cfg.context, "quick": quick,
        "config": {k: getattr(cfg, k) for k in ("embedding_dim", "num_layers", "num_heads", "context")},
        "rows": rows, "wall_s": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nDT, batch {batch}, context {cfg.context}, {result['device']}, torch {torch.__version__}, "
          f"{result['wall_s']:.0f} s")
    print(f"{'impl':34s} {'seeds':>5s} {'steps/s':>9s} {'seed-upd/s':>11s} {'vs eager':>9s}")
    for r in rows:
        if "steps_per_s" not in r:
            print(f"{r['impl']:34s} {r['seeds']:5d} {'failed':>9s}")
            continue
        speed = f"{r['steps_per_s'] / base:8.2f}x" if base else "-"
        print(f"{r['impl']:34s} {r['seeds']:5d} {r['steps_per_s']:9.1f} {r['seed_updates_per_s']:11.1f} {speed:>9s}")


if __name__ == "__main__":
    main()
