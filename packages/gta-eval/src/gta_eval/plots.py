"""PNG plots of the GTA paper's analyses (matplotlib, Agg backend; nothing is shown on screen).

* ``reward_histograms``: Figure 8 / F.7, reward sums of sub-trajectories: original windows, generated
  rewards and oracle rewards of the generated segments.
* ``quality_chart``: a clear equivalent of Figure 5's relative radar chart: one panel per metric (oracle
  and generated reward against the original data's, dynamic MSE on a log axis as in F.4, novelty), a bar
  per augmented store.
* ``learning_curves``: normalized score over training steps, mean +- std (ddof=1) over seeds, one panel per task.
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


# (key, panel title, y-axis label, log scale)
_QUALITY_PANELS = [
    ("dynamic_mse", "dynamic MSE (lower is better)", "mean squared error of s', z-scored", True),
    ("novelty_state_action", "novelty of (s, a) (higher)", "mean l2 distance to nearest original", False),
    ("novelty_state", "novelty of s (higher)", "mean l2 distance to nearest original", False),
    ("novelty_action", "novelty of a (higher)", "mean l2 distance to nearest original", False),
]


def quality_chart(metrics: Mapping[str, Mapping[str, float]], path: str | Path, *, title: str = "") -> Path:
    """Figure 5's comparison as bar panels, one bar per augmented store (keys of ``metrics``, values
    quality.json dicts). The reward panel puts each store's oracle reward (the true reward of its (s, a))
    beside its generated reward, with the original data's reward as a dashed line; dynamic MSE is on a
    log axis. Every bar carries its value."""
    plt = _plt()
    names = list(metrics)
    panels = [p for p in _QUALITY_PANELS if any(m.get(p[0]) is not None for m in metrics.values())]
    fig, axes = plt.subplots(1, 1 + len(panels), figsize=(2.7 * (1 + len(panels)), 4.2), squeeze=False,
                             layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    x = np.arange(len(names))
    ax = axes[0][0]
    for offset, key, label, style in ((-0.2, "oracle_reward", "oracle (true) reward", {}),
                                      (0.2, "generated_reward", "generated reward",
                                       {"hatch": "//", "alpha": 0.45})):
        vals = [np.nan if metrics[n].get(key) is None else metrics[n][key] for n in names]
        bars = ax.bar(x + offset, vals, width=0.4, color=[colors[i % len(colors)] for i in x], label=label,
                      edgecolor="black", linewidth=0.5, **style)
        ax.bar_label(bars, fmt="%.3g", fontsize=7, rotation=90 if len(names) > 1 else 0, padding=2)
    originals = {metrics[n].get("original_reward") for n in names} - {None}
    if len(originals) == 1:
        ref = originals.pop()
        ax.axhline(ref, color="black", linestyle="--", linewidth=1, label=f"original data ({ref:.3g})")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_title("reward of the same (s, a)", fontsize=9)
    ax.set_ylabel("mean reward per transition", fontsize=8)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 if len(names) == 1 else -0.3),
              ncol=1, frameon=False)
    for ax, (key, label, ylabel, log) in zip(axes[0][1:], panels, strict=True):
        vals = [np.nan if metrics[n].get(key) is None else float(metrics[n][key]) for n in names]
        shown = [max(v, 1e-16) if log else v for v in vals]  # 0 has no place on a log axis; the label says 0
        bars = ax.bar(x, shown, width=0.6, color=[colors[i % len(colors)] for i in x], edgecolor="black",
                      linewidth=0.5)
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in vals], fontsize=7)
        if log:
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0.0)  # distances: 0 is a copy of the original data
        ax.set_title(label, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in axes[0]:
        ax.set_xticks(x, names, rotation=20 if len(names) > 1 else 0, ha="right" if len(names) > 1 else "center")
        ax.set_xlim(-0.8, len(names) - 0.2)
        ax.margins(y=0.15)
    fig.suptitle(title or "data quality (GTA Figure 5)")
    return _save(fig, path)


def learning_curves(curves: Mapping[str, Mapping[str, list[tuple[np.ndarray, np.ndarray]]]], path: str | Path) -> Path:
    """``curves[task][label]`` = list of (steps, scores) per seed; seeds are aligned on the steps they
    share, and plotted as mean +- sample std (ddof=1) over the seeds, the count in each legend entry."""
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
            m = ys.mean(0)
            sd = ys.std(0, ddof=1) if len(ys) > 1 else np.zeros_like(m)
            ax.plot(steps, m, label=f"{label} ({len(ys)} seed{'s' if len(ys) != 1 else ''})")
            ax.fill_between(steps, m - sd, m + sd, alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("gradient step")
        ax.set_ylabel("normalized score, mean ± std (ddof=1)")
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
