"""Reweighted sampling of source windows for augmentation (GTA Sec. 4.4, appendix A.3, Eq. 13, Table 9).

Dense rewards (Eq. 13): the conditions y of all windows are cut into N_B equal-width bins; bin j gets the
mass

    v_j = |B_j| / (|B_j| + u) * exp(-|y_max - y_bj| / q)

with |B_j| the fraction of windows in bin j (normalised counts, as in the DDOM implementation the
paper follows, so that u = 0.001 damps bins holding less than ~0.1% of the data and empty bins get
nothing), y_bj the bin midpoint and y_max the largest y in the data. A bin is drawn with probability
proportional to v_j and a window uniformly inside it, i.e. window i has probability v_{b(i)} / n_{b(i)}.
y is the scaled condition (return x cond_scale), the unit in which q = 5 was chosen.

Sparse rewards (A.3, last paragraph): episodes are drawn, successful ones (any positive reward) with
weight c and the others with weight 1, then a window uniformly inside the drawn episode: window i has
probability w_e / n_e. (The authors' code normalises these weights per window in a way that makes them
uniform again; here the episode mass really is c times larger, which a test checks.)
"""

from __future__ import annotations

import numpy as np

from gta_diffusion.errors import DiffusionError


def bin_weights(y: np.ndarray, num_bins: int, u: float = 0.001, q: float = 5.0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eq. 13. Returns (bin index of each y [W], normalised counts |B_j| [N_B], bin masses v_j [N_B])."""
    if num_bins < 1:
        raise DiffusionError(f"num_bins must be >= 1, got {num_bins}")
    if q <= 0 or u < 0:
        raise DiffusionError(f"need q > 0 and u >= 0, got q={q}, u={u}")
    y = np.asarray(y, dtype=np.float64)
    lo, hi = float(y.min()), float(y.max())
    width = (hi - lo) / num_bins if hi > lo else 1.0
    index = np.clip(((y - lo) / width).astype(np.int64), 0, num_bins - 1)  # y_max falls in the last bin
    counts = np.bincount(index, minlength=num_bins) / len(y)
    mids = lo + (np.arange(num_bins) + 0.5) * width
    v = counts / (counts + u) * np.exp(-np.abs(hi - mids) / q)
    return index, counts, v


def binned_probabilities(y: np.ndarray, num_bins: int, u: float = 0.001, q: float = 5.0) -> np.ndarray:
    """Sampling probability of each window [W] under Eq. 13 (bin by v_j, then uniform inside)."""
    index, counts, v = bin_weights(y, num_bins, u, q)
    n = np.bincount(index, minlength=num_bins)
    p = v[index] / n[index]
    return p / p.sum()


def episode_probabilities(window_episode: np.ndarray, episode_success: np.ndarray, c: float) -> np.ndarray:
    """Sparse-task variant: episode e drawn with weight c (successful) or 1, then a window uniformly inside.
    ``window_episode`` [W] is the episode of each window; episodes without windows get no mass."""
    if c <= 0:
        raise DiffusionError(f"success weight c must be positive, got {c}")
    window_episode = np.asarray(window_episode, dtype=np.int64)
    per_episode = np.bincount(window_episode, minlength=len(episode_success))
    w = np.where(np.asarray(episode_success, dtype=bool), float(c), 1.0)
    p = w[window_episode] / per_episode[window_episode]
    return p / p.sum()
