"""The SAC update (gta_rl.behaviour) as it runs now and as it ran before, timed in one process.

``tools/bench_sac.py`` times only the current update, so a change in its rate between two runs mixes the
code with the machine. This tool builds the same agent (HalfCheetah shapes: obs 17, act 6; batch 256; 256-256
networks; a 100k-row buffer) once per variant and times the variants in interleaved rounds. Each variant
adds one older piece to the one before it, so neighbouring rows isolate one change:

- ``current``: ``gta_rl.behaviour.update_runner`` (gta-data's ``compile_step`` + ``CudaGraphRunner``).
- ``old-runner``: :class:`OldUpdateRunner`, a reference copy of ``gta_rl.sac.UpdateRunner`` as of commit
  af0b729^ (before SAC moved onto gta-data's execution layer): plain ``torch.compile(step, dynamic=False)``
  with inductor's default options (``compile_step`` turns loop reordering after fusion off) and its own
  capture, which otherwise does what ``CudaGraphRunner`` does.
- ``old-runner+columns``: also the batch gathered from five column tensors, one index kernel each, as the
  buffer sampled before commit 0ae5e0d (now one gather of packed rows); the same values.
- ``old-runner+columns+f64-adam``: also Adam's bias corrections as float64 powers, as before commit 96bfa9b
  (now float32 ``expm1``); equal to rounding.

The last row is the update as it was timed before those commits. Every variant starts from the same weights
and its metrics after the first few updates are checked against ``current`` before timing::

    python tools/bench_sac_versions.py --out sac_versions.json          # CUDA: compile + CUDA graph
    python tools/bench_sac_versions.py --quick --out /tmp/v.json        # CPU smoke run (eager, tiny)
    python tools/bench_sac_versions.py --quick --engine compile --out /tmp/v.json  # CPU: the compiled variants
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from gta_rl.behaviour import ReplayBuffer, SACAgent, update_runner
from gta_rl.behaviour.config import S_BATCH
from gta_rl.behaviour.replay import COLUMNS
from gta_rl.checkpoint import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sac import agent_and_buffer, timed_rate  # noqa: E402

VARIANTS = ("current", "old-runner", "old-runner+columns", "old-runner+columns+f64-adam")


class OldUpdateRunner:
    """Reference copy of ``gta_rl.sac.UpdateRunner`` at af0b729^ (``step`` takes the sampling function)."""

    def __init__(self, agent: SACAgent, sample: Callable, batch_size: int, *, compile: bool = False,
                 cuda_graph: bool = False, warmup: int = 3) -> None:
        self.agent, self.sample, self.batch_size = agent, sample, batch_size
        self.fn = torch.compile(self.step, dynamic=False) if compile else self.step
        self.cuda_graph, self.warmup, self.runs = cuda_graph, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: Tensor | None = None

    def step(self) -> Tensor:
        batch = self.sample(self.agent.streams(self.agent.update_step), self.batch_size)
        return self.agent.update(batch["obs"], batch["act"], batch["rew"], batch["next_obs"], batch["term"])

    def __call__(self) -> Tensor:
        if not self.cuda_graph:
            return self.fn()
        if self.graph is not None:
            self.graph.replay()
            return self.out
        if self.runs < self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn()
            torch.cuda.current_stream().wait_stream(side)
            self.runs += 1
            return out
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = self.fn()
        self.graph.replay()
        return self.out


def column_sampler(buffer: ReplayBuffer) -> Callable:
    """The sampling of the five-column buffer: one contiguous tensor and one index kernel per column."""
    cols = {k: buffer.data[k][: buffer.capacity].contiguous() for k in COLUMNS}
    size_t = buffer.size_t

    def sample(rng, batch_size: int) -> dict[str, Tensor]:
        idx = (rng.bits(S_BATCH, (batch_size,))[0] * size_t) >> 32
        return {k: cols[k][idx] for k in COLUMNS}

    return sample


@torch.no_grad()
def f64_adam_step(self, grads: Sequence[Tensor]) -> None:
    """``gta_rl.optim.Adam.step`` before 96bfa9b: bias corrections as float64 powers of the float64 step."""
    lr = self.base_lr if self.schedule is None else self.base_lr * self.schedule(self.t)
    self.t.add_(1.0)
    grads = list(grads)
    torch._foreach_lerp_(self.m, grads, 1.0 - self.beta1)
    torch._foreach_mul_(self.v, self.beta2)
    torch._foreach_addcmul_(self.v, grads, grads, value=1.0 - self.beta2)
    bc1 = 1.0 - torch.pow(self.beta1, self.t)
    bc2 = 1.0 - torch.pow(self.beta2, self.t)
    denom = torch._foreach_sqrt(self.v)
    torch._foreach_div_(denom, torch.sqrt(bc2).to(self.params[0].dtype).reshape(()))
    torch._foreach_add_(denom, self.eps)
    update = torch._foreach_div(self.m, denom)
    torch._foreach_mul_(update, (lr / bc1).to(self.params[0].dtype).reshape(()))
    torch._foreach_sub_(self.params, update)


def build(variant: str, device: torch.device, batch: int, hidden: tuple[int, ...], rows: int, compile: bool,
          cuda_graph: bool) -> Callable[[], Tensor]:
    agent, buffer = agent_and_buffer(device, batch, hidden, rows)
    if variant == "current":
        return update_runner(agent, buffer, batch, compile=compile, cuda_graph=cuda_graph)
    if variant.endswith("+f64-adam"):
        for opt in agent.optimizers.values():
            opt.step = types.MethodType(f64_adam_step, opt)
    sample = column_sampler(buffer) if "+columns" in variant else buffer.sample
    return OldUpdateRunner(agent, sample, batch, compile=compile, cuda_graph=cuda_graph)


def run_rounds(runners: dict[str, Callable[[], Tensor]], device: torch.device, seconds: float,
               rounds: int) -> dict[str, list[float]]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            rates[name].append(timed_rate(runner, sync, seconds, name))
    return rates


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="CPU smoke run: eager, tiny networks")
    ap.add_argument("--engine", choices=("eager", "compile", "graph", "compile+graph"),
                    default=None, help="default: compile+graph on CUDA, eager on the CPU")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (the median is reported)")
    ap.add_argument("--seconds", type=float, default=2.0, help="per variant and round")
    ap.add_argument("--check-updates", type=int, default=6, help="updates compared with current before timing")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown or not variants:
        ap.error(f"unknown variants {unknown}: choose from {', '.join(VARIANTS)}")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    engine = args.engine or ("compile+graph" if device.type == "cuda" else "eager")
    if "graph" in engine and device.type != "cuda":
        ap.error(f"engine {engine} needs CUDA (it captures a CUDA graph)")
    batch, hidden, rows = (32, (32, 32), 1000) if args.quick else (256, (256, 256), 100_000)
    seconds, rounds = (0.05, 2) if args.quick else (args.seconds, args.rounds)
    if args.quick:
        torch.set_num_threads(1)
    options = {"compile": engine.startswith("compile"), "cuda_graph": engine.endswith("graph")}
    t_start = time.perf_counter()
    runners, checks, first = {}, {}, None
    for name in variants:  # built, compiled and captured one after another; the first updates are compared
        runner = build(name, device, batch, hidden, rows, **options)
        outs = [runner().clone() for _ in range(args.check_updates)]
        out = torch.stack(outs).cpu()
        first = out if first is None else first
        diff = float((out - first).abs().max())
        if not torch.allclose(out, first, rtol=1e-3, atol=1e-4):
            raise AssertionError(f"{name}: metrics of the first updates differ from {variants[0]}'s by {diff}")
        runners[name], checks[name] = runner, diff
    rates = run_rounds(runners, device, seconds, rounds)
    base = statistics.median(rates[variants[0]])
    rows_out = [{"variant": name, "updates_per_s": statistics.median(r), "rounds": r,
                 "vs_first": statistics.median(r) / base, "check_max_abs_diff": checks[name]}
                for name, r in rates.items()]
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "torch": torch.__version__, "engine": engine, "batch_size": batch, "hidden": list(hidden),
              "rounds": rounds, "seconds": seconds, "rows": rows_out, "wall_s": time.perf_counter() - t_start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"SAC update on {result['device']} ({engine}, batch {batch}, hidden {hidden}, torch {torch.__version__}), "
          f"median of {rounds} interleaved rounds, {result['wall_s']:.0f} s")
    print(f"{'variant':<30}{'updates/s':>11}{'vs ' + variants[0]:>16}{'check diff':>12}")
    for r in rows_out:
        print(f"{r['variant']:<30}{r['updates_per_s']:>11.1f}{r['vs_first']:>15.3f}x{r['check_max_abs_diff']:>12.1e}")
    return result


if __name__ == "__main__":
    main()
