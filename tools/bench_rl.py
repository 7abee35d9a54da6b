"""Benchmark of gta-rl's offline RL updates (GTA stage C).

Measures updates/s at batch 1024 on synthetic HalfCheetah-shaped data (obs 17, act 6) written to a
temporary store, for:

- ``corl-eager``: a plain, CORL-style TD3+BC update (nn.Sequential nets, torch.optim.Adam, .backward(),
  a Python Polyak loop, numpy batch indices), 1 seed: the baseline;
- ``eager`` / ``graph`` / ``compile+graph``: gta-rl's stacked agents, 1 seed, fp32 matmuls as the baseline
  (``eager+bf16``: eager with ``--bf16``);
  ``compile+graph+tf32`` the same with TF32 tensor-core matmuls (``gta-rl train --tf32``);
  ``fullgraph+graph+tf32`` compiles the whole step, gradients included, as one graph (``--fullgraph``);
  ``fullgraph+graph+tf32+bf16`` adds bf16 mixed precision (``--bf16``: hidden-layer matmuls in bf16, output
  layers (TF32 here), losses and Adam in fp32); ``...+bf16+fused`` runs the 256-256 networks through the
  fused Triton kernels (``--fused-mlp``): every forward pass as one kernel, and the backward passes as one
  kernel plus the weight-gradient products; ``...+bf16+fusedfwd`` fuses only the gradient-free passes
  (target networks; ``--fused-mlp`` of the ninth session);
- the same fast path with 8 seeds stacked in one process, against 8 sequential 1-seed runs;
- with ``--arms K``: K runs of 8 seeds that differ in their data (``gta-rl train --arm``: the K arms of a
  results row) stacked as one agent of 8K members, against K sequential 8-seed runs.

On CUDA every compiled variant is timed in a fresh process (``--no-isolate``: in this one), as a training run
compiles its step once. Prints a table last and writes every number to ``--out`` (JSON). ``--quick`` runs a
few updates of each eager variant on the CPU in seconds (no CUDA graphs, no compile).

    python tools/bench_rl.py --out results.json            # CUDA, full size (TD3+BC alone: ~5 min on an H100)
    python tools/bench_rl.py --algos td3bc --modes eager,fullgraph+graph+tf32 --out r.json
    python tools/bench_rl.py --quick --out /tmp/quick.json  # CPU smoke run
    python tools/bench_rl.py --algos td3bc --modes fullgraph+graph+tf32+bf16+fused --arms 4 --out r.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gta_data import Transitions, write_store
from gta_data.accel.cuda_graph import describe_error
from gta_rl.algorithms import build_config, get_spec
from gta_rl.buffer import StackedData, load_training_data
from gta_rl.fast import StepRunner
from gta_rl.nets import Arithmetic

OBS, ACT = 17, 6


def make_store(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    tr = Transitions(obs, rng.uniform(-1, 1, (n, ACT)), rng.normal(size=n),
                     obs + 0.1 * rng.normal(size=(n, OBS)), np.zeros(n, bool), np.zeros(n, bool))
    ends = np.arange(1000, n + 1, 1000)
    write_store(path, tr, ends, env_id="HalfCheetah-v5", ref_min_score=-280.178953, ref_max_score=12135.0)


class CorlTD3BC:
    """A straightforward single-seed TD3+BC update in the style of CORL's td3_bc.py (the baseline)."""

    def __init__(self, data, device, batch_size):
        def mlp(i, o, tanh=False):
            layers = [nn.Linear(i, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, o)]
            return nn.Sequential(*layers, *([nn.Tanh()] if tanh else [])).to(device)

        self.actor, self.q1, self.q2 = mlp(OBS, ACT, True), mlp(OBS + ACT, 1), mlp(OBS + ACT, 1)
        self.actor_t, self.q1_t, self.q2_t = (copy.deepcopy(m) for m in (self.actor, self.q1, self.q2))
        self.a_opt = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.c_opt = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=3e-4)
        self.data, self.batch_size, self.it = data, batch_size, 0
        self.rng = np.random.default_rng(0)

    def __call__(self, _step):
        d = self.data
        idx = self.rng.integers(0, d.num_transitions, size=self.batch_size)  # host indices, as CORL
        s, a, r, s2, done = (d.observations[idx], d.actions[idx], d.rewards[idx, None],
                             d.next_observations[idx], d.dones[idx, None])
        self.it += 1
        with torch.no_grad():
            noise = (torch.randn_like(a) * 0.2).clamp(-0.5, 0.5)
            a2 = (self.actor_t(s2) + noise).clamp(-1, 1)
            sa2 = torch.cat([s2, a2], 1)
            y = r + (1 - done) * 0.99 * torch.min(self.q1_t(sa2), self.q2_t(sa2))
        sa = torch.cat([s, a], 1)
        loss = F.mse_loss(self.q1(sa), y) + F.mse_loss(self.q2(sa), y)
        self.c_opt.zero_grad()
        loss.backward()
        self.c_opt.step()
        if self.it % 2 == 0:
            pi = self.actor(s)
            q = self.q1(torch.cat([s, pi], 1))
            lmbda = 2.5 / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, a)
            self.a_opt.zero_grad()
            actor_loss.backward()
            self.a_opt.step()
            for net, tgt in ((self.actor, self.actor_t), (self.q1, self.q1_t), (self.q2, self.q2_t)):
                for p, tp in zip(net.parameters(), tgt.parameters(), strict=True):
                    tp.data.copy_(0.005 * p.data + 0.995 * tp.data)
        return {"critic_loss": loss.detach()}


def timed(step_fn, device, warmup: int, seconds: float, max_steps: int, chunk: int | None = None) -> float:
    """Updates/s of ``step_fn(step)`` after ``warmup`` steps, timed for about ``seconds``, synchronising
    every ``chunk`` steps (default 50 on CUDA, 5 on CPU)."""
    step = 0
    for _ in range(warmup):
        step_fn(step)
        step += 1
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    chunk = chunk or (50 if device.type == "cuda" else 5)
    sync()
    t0, n = time.perf_counter(), 0
    while n < max_steps:
        for _ in range(chunk):
            out = step_fn(step)
            step += 1
        n += chunk
        sync()
        if time.perf_counter() - t0 > seconds:
            break
    value = float((out["loss"] if "loss" in out else next(iter(out.values()))).sum())  # results exist
    if not np.isfinite(value):
        raise FloatingPointError(f"non-finite result {value}")
    return n / (time.perf_counter() - t0)


MODES = {  # impl -> (torch.compile, CUDA graph)
    "eager": (False, False),
    "eager+bf16": (False, False),
    "graph": (False, True),
    "compile+graph": (True, True),
    "compile+graph+tf32": (True, True),
    "fullgraph+graph+tf32": (True, True),
    "fullgraph+graph+tf32+bf16": (True, True),
    "fullgraph+graph+tf32+bf16+fusedfwd": (True, True),
    "fullgraph+graph+tf32+bf16+fused": (True, True),
}


def _flags(impl: str) -> set[str]:
    return set(impl.split("+"))


def measure(data, device, algo, impl, seeds, batch, seconds, warmup, max_steps=100_000, arms=1) -> float:
    """Steps/s of one gta-rl training-step variant (``impl`` a key of MODES) with ``seeds`` stacked, or
    ``arms`` x ``seeds`` members each arm drawing from its own copy of the data (as ``gta-rl train --arm``)."""
    comp, graph = MODES[impl]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = "tf32" in _flags(impl)
    if arms > 1:
        data = StackedData([data] * arms, [seeds] * arms)
    flags = _flags(impl)
    arithmetic = (Arithmetic(torch.bfloat16, fused=True, fused_grad="fused" in flags) if flags & {"fused", "fusedfwd"}
                  else Arithmetic.of(bf16="bf16" in flags))
    agent = get_spec(algo).agent(build_config(algo, None, {}), OBS, ACT, list(range(seeds)) * arms, device=device,
                                 total_steps=1_000_000, arithmetic=arithmetic)
    runner = StepRunner(agent, data, batch, compile=comp, cuda_graph=graph, fullgraph="fullgraph" in _flags(impl))
    return timed(runner, device, warmup, seconds, max_steps)


def _exception_line(stderr: str) -> str:
    """For a child that died without reporting (a crash): the last 'SomeError: message' line of its traceback
    (torch appends hints after it), else its last line."""
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln)]
    return (errors or lines or ["no output"])[-1][:500]


def measure_in_child(store, algo, impl, seeds, batch, seconds, warmup, arms=1) -> float:
    """``measure`` in a fresh Python process: a compiled step is timed as a training run meets it, compiled
    once in its process (torch.compile's caches and recompilations of earlier variants of the same
    ``train_step`` code do not leak into the next measurement)."""
    cmd = [sys.executable, __file__, "--out", os.devnull, "--child", f"{algo}:{impl}:{seeds}:{arms}", "--store", str(store),
           "--batch-size", str(batch), "--seconds", str(seconds), "--warmup", str(warmup)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD ")]
    report = json.loads(lines[-1][len("CHILD "):]) if lines else {}
    if "error" in report:
        raise RuntimeError(f"child failed: {report['error']}")
    if proc.returncode != 0 or "steps_per_s" not in report:
        raise RuntimeError(f"child exited {proc.returncode}: {_exception_line(proc.stderr)}")
    return float(report["steps_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON results path")
    ap.add_argument("--quick", action="store_true", help="CPU smoke run in seconds")
    ap.add_argument("--algos", default="td3bc,iql,cql,mcq")
    ap.add_argument("--seeds", type=int, default=None, help="seeds stacked in the multi-seed measurement (8; --quick: 2)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="timing window per measurement")
    ap.add_argument("--compile-all", action="store_true", help="also compile IQL/CQL/MCQ (compile time!)")
    ap.add_argument("--budget", type=float, default=1800.0,
                    help="skip remaining measurements after this many s (a full TD3+BC run: ~5 min on an H100)")
    ap.add_argument("--modes", default=None, help=f"comma-separated subset of {', '.join(MODES)} (default: all)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps before each measurement")
    ap.add_argument("--no-isolate", action="store_true",
                    help="time compiled variants in this process instead of one fresh process each")
    ap.add_argument("--arms", type=int, default=1,
                    help="also time K arms x --seeds members in one stack against K sequential runs (K > 1)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # algo:impl:seeds:arms, internal (measure_in_child)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    quick = args.quick or device.type == "cpu"
    args.seeds = args.seeds or (2 if quick else 8)
    batch = args.batch_size or (256 if quick else 1024)
    seconds = args.seconds or (0.5 if quick else 2.0)
    max_steps = 20 if quick else 100_000
    warmup = args.warmup if args.warmup is not None else (3 if quick else 30)
    isolate = not args.no_isolate and device.type == "cuda"
    wanted = args.modes.split(",") if args.modes else list(MODES)
    unknown = [m for m in wanted if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 like the CORL baseline
    # Every agent of the run is a new module: let dynamo keep one entry per shape instead of silently
    # falling back to eager after the default 8.
    torch._dynamo.config.cache_size_limit = 64
    if args.child:
        algo, impl, seeds, arms = args.child.split(":")
        try:
            data, _ = load_training_data([args.store], device=device)
            rate = measure(data, device, algo, impl, int(seeds), batch, seconds, warmup, max_steps, int(arms))
        except Exception as exc:  # the parent reads this line: torch's tracebacks end in hints, not the error
            traceback.print_exc()  # the whole story stays on the child's stderr
            print("CHILD " + json.dumps({"error": describe_error(exc)}), flush=True)
            sys.exit(1)
        print("CHILD " + json.dumps({"steps_per_s": rate}), flush=True)
        return
    rows = []
    t_start = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "synthetic-halfcheetah.zarr"
        make_store(store, 20_000 if quick else 200_000)
        data, _ = load_training_data([store], device=device)

        def record(algo, impl, seeds, rate, arms=1):
            rows.append({"algorithm": algo, "impl": impl, "seeds": seeds, "arms": arms, "steps_per_s": rate,
                         "updates_per_s_per_seed": rate, "seed_updates_per_s": rate * seeds * arms})
            print(f"  {algo:6s} {impl:26s} S={seeds}{f' x {arms} arms' if arms > 1 else ''}: {rate:9.1f} steps/s",
                  flush=True)

        if "td3bc" in args.algos:
            torch.manual_seed(0)
            record("td3bc", "corl-eager", 1, timed(CorlTD3BC(data, device, batch), device, warmup, seconds, max_steps))

        for algo in args.algos.split(","):
            for impl in [m for m in MODES if m in wanted]:
                comp = MODES[impl][0]
                why_not = ("a --quick / CPU run times only the eager modes" if quick and any(MODES[impl]) else
                           "compiled IQL/CQL/MCQ need --compile-all" if comp and algo != "td3bc"
                           and not args.compile_all else None)
                if why_not and not args.modes:  # the default modes are those that apply
                    continue
                for seeds, arms in ((1, 1), (args.seeds, 1), *([(args.seeds, args.arms)] if args.arms > 1 else [])):
                    if why_not is None and time.perf_counter() - t_start > args.budget:
                        why_not = f"past the {args.budget:.0f} s budget"
                    if why_not:
                        print(f"  {algo} {impl} S={seeds} skipped: {why_not}", flush=True)
                        rows.append({"algorithm": algo, "impl": impl, "seeds": seeds, "arms": arms,
                                     "skipped": why_not})
                        continue
                    try:
                        if isolate and comp:
                            rate = measure_in_child(store, algo, impl, seeds, batch, seconds, warmup, arms)
                        else:
                            rate = measure(data, device, algo, impl, seeds, batch, seconds, warmup, max_steps, arms)
                    except Exception as exc:  # report and go on: one failing mode must not hide the rest
                        print(f"  {algo} {impl} S={seeds} failed: {describe_error(exc)}", flush=True)
                        rows.append({"algorithm": algo, "impl": impl, "seeds": seeds, "arms": arms,
                                     "error": describe_error(exc)})
                        continue
                    record(algo, impl, seeds, rate, arms)

    def best(algo, seeds, lowp=True):
        """(steps/s, impl) of the fastest measured mode; ``lowp=False``: of the fp32 ones (no TF32, no bf16)."""
        found = [r for r in rows if r["algorithm"] == algo and r["seeds"] == seeds and "steps_per_s" in r
                 and r["arms"] == 1
                 and r["impl"] != "corl-eager" and (lowp or not _flags(r["impl"]) & {"tf32", "bf16"})]
        top = max(found, key=lambda r: r["steps_per_s"], default=None)
        return (top["steps_per_s"], top["impl"]) if top else (float("nan"), None)

    summary = {}
    for algo in args.algos.split(","):
        (one, one_impl), (many, many_impl) = best(algo, 1), best(algo, args.seeds)
        rate = {(r["impl"], r["seeds"]): r["steps_per_s"] for r in rows
                if r["algorithm"] == algo and "steps_per_s" in r and r["arms"] == 1}
        stacked = {r["impl"]: r["steps_per_s"] for r in rows
                   if r["algorithm"] == algo and "steps_per_s" in r and r["arms"] > 1}
        same_mode = {impl: rate[impl, args.seeds] * args.seeds / rate[impl, 1] for impl in MODES
                     if (impl, 1) in rate and (impl, args.seeds) in rate}
        summary[algo] = {"best_1_seed_steps_per_s": one, "best_1_seed_impl": one_impl,
                         f"best_{args.seeds}_seed_steps_per_s": many, f"best_{args.seeds}_seed_impl": many_impl,
                         "multi_vs_sequential_speedup": many * args.seeds / one, "same_mode_speedup": same_mode,
                         # K arms x S seeds in one stack vs K sequential S-seed runs of the same mode
                         "arms_vs_sequential_speedup": {impl: x * args.arms / rate[impl, args.seeds]
                                                        for impl, x in stacked.items() if (impl, args.seeds) in rate},
                         "arms_minutes_per_1M_updates": {impl: 1e6 / x / 60 for impl, x in stacked.items()}}
    corl = next((r["steps_per_s"] for r in rows if r["impl"] == "corl-eager" and "steps_per_s" in r), float("nan"))
    td3 = summary.get("td3bc", {})
    targets = {
        "td3bc_updates_per_s_per_seed_target": 3000,
        "td3bc_best_1_seed": td3.get("best_1_seed_steps_per_s"),
        "td3bc_best_1_seed_fp32": best("td3bc", 1, lowp=False)[0] if "td3bc" in summary else None,
        f"td3bc_per_seed_with_{args.seeds}_stacked": td3.get(f"best_{args.seeds}_seed_steps_per_s"),
        "td3bc_speedup_over_corl_eager": (td3.get("best_1_seed_steps_per_s") or float("nan")) / corl,
        "multi_seed_speedup_target": 5.0,
        "td3bc_multi_seed_speedup": td3.get("multi_vs_sequential_speedup"),
    }
    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "batch_size": batch,
        "blas": str(torch.backends.cuda.preferred_blas_library()) if device.type == "cuda" else None,
        "quick": quick, "arms": args.arms, "rows": rows, "summary": summary,
        "targets": targets, "wall_s": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    print(f"\nbatch {batch}, {result['device']}, torch {torch.__version__}, {result['blas'] or 'CPU'}, "
          f"{result['wall_s']:.0f} s")
    print(f"{'algorithm':9s} {'impl':34s} {'members':>9s} {'steps/s':>10s} {'seed-updates/s':>15s}")
    for r in rows:
        members = f"{r['seeds']}x{r['arms']}" if r["arms"] > 1 else str(r["seeds"])
        if "steps_per_s" not in r:
            print(f"{r['algorithm']:9s} {r['impl']:34s} {members:>9s} {'skipped' if 'skipped' in r else 'failed':>10s}")
        else:
            print(f"{r['algorithm']:9s} {r['impl']:34s} {members:>9s} {r['steps_per_s']:10.1f} "
                  f"{r['seed_updates_per_s']:15.1f}")
    for algo, s in summary.items():
        same = ", ".join(f"{impl} {x:.2f}x" for impl, x in s["same_mode_speedup"].items())
        print(f"{algo}: {args.seeds} seeds at once vs {args.seeds} sequential: "
              f"{s['multi_vs_sequential_speedup']:.2f}x (fastest of each: {s[f'best_{args.seeds}_seed_impl']} vs "
              f"{s['best_1_seed_impl']}; same mode: {same or '-'})")
        for impl, x in s["arms_vs_sequential_speedup"].items():
            print(f"{algo} {impl}: {args.arms} arms x {args.seeds} seeds at once vs {args.arms} sequential "
                  f"{args.seeds}-seed runs: {x:.2f}x; 1M updates of all {args.arms * args.seeds} runs: "
                  f"{s['arms_minutes_per_1M_updates'][impl]:.1f} min of updates")
    if "td3bc" in summary:
        print(f"td3bc best 1-seed {targets['td3bc_best_1_seed']:.0f} updates/s "
              f"({targets['td3bc_speedup_over_corl_eager']:.1f}x CORL-style eager; target 3000); "
              f"per seed with {args.seeds} stacked {targets[f'td3bc_per_seed_with_{args.seeds}_stacked']:.0f}")


if __name__ == "__main__":
    main()
