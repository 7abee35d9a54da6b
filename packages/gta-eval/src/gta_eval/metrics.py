"""Data-quality metrics of an augmented dataset against its original (GTA Eq. 11/14, 12/15, D.3, F.6).

* Dynamic MSE (Eq. 14): mean over transitions of the squared error between the generated next state
  s' and the true next state f*(s, a), both z-scored with the ORIGINAL data's per-dimension statistics
  (appendix D.1: "prior to error computation, we normalize each state"). We average over state
  dimensions too (a per-element MSE, comparable across environments of different obs_dim).
* Novelty (Eq. 15, D.2): distance from each generated (s, a) to its exact nearest neighbour in the
  original dataset, states and actions z-scored with the original statistics. Appendix D.2 calls it
  "the average l2 distance" while Eq. 15 writes the squared distance; we report both (``novelty_*`` is
  the mean l2 distance, ``novelty_*_sq`` the mean squared distance), for state, action and state-action.
* Oracle reward (D.3): mean of the true reward of the generated (s, a).
* Controllability (F.6): Pearson correlation between the conditioning value of each generated segment and
  its generated return (sum of the segment's rewards).

The nearest-neighbour search is exact and chunked: candidates come from the ||q||^2 - 2 q.r + ||r||^2
expansion in float32 (one matmul per chunk, on GPU when present), the best ``refine`` candidates per
query are re-scored with direct differences in float64, and queries whose candidates are too close to
call within the float32 error bound are searched again in float64 (a query that is in the reference
set gets exactly 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gta_eval.errors import EvalError


@dataclass(frozen=True)
class ZScore:
    """Per-dimension statistics of the original data; std is floored so constant dims do not explode."""

    mean: np.ndarray
    std: np.ndarray

    @staticmethod
    def fit(x: np.ndarray, eps: float = 1e-6) -> ZScore:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise EvalError(f"cannot fit z-score statistics to an array of shape {x.shape}")
        return ZScore(x.mean(axis=0), np.maximum(x.std(axis=0), eps))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std


def dynamic_mse(
    generated_next: np.ndarray, true_next: np.ndarray, zscore: ZScore, valid: np.ndarray | None = None
) -> float:
    """Eq. 14 on z-scored states, averaged over valid rows and over state dimensions."""
    err = (zscore(generated_next) - zscore(true_next)) ** 2  # [N, obs_dim]
    if valid is not None:
        err = err[np.asarray(valid, dtype=bool)]
    if len(err) == 0:
        raise EvalError("no valid transitions to compute the dynamic MSE on")
    return float(err.mean())


def _torch_device(device: str | None):
    from gta_data.accel.devices import resolve_device

    return resolve_device(device, EvalError)


def nearest_neighbor(
    query: np.ndarray,
    reference: np.ndarray,
    *,
    device: str | None = None,
    query_chunk: int = 4096,
    ref_chunk: int = 262_144,
    refine: int = 8,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest neighbour (Euclidean) of every query row in ``reference``.

    Returns (squared distance [Q] float64, index [Q] int64). Memory is bounded by
    query_chunk x ref_chunk floats on the device; the reference set is moved to the device once.
    Exactness: both sets are centred on the reference mean (shrinking the norms that the float32
    expansion cancels), the ``refine`` best candidates are re-scored in float64, and a query whose
    runner-up candidates lie within the float32 error bound of its best is searched again with the
    same expansion in float64 (centred data: its rounding is ~1e-16 of the norms) and re-scored.
    """
    import torch

    query = np.asarray(query)
    reference = np.asarray(reference)
    if query.ndim != 2 or reference.ndim != 2 or query.shape[1] != reference.shape[1]:
        raise EvalError(f"nearest_neighbor needs [Q, D] and [R, D] arrays, got {query.shape} and {reference.shape}")
    if len(reference) == 0:
        raise EvalError("empty reference set")
    dev = _torch_device(device)
    k = max(1, min(refine, len(reference)))
    center = torch.as_tensor(reference.mean(axis=0, dtype=np.float64), device=dev)  # [D]
    ref64 = torch.as_tensor(reference, dtype=torch.float64, device=dev) - center  # [R, D]
    ref = ref64.to(torch.float32)
    ref_sq = (ref * ref).sum(dim=1)  # [R]
    ref_sq_max = float(ref_sq.max())
    # Float32 error bound of |q|^2 - 2 q.r + |r|^2 (dot products of D terms, a few roundings each).
    gamma = (query.shape[1] + 4) * float(np.finfo(np.float32).eps)
    out_d = np.empty(len(query), dtype=np.float64)
    out_i = np.empty(len(query), dtype=np.int64)

    def candidates(q: torch.Tensor, r: torch.Tensor, r_sq: torch.Tensor):
        """The k smallest expanded distances of every row of q: ([B, k] values, [B, k] indices)."""
        q_sq = (q * q).sum(dim=1, keepdim=True)  # [B, 1]
        best_d = torch.full((len(q), k), float("inf"), dtype=q.dtype, device=dev)
        best_i = torch.zeros((len(q), k), dtype=torch.int64, device=dev)
        for r0 in range(0, len(r), ref_chunk):
            d = q_sq - 2.0 * (q @ r[r0 : r0 + ref_chunk].T) + r_sq[r0 : r0 + ref_chunk]  # [B, Rc]
            cd, ci = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False)
            best_d, sel = torch.topk(torch.cat([best_d, cd], 1), k, dim=1, largest=False)
            best_i = torch.gather(torch.cat([best_i, ci + r0], 1), 1, sel)
        return best_d, best_i

    def rescore(q64: torch.Tensor, idx: torch.Tensor):
        exact = ((ref64[idx] - q64[:, None, :]) ** 2).sum(dim=2)  # [B, k] float64, direct differences
        j = exact.argmin(dim=1, keepdim=True)
        return exact.gather(1, j)[:, 0], idx.gather(1, j)[:, 0]

    ref64_sq = None
    for q0 in range(0, len(query), query_chunk):
        q64 = torch.as_tensor(query[q0 : q0 + query_chunk], dtype=torch.float64, device=dev) - center  # [B, D]
        q = q64.to(torch.float32)
        best_d, best_i = candidates(q, ref, ref_sq)
        d_best, i_best = rescore(q64, best_i)
        if k < len(ref):
            # A reference row outside the candidates has approx distance >= best_d[:, -1], so its exact
            # distance is >= best_d[:, -1] - 2 * bound; if that could beat d_best, search again in float64.
            bound = gamma * 2.0 * ((q * q).sum(dim=1).double() + ref_sq_max)
            unsure = torch.nonzero(best_d[:, -1].double() - 2.0 * bound < d_best)[:, 0]
            if len(unsure):
                if ref64_sq is None:
                    ref64_sq = (ref64 * ref64).sum(dim=1)
                _, idx64 = candidates(q64[unsure], ref64, ref64_sq)
                d_best[unsure], i_best[unsure] = rescore(q64[unsure], idx64)
        out_d[q0 : q0 + len(q)] = d_best.cpu().numpy()
        out_i[q0 : q0 + len(q)] = i_best.cpu().numpy()
        if progress:
            progress(len(q))
    return out_d, out_i


@dataclass
class Novelty:
    state: float
    action: float
    state_action: float
    state_sq: float
    action_sq: float
    state_action_sq: float

    def as_dict(self) -> dict[str, float]:
        return {
            "novelty_state": self.state,
            "novelty_action": self.action,
            "novelty_state_action": self.state_action,
            "novelty_state_sq": self.state_sq,
            "novelty_action_sq": self.action_sq,
            "novelty_state_action_sq": self.state_action_sq,
        }


def novelty(
    gen_obs: np.ndarray,
    gen_act: np.ndarray,
    orig_obs: np.ndarray,
    orig_act: np.ndarray,
    *,
    obs_z: ZScore | None = None,
    act_z: ZScore | None = None,
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> Novelty:
    """Eq. 15 for state, action and state-action, z-scored with the original data's statistics."""
    obs_z = obs_z or ZScore.fit(orig_obs)
    act_z = act_z or ZScore.fit(orig_act)
    gs, ga = obs_z(gen_obs), act_z(gen_act)
    os_, oa = obs_z(orig_obs), act_z(orig_act)
    out = {}
    for name, q, r in (
        ("state", gs, os_),
        ("action", ga, oa),
        ("state_action", np.concatenate([gs, ga], 1), np.concatenate([os_, oa], 1)),
    ):
        d2, _ = nearest_neighbor(q, r, device=device, progress=progress)
        out[name] = float(np.sqrt(d2).mean())
        out[name + "_sq"] = float(d2.mean())
    return Novelty(**out)


def segment_returns(rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """Sum of rewards of each segment (float64)."""
    starts = np.concatenate([[0], np.asarray(episode_ends)[:-1]]).astype(np.int64)
    return np.add.reduceat(np.asarray(rewards, dtype=np.float64), starts)


def window_returns(rewards: np.ndarray, episode_ends: np.ndarray, horizon: int) -> np.ndarray:
    """Sum of rewards of every stride-1 window of ``horizon`` transitions inside an episode (F.7's
    "reward sum of subtrajectories" for the original data)."""
    from gta_data import window_starts

    starts = window_starts(np.asarray(episode_ends), horizon)
    csum = np.concatenate([[0.0], np.cumsum(np.asarray(rewards, dtype=np.float64))])
    return csum[starts + horizon] - csum[starts]


def condition_correlation(condition: np.ndarray, generated_return: np.ndarray) -> dict[str, float]:
    """F.6: Pearson r (and its p-value) between each segment's condition and its generated return."""
    from scipy import stats

    c = np.asarray(condition, dtype=np.float64).reshape(len(condition), -1)
    if c.shape[1] != 1:
        raise EvalError(f"meta/condition has {c.shape[1]} values per segment; expected one scalar")
    c = c[:, 0]
    g = np.asarray(generated_return, dtype=np.float64)
    if len(c) != len(g):
        raise EvalError(f"{len(c)} conditions for {len(g)} segments")
    if len(c) < 3:
        raise EvalError("need at least 3 segments for a correlation")
    if np.ptp(c) == 0 or np.ptp(g) == 0:
        raise EvalError("condition or generated return is constant: correlation undefined")
    res = stats.pearsonr(c, g)
    return {"pearson_r": float(res.statistic), "p_value": float(res.pvalue), "segments": int(len(c))}
