"""The PNGs a person reads: labelled axes, titles that do not collide, no empty bars, readable log ticks,
and the spread the tables use (sample std, ddof=1)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from gta_eval import plots


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Run a plot function and return its drawn figure instead of only the PNG."""
    figs = []

    def keep(fig, path):
        fig.canvas.draw()
        figs.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)

    def run(make, *args, **kwargs):
        make(*args, tmp_path / "x.png", **kwargs)
        return figs[-1]

    return run


def _report(mse, reward, generated, novelty):
    return {"dynamic_mse": mse, "oracle_reward": reward, "generated_reward": generated, "original_reward": 1.0,
            "novelty_state_action": novelty, "novelty_state": novelty, "novelty_action": 0.0}


def test_quality_chart_is_readable(drawn):
    fig = drawn(plots.quality_chart, {"s4rl": _report(3e-2, 1.1, 1.2, 0.4), "gta": _report(4e-4, 1.3, 3.9, 0.9)},
                title="Hopper-v5")
    axes = fig.axes
    assert len(axes) == 5
    assert all(ax.get_ylabel() for ax in axes), [ax.get_title() for ax in axes if not ax.get_ylabel()]
    boxes = [ax.title.get_window_extent() for ax in axes] + [fig._suptitle.get_window_extent()]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), "titles overlap"
    for ax in axes:  # every bar drawn: no store without a value in a panel
        heights = [p.get_height() for p in ax.patches]
        assert heights and np.isfinite(heights).all(), ax.get_title()
    reward, mse = axes[0], axes[1]
    assert [p.get_height() for p in reward.patches] == pytest.approx([1.1, 1.3, 1.2, 3.9])
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 1.0 for line in reward.get_lines())
    assert mse.get_yscale() == "log"
    below_one = [t.get_text() for loc, t in zip(mse.get_yticks(), mse.get_yticklabels(), strict=True)
                 if loc < 1 and t.get_text()]
    assert len(below_one) >= 2 and all("-" in t or "\N{MINUS SIGN}" in t for t in below_one), below_one


def test_learning_curves_use_the_sample_std(drawn):
    steps = np.array([1000, 2000])
    fig = drawn(plots.learning_curves, {"hopper-medium": {"td3bc/gta": [(steps, np.zeros(2)), (steps, 2 * np.ones(2))]}})
    ax = fig.axes[0]
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(1 - np.sqrt(2)) and band.max() == pytest.approx(1 + np.sqrt(2))
    assert "ddof=1" in ax.get_ylabel() and "2 seeds" in ax.get_legend().get_texts()[0].get_text()
