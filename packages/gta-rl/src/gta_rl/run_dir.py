"""The run directory of gta-rl: what a training run writes and what `gta-rl evaluate`, `summary` and gta-eval
read (format: RUN_FORMAT.md beside this package's README).

    out/config.json               resolved run + algorithm config, env, dims, max_action
    out/checkpoint.safetensors    every seed's networks, targets, optimizer moments, step, state stats
    out/seed_<k>/metrics.jsonl    append-only per-seed log: train metrics and evaluations
    out/seed_<k>/{train,eval}.csv, out/tensorboard/, out/wandb/   copies of the logs (--log-to; optional)
    out/results.json              final and best normalized score of every seed (written at the end)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gta_data.accel.devices import resolve_device
from gta_data.jsonl import JsonlLog
from gta_data.metric_sinks import MetricSinks
from gta_rl.algorithms import ConfigError
from gta_rl.base import Agent
from gta_rl.checkpoint import load_checkpoint
from gta_rl.config import ResolvedRun, RunError
from gta_rl.run_eval import agent_with_stats

CHECKPOINT = "checkpoint.safetensors"


class RunStopped(Exception):
    """A run stopped by SIGINT or SIGTERM after writing its checkpoint; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_config(out: Path) -> dict[str, Any]:
    """A run directory's ``config.json``."""
    return json.loads((out / "config.json").read_text())


def check_out_dir(out: Path, resume: bool) -> bool:
    """Whether ``out`` may receive this run; True where it holds an earlier start that never reached its
    first checkpoint (to be cleared with :func:`clear_unstarted_run` once the new start is valid)."""
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a run directory")
    ckpt = out / CHECKPOINT
    if ckpt.exists() and not resume:
        raise RunError(f"{out} already holds a run (pass --resume to continue it, or choose another --out)")
    if resume and not ckpt.exists():
        raise RunError(f"nothing to resume in {out} (no {CHECKPOINT}; without --resume a run that never reached "
                       "its first checkpoint starts again)")
    if not resume and out.exists() and any(out.iterdir()):
        if not is_run_dir(out):
            raise RunError(f"{out} is not empty and holds no gta-rl run: choose another --out")
        if (out / "results.json").exists():
            raise RunError(f"{out} holds a finished run (results.json, no checkpoint): choose another --out")
        return True
    return False


def is_run_dir(out: Path) -> bool:
    """Whether ``out`` holds a gta-rl run (its config.json names an algorithm and the training stores)."""
    try:
        config = read_config(out)
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "algorithm" in config and "seeds" in config and "data" in config


def clear_unstarted_run(out: Path) -> None:
    """Remove what a run that never reached its first checkpoint wrote (its logs and config), nothing else."""
    for log in out.glob("seed_*/metrics.jsonl"):
        log.unlink()
    for name in ("results.json", "config.json"):
        (out / name).unlink(missing_ok=True)


class SeedLogs:
    """The per-seed JSONL logs (:class:`gta_data.jsonl.JsonlLog`), and their copies in the ``--log-to`` sinks
    (tag ``seed_<k>``)."""

    def __init__(self, out: Path, seeds: list[int], sinks: MetricSinks | None = None) -> None:
        self.logs = {s: JsonlLog(out / f"seed_{s}" / "metrics.jsonl") for s in seeds}
        self.sinks = sinks or MetricSinks(out, ())
        for log in self.logs.values():
            log.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int, drop_evals_at: int | None = None) -> None:
        """Drop records written after the checkpoint we resume from, and the evaluation of step
        ``drop_evals_at`` (one that ran in the background when the checkpoint was written): they will be
        written again."""
        for log in self.logs.values():
            log.truncate_after(step, drop=lambda r: r["kind"] == "eval" and r["step"] == drop_evals_at)
        self.sinks.rewind(step, {"eval": drop_evals_at} if drop_evals_at is not None else None)

    def write(self, per_seed: dict[int, dict[str, Any]]) -> None:
        for seed, record in per_seed.items():
            self.logs[seed].append(record)
            self.sinks.write(record["step"], record["kind"], record, tag=f"seed_{seed}")

    def close(self) -> None:
        self.sinks.close()


def summarize_history(run: ResolvedRun, history: dict[str, Any], step: int) -> dict[str, Any]:
    """A run's results document (``results.json``): every seed's final and best normalized score."""
    evals = history["evals"]
    per_seed = {}
    for i, seed in enumerate(run.seeds):
        scores = [e["scores"][i] for e in evals]
        per_seed[str(seed)] = {
            "final_score": scores[-1] if scores else None,
            "best_score": max(scores) if scores else None,
            "best_step": evals[int(np.argmax(scores))]["step"] if scores else None,
        }
        if evals and "targets" in evals[-1]:  # Decision Transformer: the final score of every target
            per_seed[str(seed)]["final_by_target"] = {t: v[i] for t, v in evals[-1]["targets"].items()}
    return {"algorithm": run.algorithm, "env_id": run.env_id, "data": list(run.config.data), "step": step,
            "seeds": per_seed}


def load_run(out: str | Path, device: str = "auto") -> tuple[ResolvedRun, Agent, dict]:
    """The run's resolved config, its agent restored from the checkpoint, and the checkpoint's metadata
    (``step``, ``history``)."""
    out = Path(out)
    if not (out / "config.json").exists() or not (out / CHECKPOINT).exists():
        raise RunError(f"{out} is not a gta-rl run directory (config.json and {CHECKPOINT} expected)")
    dev = resolve_device(device, RunError)
    try:
        run = ResolvedRun.from_json(read_config(out))
        agent = agent_with_stats(run, dev)
    except (ConfigError, RunError) as exc:
        raise RunError(f"{out}: {exc}") from None
    state, meta = load_checkpoint(out / CHECKPOINT, dev)
    agent.load_full_state_dict(state)
    return run, agent, meta
