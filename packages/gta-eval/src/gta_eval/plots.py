"""PNG plots of the GTA paper's analyses (matplotlib, Agg backend; nothing is shown on screen).

* ``reward_histograms``: Figure 8 / F.7, reward sums of sub-trajectories: original windows, generated
  rewards and oracle rewards of the generated segments.
* ``quality_chart``: a clear equivalent of Figure 5's relative radar chart: one panel per metric (oracle
  reward, novelty, log10 dynamic MSE as in F.4), a bar per dataset/method.
* ``learning_curves``: normalized score over training steps, mean +- std over seeds, one panel per task.
* ``sensitivity_heatmap``: Table 29's mu x alpha grid of mean scores.
* ``condition_scatter``: Figure 7 / F.6, conditioning value against generated return.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def reward_histograms(series: Mapping[str, np.ndarray], path: str | Path, *, title: str = "") -> Path:
    """Overlaid histograms (shared bins) of e.g. {"original": ..., "generated": ..., "oracle": ...}."""
    plt = _plt()
    data = {k: np.asarray(v, dtype=np.float64) for k, v in series.items() if len(v)}
    allv = np.concatenate(list(data.values())) if data else np.zeros(1)
    bins = np.linspace(allv.min(), allv.max() if np.ptp(allv) > 0 else allv.min() + 1.0, 60)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, v in data.items():
        ax.hist(v, bins=bins, alpha=0.45, density=True, label=f"{name} (mean {v.mean():.2f})")
    ax.set_xlabel("reward sum of sub-trajectory")
    ax.set_ylabel("density")
    ax.set_title(title or "reward distributions (GTA F.7)")
    ax.legend()
    return _save(fig, path)


def quality_chart(metrics: Mapping[str, Mapping[str, float]], path: str | Path, *, title: str = "") -> Path:
    """Per-metric panels comparing datasets/methods (keys of ``metrics``)."""
    plt = _plt()
    panels = [
        ("oracle_reward", "oracle reward (higher)", False),
        ("novelty_state_action", "novelty (s, a) (higher)", False),
        ("novelty_state", "novelty s (higher)", False),
        ("novelty_action", "novelty a (higher)", False),
        ("dynamic_mse", "log10 dynamic MSE (lower)", True),
    ]
    panels = [p for p in panels if any(m.get(p[0]) is not None for m in metrics.values())]
    names = list(metrics)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label, log) in zip(axes[0], panels, strict=True):
        vals = [metrics[n].get(key) for n in names]
        vals = [np.nan if v is None else (np.log10(max(v, 1e-12)) if log else v) for v in vals]
        ax.bar(range(len(names)), vals, color=[colors[i % len(colors)] for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_title(label, fontsize=9)
    fig.suptitle(title or "data quality (GTA Figure 5)")
    return _save(fig, path)


def learning_curves(curves: Mapping[str, Mapping[str, list[tuple[np.ndarray, np.ndarray]]]], path: str | Path) -> Path:
    """``curves[task][label]`` = list of (steps, scores) per seed; seeds are aligned on the steps they
    share, and plotted as mean +- std."""
    plt = _plt()
    tasks = list(curves)
    fig, axes = plt.subplots(1, max(1, len(tasks)), figsize=(4.5 * max(1, len(tasks)), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        for label, seeds in curves[task].items():
            common = set.intersection(*(set(s.tolist()) for s, _ in seeds))
            if not common:
                continue
            steps = np.array(sorted(common))
            ys = np.stack([np.interp(steps, s, v) for s, v in seeds])  # exact at shared steps
            m, sd = ys.mean(0), ys.std(0)
            ax.plot(steps, m, label=label)
            ax.fill_between(steps, m - sd, m + sd, alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("gradient step")
        ax.set_ylabel("normalized score")
        ax.legend(fontsize=7)
    return _save(fig, path)


def sensitivity_heatmap(mus: list[float], alphas: list[float], grid: np.ndarray, path: str | Path, *, title: str = "") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.1 * len(alphas) + 2, 0.7 * len(mus) + 1.6))
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(alphas)), [f"x{a:g}" for a in alphas])
    ax.set_yticks(range(len(mus)), [f"{m:g}" for m in mus])
    ax.set_xlabel("alpha (return multiplier)")
    ax.set_ylabel("mu (noise level)")
    for i in range(len(mus)):
        for j in range(len(alphas)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label="normalized score")
    ax.set_title(title or "sensitivity (GTA Table 29)")
    return _save(fig, path)


def condition_scatter(condition: np.ndarray, generated_return: np.ndarray, r: float, path: str | Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(condition, generated_return, s=4, alpha=0.4)
    ax.set_xlabel("conditioning value")
    ax.set_ylabel("generated return of segment")
    ax.set_title(f"controllability (GTA F.6): Pearson r = {r:.3f}")
    return _save(fig, path)
