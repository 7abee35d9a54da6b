"""Mean +- std over seeds of run directories, as GTA appendix F.2 computes them.

Per run (one task): mean and standard deviation of the seeds' final scores. Over several runs (the
tasks of a table row), F.2 first averages each seed's final score across the tasks and then reports
the mean and the standard deviation of those per-seed averages; only seeds present in every run count.
The sample standard deviation (ddof=1), as gta-eval reports it, unless ``ddof`` says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gta_data.jsonl import read_jsonl


def read_scores(run_dir: str | Path, which: str = "final", allow_unfinished: bool = False) -> dict[str, Any]:
    """{'name', 'algorithm', 'env_id', 'scores': {seed: score}, 'finished'} from the per-seed logs. A run
    without results.json (stopped before its last step) or without scores for all its seeds is refused
    unless ``allow_unfinished``: its last evaluation is not a final score."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a gta-rl run directory (no config.json)")
    run = json.loads(config_path.read_text())
    scores: dict[int, float] = {}
    for seed in run["seeds"]:
        evals = [e for e in read_jsonl(run_dir / f"seed_{seed}" / "metrics.jsonl") if e.get("kind") == "eval"]
        if evals:
            values = [e["score_mean"] for e in evals]
            scores[int(seed)] = values[-1] if which == "final" else max(values)
    finished = _finished(run_dir, run) and len(scores) == len(run["seeds"])
    if not finished and not allow_unfinished:
        last = max((e["step"] for e in evals), default=0) if run["seeds"] else 0
        raise ValueError(f"{run_dir} is unfinished ({len(scores)} of {len(run['seeds'])} seeds evaluated, last at step "
                         f"{last} of {run.get('steps')}, no results.json): resume it, or pass --allow-unfinished")
    return {"name": run_dir.name, "algorithm": run["algorithm"], "env_id": run["env_id"], "scores": scores,
            "finished": finished}


def _finished(run_dir: Path, run: dict[str, Any]) -> bool:
    """results.json exists and was written at the run's last step (a run extended on resume is not)."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return "steps" not in run or results.get("step") == run["steps"]


def summarize(run_dirs: Sequence[str | Path], which: str = "final", ddof: int = 1,
              allow_unfinished: bool = False) -> dict[str, Any]:
    if ddof < 0:
        raise ValueError(f"ddof must be >= 0, got {ddof}")
    runs = [read_scores(d, which, allow_unfinished) for d in run_dirs]
    rows = []
    for r in runs:
        vals = np.array(list(r["scores"].values()), dtype=np.float64)
        rows.append({**r, "n": len(vals), "mean": float(vals.mean()) if len(vals) else float("nan"),
                     "std": float(vals.std(ddof=ddof)) if len(vals) > ddof else float("nan")})
    out: dict[str, Any] = {"rows": rows}
    if len(runs) > 1:
        common = sorted(set.intersection(*(set(r["scores"]) for r in runs)))
        per_seed = np.array([[r["scores"][s] for r in runs] for s in common], dtype=np.float64).reshape(len(common), -1)
        seed_means = per_seed.mean(1) if len(common) else np.zeros(0)
        out["average"] = {
            "seeds": common,
            "per_seed_mean": seed_means.tolist(),
            "mean": float(seed_means.mean()) if len(common) else float("nan"),
            "std": float(seed_means.std(ddof=ddof)) if len(common) > ddof else float("nan"),
        }
    return out
