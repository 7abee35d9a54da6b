"""Reweighted sampling: Eq. 13 bin masses and the sparse-task episode weighting (GTA A.3)."""

from __future__ import annotations

import numpy as np
import pytest

from gta_diffusion.errors import DiffusionError
from gta_diffusion.reweight import bin_weights, binned_probabilities, episode_probabilities, window_weights


def test_bin_weights_match_eq13_by_hand():
    y = np.array([0.0, 0.1, 0.2, 0.9, 1.0, 1.0, 4.0])  # 7 points, 4 bins of width 1 over [0, 4]
    index, counts, v = bin_weights(y, num_bins=4, u=0.001, q=5.0)
    assert index.tolist() == [0, 0, 0, 0, 1, 1, 3]
    frac = np.array([4, 2, 0, 1]) / 7
    mids = np.array([0.5, 1.5, 2.5, 3.5])
    expected = frac / (frac + 0.001) * np.exp(-np.abs(4.0 - mids) / 5.0)
    np.testing.assert_allclose(counts, frac)
    np.testing.assert_allclose(v, expected, rtol=1e-12)
    assert v[2] == 0.0  # an empty bin gets no mass


def test_binned_probabilities_bin_mass_then_uniform():
    y = np.concatenate([np.linspace(0.0, 0.9, 900), np.linspace(9.0, 10.0, 100)])  # bins of width 1
    p = binned_probabilities(y, num_bins=10, u=0.001, q=5.0)
    assert p.sum() == pytest.approx(1.0)
    _, _, v = bin_weights(y, 10, 0.001, 5.0)
    high = p[y >= 9].sum() / p[y < 1].sum()
    assert high == pytest.approx(v[9] / v[0])  # total mass of a bin is v_j, whatever its count
    assert high > 1  # the 10% high-return windows get most of the mass
    within = p[y < 1]
    np.testing.assert_allclose(within, within[0])  # uniform inside a bin (all in bin 0)


def test_clipped_window_weights_by_hand():
    """The authors' clip (at 5.0) bounds w_j = (v_j / sum_k v_k) / |B_j| before normalisation."""
    y = np.array([0.0] * 9 + [1.0])  # 2 bins of width 0.5: nine windows in bin 0 (mid 0.25), one in bin 1 (0.75)
    u, q = 0.001, 0.1
    v0 = 0.9 / (0.9 + u) * np.exp(-0.75 / q)
    v1 = 0.1 / (0.1 + u) * np.exp(-0.25 / q)
    w0, w1 = v0 / (v0 + v1) / 0.9, v1 / (v0 + v1) / 0.1  # ~0.0075 and ~9.93
    np.testing.assert_allclose(window_weights(y, 2, u, q), [w0] * 9 + [w1], rtol=1e-12)
    np.testing.assert_allclose(window_weights(y, 2, u, q, clip=5.0), [w0] * 9 + [5.0], rtol=1e-12)
    p = binned_probabilities(y, 2, u, q, clip=5.0)
    np.testing.assert_allclose(p, np.array([w0] * 9 + [5.0]) / (9 * w0 + 5.0), rtol=1e-12)
    assert p[-1] == pytest.approx(0.98667, abs=1e-5)  # 0.99325 without the clip
    # Unclipped (or clipped above every weight): Eq. 13's v_j / n_j, unchanged.
    np.testing.assert_allclose(binned_probabilities(y, 2, u, q, clip=10.0), binned_probabilities(y, 2, u, q))
    np.testing.assert_allclose(binned_probabilities(y, 2, u, q), np.array([v0 / 9] * 9 + [v1]) / (v0 + v1),
                               rtol=1e-12)
    with pytest.raises(DiffusionError, match="clip must be positive"):
        window_weights(y, 2, clip=0.0)


def test_episode_weighting_is_not_uniform():
    window_episode = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    success = np.array([False, True, False])
    p = episode_probabilities(window_episode, success, c=10.0)
    mass = np.bincount(window_episode, weights=p)
    np.testing.assert_allclose(mass, np.array([1, 10, 1]) / 12)  # episode mass: c for successful ones
    np.testing.assert_allclose(p[:4], p[0])  # uniform windows inside an episode
    assert not np.allclose(p, 1 / len(p))


def test_bad_reweighting_parameters():
    with pytest.raises(DiffusionError):
        bin_weights(np.zeros(3), num_bins=0)
    with pytest.raises(DiffusionError):
        episode_probabilities(np.zeros(3, int), np.array([True]), c=0.0)
    # Constant y: one bin holds everything, probabilities uniform and finite.
    p = binned_probabilities(np.ones(5), 3)
    np.testing.assert_allclose(p, 0.2)
