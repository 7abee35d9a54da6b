"""Offline RL training runs: GTA's stage C (paper section 4.4; protocol of section 5.1 and appendix F).

One run trains S seeds of one algorithm at once on the union of one or more stores (original first,
then augmented), evaluates every ``eval_every`` steps, and keeps a self-describing run directory
(:mod:`gta_rl.run_dir`). Runs that differ only in their data -- the "arms" of a comparison: the original
data, original + GTA, original + S4RL, SynthER's samples -- train together as one stacked agent
(:func:`train_arms`): each member draws its batches from its own arm's data
(:class:`gta_rl.buffer.StackedData`) and each arm writes its own run directory, as it would alone
(:mod:`gta_rl.stack`).

Resume is exact: the random streams depend only on (seed, step), and the checkpoint holds all state
(and ``pending_eval``, the step whose background evaluation had not finished when it was written: a
resume evaluates that step again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from gta_data.accel.devices import resolve_device
from gta_data.stop import StopSignals
from gta_rl.algorithms import canonical_name
from gta_rl.config import ResolvedRun, RunConfig, RunError
from gta_rl.fast import MetricAccumulator, StepRunner
from gta_rl.kernels import fused_mlp
from gta_rl.run_dir import CHECKPOINT, RunStopped, check_out_dir, load_run, read_config
from gta_rl.run_eval import (
    BackgroundEvaluation,
    CpuPolicies,
    default_eval_episodes,
    evaluate_agent,
    make_evaluator,
)
from gta_rl.stack import Stack, open_stack

__all__ = ["CHECKPOINT", "CpuPolicies", "ResolvedRun", "RunConfig", "RunError", "RunStopped",
           "default_eval_episodes", "evaluate_agent", "load_run", "make_evaluator", "train", "train_arms"]

Progress = Callable[[int, int], None]
OnEvent = Callable[[str, int, dict[str, list[float]]], None]


def train(cfg: RunConfig, out: str | Path, *, resume: bool = False, stop_after: int | None = None,
          progress: Progress | None = None, on_event: OnEvent | None = None) -> dict[str, Any]:
    """Train (or resume) the run ``cfg`` in the run directory ``out``; returns its results document (each
    seed's final and best normalized score, as ``results.json``)::

        from gta_rl import RunConfig, train
        results = train(RunConfig("td3bc", data=["hopper-medium"], seeds="0-3"), "runs/hopper")

    ``stop_after`` ends the call after that many steps of this call (tests use it to simulate an
    interruption); ``progress`` and ``on_event`` as for :func:`train_arms`."""
    arms = {"": (cfg.data, Path(out))}
    return train_arms(cfg, arms, resume=resume, stop_after=stop_after, progress=progress, on_event=on_event)[""]


def train_arms(cfg: RunConfig, arms: dict[str, tuple[Sequence[str], str | Path]], *, resume: bool = False,
               stop_after: int | None = None, progress: Progress | None = None,
               on_event: OnEvent | None = None) -> dict[str, dict[str, Any]]:
    """Train (or resume) runs that differ only in their data as one stacked agent: arm ``name`` trains
    ``cfg.seeds`` on the stores ``arms[name][0]`` into the run directory ``arms[name][1]``, exactly as
    :func:`train` would alone (``cfg.data`` is ignored). Returns each arm's results document.

    ``progress(done, total)`` is called after every step; ``on_event(kind, step, values)`` once the run
    starts (``"start"``, the first step: > 0 on a resume, with the latest evaluation's ``score_mean`` per
    member if there is one), at every metric line (``"train"``, each metric's value per stacked member,
    arm after arm) and at every recorded evaluation (``"eval"``, ``score_mean`` per member)."""
    if not arms:
        raise RunError("no arms")
    cfg = resolve_steps(cfg, [out for _, out in arms.values()], resume)
    device = resolve_device(cfg.device, RunError)
    _check_execution(cfg, device, len(arms))
    outs = [Path(out) for _, out in arms.values()]
    if len({o.resolve() for o in outs}) != len(outs):
        raise RunError("each arm needs its own run directory")
    restarts = [check_out_dir(out, resume) for out in outs]
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    stack = open_stack(cfg, {name: (paths, out, restart) for (name, (paths, _)), out, restart
                             in zip(arms.items(), outs, restarts, strict=True)}, device, resume)
    start = stack.start(resume)  # from here on the run directories are written
    if on_event is not None:
        on_event("start", start, stack.latest_scores())
    t0 = time.perf_counter()
    end = _train_loop(cfg, stack, start, stop_after, progress, on_event)
    return stack.finish(end, time.perf_counter() - t0)


def resolve_steps(cfg: RunConfig, outs: Sequence[str | Path], resume: bool) -> RunConfig:
    """``cfg`` with its algorithm's defaults; a resume without ``steps`` runs to the total the run started with
    (recorded in its config.json), not to the default (IQL's actor schedule is built on that total)."""
    if resume and cfg.steps is None:
        saved = [Path(out) / "config.json" for out in outs if (Path(out) / "config.json").is_file()]
        if saved:
            cfg = replace(cfg, steps=int(read_config(saved[0].parent)["steps"]))
    return cfg.with_algorithm_defaults(canonical_name(cfg.algorithm))


def _check_execution(cfg: RunConfig, device: torch.device, num_arms: int) -> None:
    """The execution settings this device and algorithm allow (the values were checked by RunConfig)."""
    dt = cfg.algorithm == "dt"
    if cfg.cuda_graph and device.type != "cuda":
        raise RunError("--cuda-graph needs a CUDA device")
    if cfg.fullgraph and dt:
        raise RunError("--fullgraph is for the Q-learning algorithms; the DT's fast path compiles its forward (--compile)")
    if cfg.fused_mlp:
        if device.type != "cuda" or not fused_mlp.available():
            raise RunError("--fused-mlp needs a CUDA device and Triton (which torch's CUDA builds bring)")
        if dt:
            raise RunError("--fused-mlp is for the Q-learning algorithms' MLPs, not dt")
        if not cfg.bf16:
            raise RunError("--fused-mlp runs the --bf16 arithmetic of the networks in one kernel: add --bf16")
    if num_arms > 1 and dt:
        raise RunError("arms (several data configurations in one stack) are for the Q-learning algorithms, not dt")


def _train_loop(cfg: RunConfig, stack: Stack, start: int, stop_after: int | None, progress: Progress | None,
                on_event: OnEvent | None) -> int:
    """Steps ``start`` .. the end of this call with metric lines, evaluations and checkpoints on schedule;
    returns the step reached (short of ``cfg.steps`` after ``stop_after`` steps or a stop signal)."""
    agent = stack.agent
    compile_step = cfg.compile
    if cfg.algorithm == "dt" and cfg.compile:
        agent.compile_forward()  # the DT fast path compiles the transformer's forward only
        compile_step = False
    runner = StepRunner(agent, stack.data, cfg.batch_size, compile=compile_step, cuda_graph=cfg.cuda_graph,
                        fullgraph=cfg.fullgraph)
    metrics = MetricAccumulator()
    ckpt_every = cfg.checkpoint_every or cfg.eval_every or cfg.steps
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    evals = _Evaluations(cfg, stack, on_event)
    rate = _Rate(start)
    with StopSignals() as stop, evals, stack:
        evals.resume_at(start)
        for step in range(start, end):
            metrics.add(runner(step))
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                means, per_s = metrics.pop(), rate(done)
                stack.log_train(done, per_s, means)
                if on_event is not None:
                    on_event("train", done, {"updates_per_s": [per_s] * len(stack.run.seeds), **means})
                evals.collect(wait=False)  # a finished background evaluation is logged without waiting
            pending = None
            if evals.due(done):
                # In the background unless nothing is left to overlap with, or a CUDA graph is still to be
                # captured (a capture would record the evaluation's kernels too).
                pending = evals.evaluate(done, background=done < end and runner.captured)
            if done % ckpt_every == 0 or done == cfg.steps:
                if pending is None:
                    evals.collect()  # the checkpoint holds every evaluation up to its step
                # else: written now without this step's evaluation; a resume from it evaluates the step again
                stack.save(done, pending)
            if progress is not None:
                progress(done, cfg.steps)
            if stop.requested():  # SIGINT / SIGTERM: every arm's checkpoint at this step, then stop
                evals.collect()
                stack.save(done, None)
                if done < cfg.steps:
                    raise RunStopped(f"stopped by {stop.name} at step {done}: checkpoint written; continue "
                                     "with --resume", stop.exit_code)
                break
        evals.collect()
    return end


class _Rate:
    """Training steps per second since the previous metric line."""

    def __init__(self, step: int) -> None:
        self.step, self.time = step, time.perf_counter()

    def __call__(self, step: int) -> float:
        now = time.perf_counter()
        rate = (step - self.step) / max(now - self.time, 1e-9)
        self.step, self.time = step, now
        return rate


class _Evaluations:
    """The run's evaluations: in the foreground, or of a copy of the agent in a background thread while
    training goes on (``eval_overlap``; not the Decision Transformer's, whose rollouts keep context state),
    each recorded in every arm's history and logs once it is done."""

    def __init__(self, cfg: RunConfig, stack: Stack, on_event: OnEvent | None) -> None:
        self.cfg, self.stack, self.on_event = cfg, stack, on_event
        self.episodes = stack.run.config.eval_episodes
        self.evaluator = self.background = None

    def __enter__(self) -> _Evaluations:
        if self.episodes > 0:
            self.evaluator = make_evaluator(self.stack.run, self.episodes, self.cfg.eval_async)
            if self.cfg.eval_overlap and self.cfg.algorithm != "dt":
                self.background = BackgroundEvaluation(self.stack.new_agent(), self.evaluator, self.stack.run)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.evaluator is not None:
            self.evaluator.close()

    def resume_at(self, step: int) -> None:
        """Evaluate again the step whose evaluation the checkpoint was written without."""
        if self.evaluator is not None and self.stack.pending_at_start == step:
            self.record(step, evaluate_agent(self.stack.agent, self.evaluator, self.stack.run))

    def due(self, done: int) -> bool:
        every = self.cfg.eval_every
        return self.evaluator is not None and ((every and done % every == 0) or done == self.cfg.steps)

    def evaluate(self, step: int, background: bool) -> int | None:
        """Evaluate the agent after ``step``; the step if the evaluation runs on in the background."""
        self.collect()
        if self.background is not None and background:
            self.background.submit(self.stack.agent, step)
            return step
        self.record(step, evaluate_agent(self.stack.agent, self.evaluator, self.stack.run))
        return None

    def collect(self, wait: bool = True) -> None:
        """Record the background evaluation if one is out (``wait=False``: only if it has finished)."""
        if self.background is not None and (wait or self.background.finished()):
            done = self.background.collect()
            if done is not None:
                self.record(*done)

    def record(self, step: int, scores: dict[str, Any]) -> None:
        self.stack.log_eval(step, scores)
        if self.on_event is not None:
            self.on_event("eval", step, {"score_mean": list(scores["score_mean"])})
