"""Report directories (markdown + JSON + CSV + PNG) for ``gta-eval quality`` and ``gta-eval compare``.

A report is built in a hidden temporary sibling and renamed into place when complete, so an
interrupted or failed run never leaves a half-written report at the target path.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gta_eval.errors import EvalError


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        return _jsonable(x.item())
    return x


# Files only `quality` and `compare` reports have (a gta-rl run directory also has a results.json).
REPORT_MARKERS = ("quality.json", "scores.md")


@contextmanager
def report_dir(out: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``out``."""
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise EvalError(f"{out} already exists and is not empty (pass --overwrite to replace it)")
    if out.exists() and not out.is_dir():
        raise EvalError(f"{out} is a file, not a report directory")
    if out.exists() and not _replaceable_report(out):
        raise EvalError(f"{out} is not a gta-eval report: --overwrite replaces reports only")
    if not out.parent.exists():
        raise EvalError(f"parent directory {out.parent} does not exist")
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists() and not _replaceable_report(out):  # checked again: something may have appeared meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        raise EvalError(f"{out} appeared while the report was made and is not a gta-eval report: not replaced")
    if out.exists():
        aside = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, aside)
        os.replace(tmp, out)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _replaceable_report(out: Path) -> bool:
    """An existing ``out`` that a report may replace: an empty folder or an earlier report."""
    return out.is_dir() and (not any(out.iterdir()) or any((out / m).is_file() for m in REPORT_MARKERS))


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def quality_markdown(m: dict[str, Any], images: list[str]) -> str:
    lines = [
        f"# Data quality: {Path(m['augmented']).name} vs {Path(m['original']).name}",
        "",
        f"Environment `{m['env_id']}`; {m['samples']:,} transitions sampled from {m['augmented_transitions']:,} "
        f"augmented ({m['augmented_segments']:,} segments); original has {m['original_transitions']:,}. "
        f"Seed {m['seed']}.",
        "",
        "| metric (GTA paper) | value |",
        "|---|---|",
        f"| dynamic MSE, z-scored, per element (Eq. 14) | {_fmt(m['dynamic_mse'])} (x1e-2: {_fmt(100 * m['dynamic_mse'])}) |",
        f"| oracle reward (D.3) | {_fmt(m['oracle_reward'])} |",
        f"| generated reward (same rows) | {_fmt(m['generated_reward'])} |",
        f"| mean abs(generated - oracle reward) | {_fmt(m['reward_abs_error'])} |",
        f"| original reward (Table 19 baseline) | {_fmt(m['original_reward'])} |",
        f"| novelty (s, a), mean l2 (Eq. 15, D.2) | {_fmt(m['novelty_state_action'])} |",
        f"| novelty s | {_fmt(m['novelty_state'])} |",
        f"| novelty a | {_fmt(m['novelty_action'])} |",
        f"| novelty (s, a), mean squared | {_fmt(m['novelty_state_action_sq'])} |",
        f"| terminal flag disagreement | {_fmt(m['terminal_disagreement'])} |",
        "",
        f"Oracle: {m['valid_samples']:,} of {m['samples']:,} sampled transitions with a usable outcome; flags: "
        + ", ".join(f"{k} {v:,}" for k, v in m["flags"].items())
        + ". Non-finite simulations and resampled goals are left out of dynamic MSE and oracle reward; states "
        "with a velocity at the observation's clip bound are stepped from the clipped velocity (as the authors' "
        "code does) and counted; out-of-range actions are stepped as the environment would.",
        "",
    ]
    lines += [f"**Warning**: {w}" for w in m.get("warnings", [])] + ([""] if m.get("warnings") else [])
    ex = m.get("exact_states")
    if ex and ex["samples"] < m["valid_samples"]:
        lines += [
            f"Over the {ex['samples']:,} sampled transitions whose state is exactly known (no clipped velocity): "
            f"dynamic MSE {_fmt(ex['dynamic_mse'])}, oracle reward {_fmt(ex['oracle_reward'])}, generated reward "
            f"{_fmt(ex['generated_reward'])}; original reward over the original data's "
            f"{ex['original_transitions']:,} such transitions {_fmt(ex['original_reward'])}.",
            "",
        ]
    seg = m.get("segment_reward_sums", {})
    if "horizon" in seg:
        lines += [
            f"Reward sums of sub-trajectories (F.7), horizon {seg['horizon']}, {seg['valid_segments']} of "
            f"{seg['segments']} segments: original {_fmt(seg['original_mean'])}, generated "
            f"{_fmt(seg['generated_mean'])}, oracle {_fmt(seg['oracle_mean'])}.",
            "",
        ]
    elif "note" in seg:
        lines += [seg["note"], ""]
    cc = m.get("condition_correlation", {})
    if "pearson_r" in cc:
        lines += [f"Conditioning value vs generated return (F.6): Pearson r = {cc['pearson_r']:.3f} "
                  f"(p = {cc['p_value']:.2g}, {cc['segments']} segments).", ""]
    elif "note" in cc:
        lines += [cc["note"] + ".", ""]
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def sweep_note(sweeps: list[tuple[str, str, str, int]]) -> str:
    """One line naming the (task, method, algorithm) configurations run with several (mu, alpha) settings."""
    if not sweeps:
        return ""
    names = ", ".join(f"{t} {a}/{m} ({n} settings)" for t, m, a, n in sweeps)
    return (f"Left out of the table and tests, as mu x alpha sweeps (see the sensitivity heat maps): {names}. "
            "Compare the run of the chosen setting alone to put it in the table.")


def compare_markdown(table_md: str, tests: list[dict[str, Any]], images: list[str], n_results: int,
                     sweeps: list[tuple[str, str, str, int]] = ()) -> str:
    lines = ["# Offline RL results", "", f"{n_results} configurations. Mean ± sample std over seeds; "
             "the average column is the per-seed mean across tasks, std over those means (GTA F.2).", "",
             table_md]
    if sweeps:
        lines += ["", sweep_note(list(sweeps)), ""]
    if tests:
        lines += ["## Welch's t-test (GTA Table 20)", "",
                  "| algorithm | task | method | baseline | mean | baseline mean | t | df | p |", "|---|" * 1 + "---|" * 8]
        for t in tests:
            lines.append(
                f"| {t['algorithm']} | {t['task']} | {t['method']} | {t['baseline']} | {t['mean']:.2f} | "
                f"{t['baseline_mean']:.2f} | {t['t']:.3f} | {t['df']:.1f} | {t['p_value']:.4f} |"
            )
        lines.append("")
    lines += [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def render_images(tmp: Path, makers: dict[str, Callable[[Path], Any]]) -> list[str]:
    done = []
    for name, make in makers.items():
        make(tmp / name)
        done.append(name)
    return done
