"""Kernel profile of one gta-rl training step on CUDA (where the time of an update goes).

Builds the step as ``tools/bench_rl.py`` does (synthetic HalfCheetah-shaped data, batch 1024, CUDA graph
replay), times it, then records 20 steps with ``torch.profiler`` and prints the kernels per step, the GPU
time per step and the most expensive kernels. Run one variant per process: torch.compile's caches from an
earlier variant change what a later compile produces.

    python tools/profile_rl.py --impl fullgraph --seeds 8            # the fastest path, 8 stacked seeds
    python tools/profile_rl.py --impl compile --seeds 1 --no-tf32
    python tools/profile_rl.py --impl fullgraph --seeds 8 --autotune # inductor max-autotune (minutes)
    python tools/profile_rl.py --impl fullgraph --seeds 8 --bf16     # bf16 mixed precision (gta-rl train --bf16)
    python tools/profile_rl.py --impl fullgraph --seeds 8 --inductor coordinate_descent_tuning=True
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rl import ACT, OBS, make_store, timed  # noqa: E402

from gta_rl.algorithms import build_config, get_spec  # noqa: E402
from gta_rl.buffer import load_training_data  # noqa: E402
from gta_rl.fast import StepRunner  # noqa: E402
from gta_rl.nets import Arithmetic  # noqa: E402


def set_inductor_config(item: str) -> None:
    """'KEY=VALUE' -> torch._inductor.config.KEY = VALUE (a Python literal; KEY may be dotted, e.g. triton.X)."""
    key, sep, value = item.partition("=")
    *parents, name = key.split(".")
    target = torch._inductor.config
    for part in parents:
        target = getattr(target, part, None)
    if not sep or target is None or not hasattr(target, name):
        raise ValueError(f"--inductor {item!r}: not KEY=VALUE with KEY a setting of torch._inductor.config")
    try:
        setattr(target, name, ast.literal_eval(value))
    except (ValueError, SyntaxError):
        raise ValueError(f"--inductor {item!r}: {value!r} is not a Python literal") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algo", default="td3bc")
    ap.add_argument("--impl", choices=("graph", "compile", "fullgraph"), default="fullgraph",
                    help="CUDA graph of the eager step, of the compiled step, or of the one-graph compiled step")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--no-tf32", action="store_true", help="fp32 matmuls (default: TF32, as gta-rl train --tf32)")
    ap.add_argument("--autotune", action="store_true", help="inductor max-autotune")
    ap.add_argument("--bf16", action="store_true", help="bf16 mixed precision (gta-rl train --bf16)")
    ap.add_argument("--fused-mlp", action="store_true", help="fused MLP passes (gta-rl train --fused-mlp)")
    ap.add_argument("--top", type=int, default=16, help="kernels to list")
    ap.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                    help="set torch._inductor.config.KEY (Python literal VALUE) before compiling, e.g. "
                         "coordinate_descent_tuning=True; repeatable")
    args = ap.parse_args()
    if args.autotune and args.impl == "graph":
        ap.error("--autotune is a torch.compile mode: use it with --impl compile or fullgraph")
    if not torch.cuda.is_available():
        sys.exit("profile_rl.py needs a CUDA device")
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = not args.no_tf32
    for item in args.inductor:
        try:
            set_inductor_config(item)
        except ValueError as exc:
            ap.error(str(exc))
    with tempfile.TemporaryDirectory() as tmp:
        make_store(Path(tmp) / "s.zarr", 200_000)
        data, _ = load_training_data([Path(tmp) / "s.zarr"], device=dev)
        agent = get_spec(args.algo).agent(build_config(args.algo, None, {}), OBS, ACT, list(range(args.seeds)),
                                          device=dev, total_steps=1_000_000,
                                          arithmetic=Arithmetic.of(args.bf16, args.fused_mlp))
        runner = StepRunner(agent, data, args.batch_size, compile=args.impl != "graph", cuda_graph=True,
                            fullgraph=args.impl == "fullgraph", autotune=args.autotune)

        t0 = time.perf_counter()
        for s in range(8):  # warm-up, compile and capture
            runner(s)
        torch.cuda.synchronize()
        setup = time.perf_counter() - t0
        rate = timed(runner, dev, 30, 2.0, 100_000)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for s in range(40, 60):
                runner(s)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    copies = [e for e in events if e.key.startswith(("Memcpy", "Memset"))]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}: {args.algo} {args.impl}"
          f"{' autotune' if args.autotune else ''}{' bf16' if args.bf16 else ''}{' fused' if args.fused_mlp else ''}"
          f"{'' if args.no_tf32 else ' tf32'}{''.join(' ' + i for i in args.inductor)}, {args.seeds} seed(s), "
          f"batch {args.batch_size}")
    print(f"setup {setup:.1f} s; {rate:.1f} steps/s; per step {sum(e.count for e in events) / 20:.0f} kernels "
          f"(of which {sum(e.count for e in copies) / 20:.0f} memcpy/memset) and "
          f"{sum(e.self_device_time_total for e in events) / 20:.0f} us of GPU time")
    for e in sorted(events, key=lambda e: -e.self_device_time_total)[:args.top]:
        print(f"  {e.count / 20:5.1f}x {e.self_device_time_total / 20:7.1f} us  {e.key[:110]}")


if __name__ == "__main__":
    main()
