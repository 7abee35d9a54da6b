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


def _times(a: float | None, b: float | None) -> str:
    """How ``a`` reads against ``b``: '3x', '0.5x', 'the same as', or both values when the ratio says
    nothing (a zero or opposite signs)."""
    if a is None or b is None:
        return "-"
    if b == 0 or a * b <= 0:
        return f"{_fmt(a)} against"
    r = a / b
    return "the same as" if abs(r - 1) < 0.005 else f"{r:.3g}x"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def quality_reading(m: dict[str, Any]) -> list[str]:
    """The numbers of a quality report in words, one bullet each."""
    n = m["samples"]
    flags = m["flags"]
    mse = m["dynamic_mse"]
    out_of_range = flags.get("action_out_of_range", 0)
    lines = [
        f"- **Dynamics**: the generated next states are off the true ones by {math.sqrt(mse):.2g} of the original "
        f"data's standard deviation per state dimension (root of the dynamic MSE {_fmt(mse)}).",
        f"- **Reward labels**: the generated reward is {_times(m['generated_reward'], m['oracle_reward'])} the "
        f"oracle's, the true reward of the same (s, a) ({_fmt(m['generated_reward'])} against "
        f"{_fmt(m['oracle_reward'])}; mean absolute error {_fmt(m['reward_abs_error'])}).",
        f"- **Better data?** The true reward of the generated transitions is "
        f"{_times(m['oracle_reward'], m['original_reward'])} the original data's ({_fmt(m['oracle_reward'])} "
        f"against {_fmt(m['original_reward'])}).",
        (f"- **Actions**: {_pct(out_of_range / n)} of the sampled generated actions lie outside the action "
         "bounds; the environment clips them, so what acts is not the stored action." if out_of_range else
         "- **Actions**: every sampled generated action lies within the action bounds."),
        f"- **Novelty**: a generated (s, a) lies {_fmt(m['novelty_state_action'])} (l2, in the original data's "
        "standard deviations per dimension) from its nearest original (s, a) on average; 0 would be a copy.",
        f"- **Terminals**: {_pct(m['terminal_disagreement'])} of the generated terminal flags disagree with the "
        "environment's.",
    ]
    if flags.get("clipped_state"):
        wc = m["with_clipped_states"]
        lines.append(
            f"- **Clipped velocities**: {_pct(flags['clipped_state'] / n)} of the sampled states have a velocity "
            "at the observation's clip bound (+-10), so their true state is unknown and the numbers above leave "
            "them out. Stepped from the clipped velocity (as the authors' code does) and counted, they give a "
            f"dynamic MSE of {_fmt(wc['dynamic_mse'])} and an oracle reward of {_fmt(wc['oracle_reward'])} "
            f"against the original data's {_fmt(wc['original_reward'])} over all its rows.")
    return lines


def quality_markdown(m: dict[str, Any], images: list[str]) -> str:
    wc = m["with_clipped_states"]
    both = m["exact_samples"] < m["valid_samples"]

    def row(name: str, key: str, scale: float = 1.0) -> str:
        cells = [_fmt(None if m[key] is None else scale * m[key])]
        if both:
            cells.append(_fmt(None if wc[key] is None else scale * wc[key]))
        return f"| {name} | " + " | ".join(cells) + " |"

    head = ("| metric (GTA paper) | exactly known states | with clipped states |\n|---|---|---|" if both
            else "| metric (GTA paper) | value |\n|---|---|")
    lines = [
        f"# Data quality: {Path(m['augmented']).name} vs {Path(m['original']).name}",
        "",
        f"Environment `{m['env_id']}`; {m['samples']:,} transitions sampled from {m['augmented_transitions']:,} "
        f"augmented ({m['augmented_segments']:,} segments); original has {m['original_transitions']:,}. "
        f"Seed {m['seed']}.",
        "",
    ]
    lines += [f"**Warning**: {w}" for w in m.get("warnings", [])] + ([""] if m.get("warnings") else [])
    lines += ["## What the numbers say", "", *quality_reading(m), "", "## Metrics", "", head,
              row("dynamic MSE, z-scored, per element (Eq. 14)", "dynamic_mse"),
              row("dynamic MSE x1e-2 (the paper's unit)", "dynamic_mse", 100.0),
              row("oracle reward (D.3)", "oracle_reward"),
              row("generated reward (same rows)", "generated_reward"),
              row("mean abs(generated - oracle reward)", "reward_abs_error"),
              row("original reward (Table 19 baseline)", "original_reward"),
              row("terminal flag disagreement", "terminal_disagreement"),
              f"| sampled transitions counted | {m['exact_samples']:,}" + (f" | {wc['samples']:,}" if both else "")
              + " |",
              f"| original transitions of the baseline | {m['original_exact_transitions']:,}"
              + (f" | {wc['original_transitions']:,}" if both else "") + " |",
              f"| novelty (s, a), mean l2 (Eq. 15, D.2) | {_fmt(m['novelty_state_action'])}" + (" | |" if both else " |"),
              f"| novelty s | {_fmt(m['novelty_state'])}" + (" | |" if both else " |"),
              f"| novelty a | {_fmt(m['novelty_action'])}" + (" | |" if both else " |"),
              f"| novelty (s, a), mean squared | {_fmt(m['novelty_state_action_sq'])}" + (" | |" if both else " |"),
              "",
              f"Oracle: {m['valid_samples']:,} of {m['samples']:,} sampled transitions with a usable outcome, "
              f"{m['exact_samples']:,} of them with an exactly known state; flags: "
              + ", ".join(f"{k} {v:,}" for k, v in m["flags"].items())
              + ". Non-finite simulations and resampled goals are left out of every oracle metric; states with a "
              "velocity at the observation's clip bound (Hopper, Walker2d) are left out of the headline and "
              "stepped from the clipped velocity in the 'with clipped states' version; out-of-range actions are "
              "stepped as the environment would. Novelty uses every sampled row.",
              ""]
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
    lines = ["# Offline RL results", "", f"{n_results} configurations. Sample std (ddof=1) everywhere; "
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
