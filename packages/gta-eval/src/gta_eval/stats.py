"""Run results, the paper's score tables and Welch's t-test (GTA Tables 1-2, appendix F.2, Table 20, Table 29).

What is read (the minimal contract with gta-rl, documented in the package README):

* a run directory holds ``config.json`` and ``seed_<k>/metrics.jsonl``; each JSONL line is an object
  like ``{"step": int, "normalized_score": float, ...}`` or, as gta-rl writes its evaluations,
  ``{"step": int, "kind": "eval", "score_mean": float, ...}``; the last such line is the seed's final
  evaluation, all of them form its learning curve. Labels come from ``config.json``: task (``task`` |
  ``dataset``; for a gta-rl run, which records its training stores under ``data``, the dataset name of
  the first store (provenance ``d4rl_name`` | ``dataset_id`` | ``recipe``, else its file name), so
  hopper-medium and hopper-medium-replay runs are two tasks; else ``env_id``), method (``augmentation`` |
  ``method``; for a gta-rl run the provenance ``method`` of its augmented stores, e.g. ``GTA``; default
  ``none``), algorithm (``algorithm`` | ``algo``), and optional ``mu``/``alpha`` (top level or under
  ``augmentation_config``/``gta``; for a gta-rl run on one GTA store, that store's ``augment`` settings)
  for the sensitivity heat map;
* or a plain per-seed file: CSV with columns ``seed,normalized_score`` (optional ``task``, ``method``,
  ``algorithm``), or JSON: ``{"seed_0": 51.2, ...}``, ``[{"seed": 0, "normalized_score": 51.2}, ...]``
  or ``{"task": ..., "method": ..., "algorithm": ..., "scores": {...} | [...]}``.

Tables: mean +- std over seeds per (algorithm, method) x task; the "average" column follows F.2: the
mean across tasks is taken per seed, and the std is that of these per-seed means (over the seeds every
task has). Standard deviations use ddof=1 (sample std), as the Welch test does. A (task, method,
algorithm) run with several (mu, alpha) settings is a sensitivity sweep (Table 29): it is left out of the
tables and tests, which have one cell per method, and listed in ``ScoreTable.sweeps``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gta_eval.errors import EvalError

_SEED_DIR = re.compile(r"^seed[_-]?(\d+)$")


@dataclass
class RunResult:
    """Final normalized scores (and learning curves) of one configuration over seeds."""

    task: str
    method: str
    algorithm: str
    scores: dict[int, float]  # seed -> final normalized score
    curves: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # seed -> (steps, scores)
    mu: float | None = None
    alpha: float | None = None
    source: str = ""

    @property
    def values(self) -> np.ndarray:
        return np.array([self.scores[k] for k in sorted(self.scores)], dtype=np.float64)


def _first(d: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if d.get(key) is not None:
            return d[key]
    return default


def _labels(config: dict[str, Any], fallback_task: str) -> dict[str, Any]:
    nested = {}
    for key in ("augmentation_config", "gta", "augment"):
        if isinstance(config.get(key), dict):
            nested = config[key]
    stores = _store_labels(config["data"]) if isinstance(config.get("data"), list) else {}  # a gta-rl run
    method = _first(config, "augmentation", "method", default=stores.get("method"))
    if method is None:
        method = "none"
    if isinstance(method, dict):
        nested = method
        method = _first(method, "name", "method", default="augmented")
    task = _first(config, "task", "dataset")
    if task is not None:
        task = Path(str(task)).name.removesuffix(".zarr") if "/" in str(task) else str(task)
    else:
        task = str(stores.get("task") or _first(config, "env_id", default=fallback_task))
    return {
        "task": task,
        "method": str(method),
        "algorithm": str(_first(config, "algorithm", "algo", default="unknown")),
        "mu": _float_or_none(_first(config, "mu", default=_first(nested, "mu", default=stores.get("mu")))),
        "alpha": _float_or_none(_first(config, "alpha", default=_first(nested, "alpha", default=stores.get("alpha")))),
    }


def _float_or_none(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def _read_jsonl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    steps, scores = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise EvalError(f"{path}:{lineno} is not valid JSON") from None
        if not isinstance(rec, dict):
            continue
        score = rec.get("normalized_score")
        if score is None and rec.get("kind") == "eval":
            score = rec.get("score_mean")  # gta-rl: mean normalized score of the evaluation episodes
        if score is not None:
            steps.append(int(rec.get("step", len(steps))))
            scores.append(float(score))
    return np.asarray(steps, dtype=np.int64), np.asarray(scores, dtype=np.float64)


def read_run_dir(path: str | Path, allow_unfinished: bool = False) -> RunResult:
    path = Path(path)
    config: dict[str, Any] = {}
    if (path / "config.json").is_file():
        try:
            config = json.loads((path / "config.json").read_text())
        except json.JSONDecodeError:
            raise EvalError(f"{path / 'config.json'} is not valid JSON") from None
    scores, curves = {}, {}
    for sub in sorted(path.iterdir()):
        m = _SEED_DIR.match(sub.name)
        if not (m and sub.is_dir() and (sub / "metrics.jsonl").is_file()):
            continue
        steps, vals = _read_jsonl(sub / "metrics.jsonl")
        if len(vals):
            seed = int(m.group(1))
            scores[seed], curves[seed] = float(vals[-1]), (steps, vals)
    if not scores:
        raise EvalError(f"{path} has no results (expected seed_<k>/metrics.jsonl lines with normalized_score, "
                        "or gta-rl evaluation lines with score_mean)")
    if isinstance(config.get("data"), list) and isinstance(config.get("seeds"), list) and not allow_unfinished:
        # a gta-rl run: finished when it wrote results.json, with every seed's evaluations
        try:
            done = json.loads((path / "results.json").read_text()).get("step") == config.get("steps", None) or (
                "steps" not in config)
        except (OSError, ValueError, AttributeError):
            done = False
        if not done or len(scores) < len(config["seeds"]):
            last = max(int(c[0][-1]) for c in curves.values())
            raise EvalError(f"{path} is an unfinished gta-rl run ({len(scores)} of {len(config['seeds'])} seeds "
                            f"evaluated, last at step {last} of {config.get('steps')}): resume it, or pass "
                            "--allow-unfinished")
    return RunResult(scores=scores, curves=curves, source=str(path), **_labels(config, path.name))


def _dataset_label(prov: dict[str, Any] | None) -> str | None:
    named = [prov.get(k) for k in ("d4rl_name", "dataset_id", "recipe")] if prov else []
    return next((str(v) for v in named if isinstance(v, str) and v), None)


def _store_labels(paths: list[Any]) -> dict[str, Any]:
    """Labels of a run trained on these stores (gta-rl's ``data``; by convention the first one is the original
    data). ``task``: the first store's dataset name (provenance ``d4rl_name``, ``dataset_id`` or ``recipe``,
    else its file name). ``method``: the provenance ``method`` of each augmented store (GTA, S4RL, SynthER),
    joined with '+', or ``none``; an augmented store that can no longer be opened is named by its file. A run
    on an augmented store alone has that store's method and its source store's dataset name.
    ``mu``/``alpha``: the ``augment`` settings of the augmented stores when exactly one setting is found."""
    from gta_data import StoreError, TrajectoryStore

    task, methods, settings = None, [], set()
    for i, p in enumerate(paths):
        try:
            prov = TrajectoryStore.open(p).provenance
        except (StoreError, OSError):
            prov = None
        if i == 0:
            task = _dataset_label(prov) or Path(str(p)).name.removesuffix(".zarr")
            if not (prov and prov.get("method")):
                continue
            # the run trained on an augmented store alone: its method counts, its task is its source's
            source = prov.get("source_store")
            try:
                task = (_dataset_label(TrajectoryStore.open(source).provenance) if source else None) or task
            except (StoreError, OSError):
                pass
        method = prov.get("method") if prov is not None else Path(str(p)).name.removesuffix(".zarr")
        if method:
            methods.append(str(method))
        augment = prov.get("augment") if prov is not None else None
        if isinstance(augment, dict) and augment.get("mu") is not None and augment.get("alpha") is not None:
            settings.add((float(augment["mu"]), float(augment["alpha"])))
    mu, alpha = next(iter(settings)) if len(settings) == 1 else (None, None)
    return {"task": task, "method": "+".join(dict.fromkeys(methods)) or "none", "mu": mu, "alpha": alpha}


def read_score_file(path: str | Path) -> list[RunResult]:
    """A plain CSV or JSON of per-seed final scores (see the module docstring)."""
    try:
        return _read_score_file(Path(path))
    except (ValueError, TypeError, KeyError) as exc:
        if isinstance(exc, EvalError):
            raise
        raise EvalError(f"{path}: a seed or score that is not a number ({type(exc).__name__}: {exc})") from None


def _read_score_file(path: Path) -> list[RunResult]:
    groups: dict[tuple[str, str, str], dict[int, float]] = defaultdict(dict)
    default = {"task": path.stem, "method": "none", "algorithm": "unknown"}
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "normalized_score" not in reader.fieldnames:
                raise EvalError(f"{path} needs a 'normalized_score' column (has {reader.fieldnames})")
            for i, row in enumerate(reader):
                key = tuple(row.get(k) or default[k] for k in ("task", "method", "algorithm"))
                seed = int(row["seed"]) if row.get("seed") not in (None, "") else i
                groups[key][seed] = float(row["normalized_score"])
    elif path.suffix.lower() == ".json":
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError:
            raise EvalError(f"{path} is not valid JSON") from None
        if isinstance(doc, dict) and "scores" in doc:
            default = {k: str(doc.get(k, v)) for k, v in default.items()}
            doc = doc["scores"]
        key = (default["task"], default["method"], default["algorithm"])
        if isinstance(doc, dict):
            for k, v in doc.items():
                m = _SEED_DIR.match(str(k)) or re.match(r"^(\d+)$", str(k))
                if m is None:
                    raise EvalError(f"{path}: key {k!r} is not a seed (seed_<k> or <k>)")
                groups[key][int(m.group(1))] = float(v)
        elif isinstance(doc, list):
            for i, v in enumerate(doc):
                if isinstance(v, dict):
                    groups[key][int(v.get("seed", i))] = float(v["normalized_score"])
                else:
                    groups[key][i] = float(v)
        else:
            raise EvalError(f"{path}: expected an object or a list of scores")
    else:
        raise EvalError(f"{path}: score files must be .csv or .json")
    if not groups or not any(groups.values()):
        raise EvalError(f"{path} has no results")
    return [RunResult(task=t, method=m, algorithm=a, scores=s, source=str(path)) for (t, m, a), s in groups.items()]


def load_results(paths: list[str | Path], allow_unfinished: bool = False) -> list[RunResult]:
    """Read run directories and score files; a directory without seed_* dirs is searched one level down
    (so ``runs/`` holding many run directories works as well as ``runs/*``). An unfinished gta-rl run is an
    error unless ``allow_unfinished``."""
    out: list[RunResult] = []
    for p in map(Path, paths):
        if not p.exists():
            raise EvalError(f"{p} does not exist")
        if p.is_file():
            out.extend(read_score_file(p))
        elif any(_SEED_DIR.match(c.name) for c in p.iterdir()):
            out.append(read_run_dir(p, allow_unfinished))
        else:
            subs = [c for c in sorted(p.iterdir()) if c.is_dir() and any(_SEED_DIR.match(s.name) for s in c.iterdir())]
            if not subs:
                raise EvalError(f"{p} has no results (no seed_<k>/metrics.jsonl in it or its subdirectories)")
            out.extend(read_run_dir(s, allow_unfinished) for s in subs)
    if not out:
        raise EvalError("no results given")
    return merge_results(out)


def merge_results(results: list[RunResult]) -> list[RunResult]:
    """Merge results of the same (task, method, algorithm, mu, alpha); a seed given twice is an error."""
    merged: dict[tuple, RunResult] = {}
    for r in results:
        key = (r.task, r.method, r.algorithm, r.mu, r.alpha)
        if key not in merged:
            merged[key] = RunResult(r.task, r.method, r.algorithm, dict(r.scores), dict(r.curves), r.mu, r.alpha, r.source)
            continue
        m = merged[key]
        dup = set(m.scores) & set(r.scores)
        if dup:
            raise EvalError(f"seed(s) {sorted(dup)} of {key[:3]} appear in both {m.source} and {r.source}")
        m.scores.update(r.scores)
        m.curves.update(r.curves)
    return list(merged.values())


# -- statistics ---------------------------------------------------------------------------------


def mean_std(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else float("nan")


@dataclass
class WelchResult:
    t: float
    df: float
    p_value: float  # two-sided
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int


def welch_t_test(a: np.ndarray, b: np.ndarray) -> WelchResult:
    """Welch's unequal-variance t-test (two-sided), t = (mean_a - mean_b) / sqrt(v_a/n_a + v_b/n_b) with
    Welch-Satterthwaite degrees of freedom; the p-value comes from scipy's Student t distribution."""
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        raise EvalError(f"Welch's t-test needs at least 2 samples per group (got {len(a)} and {len(b)})")
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        raise EvalError("Welch's t-test is undefined: both groups have zero variance")
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    p = 2.0 * stats.t.sf(abs(t), df)
    return WelchResult(float(t), float(df), float(p), float(a.mean()), float(b.mean()), len(a), len(b))


def per_seed_average(results: list[RunResult], tasks: list[str]) -> dict[int, float]:
    """F.2: for each seed present in every task, the mean score across tasks."""
    by_task = {r.task: r.scores for r in results}
    if any(t not in by_task for t in tasks):
        return {}
    seeds = set.intersection(*(set(by_task[t]) for t in tasks)) if tasks else set()
    return {s: float(np.mean([by_task[t][s] for t in tasks])) for s in sorted(seeds)}


@dataclass
class ScoreTable:
    tasks: list[str]
    rows: list[tuple[str, str]]  # (algorithm, method)
    cells: dict[tuple[str, str, str], tuple[float, float, int]]  # (algo, method, task) -> mean, std, n
    average: dict[tuple[str, str], tuple[float, float, int]]  # F.2 average column
    sweeps: list[tuple[str, str, str, int]] = field(default_factory=list)  # (task, method, algo, settings) left out

    def seeds_caption(self) -> str:
        """The table's statistic in words, e.g. 'mean ± std (ddof=1) over 8 seeds'."""
        counts = sorted({n for _, _, n in self.cells.values()} | {n for _, _, n in self.average.values()})
        seeds = (f"{counts[0]} seed" + ("s" if counts[0] != 1 else "") if len(counts) == 1
                 else f"{counts[0]}-{counts[-1]} seeds (each cell's count in scores.csv)")
        return f"mean ± std (ddof=1) over {seeds}"

    def to_markdown(self, digits: int = 2) -> str:
        def fmt(cell):
            if cell is None:
                return "-"
            m, s, _ = cell
            return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"

        head = "| algorithm | method | " + " | ".join(self.tasks) + " | average |"
        sep = "|" + "---|" * (len(self.tasks) + 3)
        lines = [f"Normalized score, {self.seeds_caption()}; average: the per-seed mean across tasks (GTA F.2).",
                 "", head, sep]
        for algo, method in self.rows:
            cells = [fmt(self.cells.get((algo, method, t))) for t in self.tasks]
            lines.append(f"| {algo} | {method} | " + " | ".join(cells) + f" | {fmt(self.average.get((algo, method)))} |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        lines = ["algorithm,method,task,mean,std_ddof1,seeds"]
        for (algo, method, task), (m, s, n) in sorted(self.cells.items()):
            lines.append(f"{algo},{method},{task},{m:.6g},{s:.6g},{n}")
        for (algo, method), (m, s, n) in sorted(self.average.items()):
            lines.append(f"{algo},{method},average,{m:.6g},{s:.6g},{n}")
        return "\n".join(lines) + "\n"


def main_runs(results: list[RunResult]) -> tuple[list[RunResult], list[tuple[str, str, str, int]]]:
    """The runs of the score tables and tests: one per (task, method, algorithm). Where a configuration was
    run with several (mu, alpha) settings (a Table 29 sweep), the one without recorded settings is taken if
    there is exactly one such, else the configuration is left out; the left-out ones are returned as
    (task, method, algorithm, number of settings)."""
    groups: dict[tuple[str, str, str], list[RunResult]] = defaultdict(list)
    for r in results:
        groups[(r.task, r.method, r.algorithm)].append(r)
    kept, sweeps = [], []
    for key, group in groups.items():
        if len(group) == 1:
            kept.extend(group)
            continue
        unset = [r for r in group if r.mu is None and r.alpha is None]
        if len(unset) == 1:
            kept.extend(unset)
        else:
            sweeps.append((*key, len(group)))
    return kept, sorted(sweeps)


def score_table(results: list[RunResult]) -> ScoreTable:
    """Tables 1-2: mean +- std over seeds; average column per F.2 (over seeds shared by all tasks)."""
    plain, sweeps = main_runs(results)
    tasks = sorted({r.task for r in plain})
    rows = sorted({(r.algorithm, r.method) for r in plain})
    cells, average = {}, {}
    for r in plain:
        m, s = mean_std(r.values)
        cells[(r.algorithm, r.method, r.task)] = (m, s, len(r.values))
    for algo, method in rows:
        group = [r for r in plain if (r.algorithm, r.method) == (algo, method)]
        per_seed = per_seed_average(group, tasks)
        if per_seed:
            m, s = mean_std(np.array(list(per_seed.values())))
            average[(algo, method)] = (m, s, len(per_seed))
    return ScoreTable(tasks, rows, cells, average, sweeps)


def compare_methods(results: list[RunResult], baseline: str | None = None) -> list[dict[str, Any]]:
    """Table 20: per algorithm, Welch's t-test of each method against the baseline method on the per-seed
    averages across tasks (F.2); also per task on the per-seed scores. Sweeps are left out (:func:`main_runs`)."""
    plain, _ = main_runs(results)
    out = []
    for algo in sorted({r.algorithm for r in plain}):
        group = [r for r in plain if r.algorithm == algo]
        methods = sorted({r.method for r in group})
        if len(methods) < 2:
            continue
        base = baseline if baseline is not None else ("none" if "none" in methods else methods[0])
        if base not in methods:
            raise EvalError(f"baseline method {base!r} has no runs for {algo} (methods: {', '.join(methods)})")
        tasks = sorted({r.task for r in group})
        for method in methods:
            if method == base:
                continue
            pairs = [("average", per_seed_average([r for r in group if r.method == method], tasks),
                      per_seed_average([r for r in group if r.method == base], tasks))]
            for task in tasks:
                a = [r for r in group if r.method == method and r.task == task]
                b = [r for r in group if r.method == base and r.task == task]
                if a and b:
                    pairs.append((task, a[0].scores, b[0].scores))
            for task, sa, sb in pairs:
                if len(sa) < 2 or len(sb) < 2:
                    continue
                try:
                    w = welch_t_test(np.array(list(sa.values())), np.array(list(sb.values())))
                except EvalError:
                    continue
                out.append({"algorithm": algo, "task": task, "method": method, "baseline": base,
                            "mean": w.mean_a, "baseline_mean": w.mean_b, "t": w.t, "df": w.df,
                            "p_value": w.p_value, "n": w.n_a, "baseline_n": w.n_b})
    return out


def sensitivity_grid(results: list[RunResult]) -> dict[tuple[str, str, str], tuple[list, list, np.ndarray]]:
    """Table 29: mean score on the mu x alpha grid, per (task, algorithm, method). NaN where missing."""
    out = {}
    keyed = [r for r in results if r.mu is not None and r.alpha is not None]
    for key in sorted({(r.task, r.algorithm, r.method) for r in keyed}):
        group = [r for r in keyed if (r.task, r.algorithm, r.method) == key]
        mus, alphas = sorted({r.mu for r in group}), sorted({r.alpha for r in group})
        if len(mus) * len(alphas) < 2:
            continue
        grid = np.full((len(mus), len(alphas)), np.nan)
        for r in group:
            grid[mus.index(r.mu), alphas.index(r.alpha)] = r.values.mean()
        out[key] = (mus, alphas, grid)
    return out
