"""Reweighted sampling of source windows for augmentation (GTA Sec. 4.4, appendix A.3, Eq. 13, Table 9).

Dense rewards (Eq. 13): the conditions y of all windows are cut into N_B equal-width bins; bin j gets the
mass

    v_j = |B_j| / (|B_j| + u) * exp(-|y_max - y_bj| / q)

with |B_j| the fraction of windows in bin j (normalised counts, as in the DDOM implementation the
paper follows, so that u = 0.001 damps bins holding less than ~0.1% of the data and empty bins get
nothing), y_bj the bin midpoint and y_max the largest y in the data. A bin is drawn with probability
proportional to v_j and a window uniformly inside it, i.e. window i has probability v_{b(i)} / n_{b(i)}.
y is the scaled condition (return x cond_scale), the unit in which q = 5 was chosen.

Optional clip (the authors' code, after DDOM): there the weight of a window in bin j is

    w_j = (v_j / sum_k v_k) / |B_j|

(the bin's normalised mass over its fraction of the windows: 1 for every window when sampling is
uniform, and v_{b(i)} / n_{b(i)} up to a constant, so unclipped it gives the probabilities above),
clipped to at most 5.0, and windows are then drawn with probability proportional to the clipped w_{b(i)}.
``clip`` reproduces this: it bounds w_j, the per-window weight BEFORE the final normalisation of the
window probabilities (after it, a window's probability relative to uniform sampling is
min(w_j, clip) / mean_i min(w_{b(i)}, clip), which may exceed ``clip``). The clip matters for sparse
high-return bins, whose w_j is large; None (default) means no clip. (The authors also add 1e-7 to
|B_j| in the denominator, a guard for empty bins that changes no weight of a non-empty bin measurably.)

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


def window_weights(y: np.ndarray, num_bins: int, u: float = 0.001, q: float = 5.0,
                   clip: float | None = None) -> np.ndarray:
    """Per-window weight w_{b(i)} = (v_j / sum_k v_k) / |B_j| [W] (1 under uniform sampling), clipped to at
    most ``clip`` when given (the authors' 5.0); not normalised."""
    if clip is not None and not clip > 0:
        raise DiffusionError(f"the reweighting clip must be positive, got {clip}")
    index, counts, v = bin_weights(y, num_bins, u, q)
    w = v[index] / v.sum() / counts[index]  # every bin that holds a window has counts > 0
    return w if clip is None else np.minimum(w, clip)


def binned_probabilities(y: np.ndarray, num_bins: int, u: float = 0.001, q: float = 5.0,
                         clip: float | None = None) -> np.ndarray:
    """Sampling probability of each window [W] under Eq. 13 (bin by v_j, then uniform inside), with the
    per-window weight clipped at ``clip`` before normalisation when given."""
    p = window_weights(y, num_bins, u, q, clip)
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
