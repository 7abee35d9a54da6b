"""S4RL baseline (GTA appendix C.1; Sinha et al. 2022): states plus zero-mean Gaussian noise.

s~_t = s_t + eps with sigma = 3e-4 (GTA C.1, "following the original paper"; sigma is the standard
deviation). The offline RL algorithms see z-scored states, and the authors' code adds the noise to those
(``corl/shared/buffer.py``: augmentation after the state normaliser), so by default (``scale="state_std"``)
sigma is in z-scored units: eps_i ~ N(0, (sigma (std_i + 1e-3))^2) in raw units, std_i the source
observations' std of dimension i and 1e-3 CORL's normaliser epsilon. ``scale="absolute"``: eps ~
N(0, sigma^2 I) in raw units. Actions, rewards, terminals and timeouts are copied unchanged.

Next states. C.1 only says "add noise to input states"; a transition has two states and a trajectory
shares them (s'_t is s_{t+1}). We draw ONE noise vector per state of a trajectory: eps_t perturbs both
s_t (as the state of transition t) and s'_{t-1} (as the next state of transition t-1). Seen from a
single transition, s and s' get independent N(0, sigma^2 I) noise -- the S4RL reading that every state
the Q-function sees is an independently perturbed observation -- and, across transitions, an augmented
segment is still a trajectory (s'_t = s_{t+1} wherever the source has it), so window and sequence
consumers (GTA windows, Decision Transformer, dynamic MSE) see consistent data. The alternative of the
same eps on s and s' of one transition would keep s' - s exact but break s'_t = s_{t+1}.

Upsampling to any size. The output is made of passes over the source episodes, each pass in a fresh
seeded random order of episodes; the last pass is cut when ``num_transitions`` is reached (the cut
segment ends with a timeout, never with a terminal it does not have). Every output segment is one
(possibly cut) source episode and has its own seed ``seed * 2**32 + segment index`` from which all its
noise derives, so a segment's noise does not depend on how the run is chunked. Per-segment metadata:
``source_start`` (first source row), ``seed``; run-level provenance: method, sigma, seed, source store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gta_data import StoreWriter, TrajectoryStore, Transitions
from gta_diffusion._version import __version__
from gta_diffusion.augmentation import check_output_store
from gta_diffusion.errors import DiffusionError

__all__ = ["S4RLConfig", "segment_plan", "noisy_segment", "augment_s4rl"]


SCALES = ("state_std", "absolute")
STD_EPS = 1e-3  # CORL's state normaliser: (s - mean) / (std + 1e-3)


@dataclass(frozen=True)
class S4RLConfig:
    sigma: float = 3e-4  # std of the state noise (GTA C.1 / S4RL: 0.0003), in units of ``scale``
    num_transitions: int = 5_000_000  # output size (GTA Sec. 5: 5M augmented transitions per method)
    seed: int = 0  # run seed: episode order of each pass and the per-segment noise seeds
    scale: str = "state_std"  # state_std: sigma in z-scored units, as the authors' code; absolute: raw units

    def check(self) -> None:
        if not (np.isfinite(self.sigma) and self.sigma > 0):
            raise DiffusionError(f"sigma must be a positive number, got {self.sigma}")
        if self.scale not in SCALES:
            raise DiffusionError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if int(self.num_transitions) != self.num_transitions or self.num_transitions < 1:
            raise DiffusionError(f"num_transitions must be a positive integer, got {self.num_transitions}")
        if int(self.seed) != self.seed or not (0 <= self.seed < 2**31):
            raise DiffusionError(f"seed must be an integer in [0, 2**31), got {self.seed}")


def segment_plan(episode_ends: np.ndarray, num_transitions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Source rows ``[start, stop)`` of each output segment ([S] int64 each), ``num_transitions`` in total.

    Pass p visits every source episode once in the order ``default_rng([seed, p]).permutation``; the last
    segment is cut to hit the requested total exactly."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    total = int(ends[-1])
    full, rest = divmod(int(num_transitions), total)
    seg_starts, seg_stops = [], []
    for p in range(full + (rest > 0)):
        order = np.random.default_rng([seed, p]).permutation(len(ends))
        s, e = starts[order], ends[order]
        if p == full:  # the partial pass: whole episodes while they fit, then one cut episode
            fit = int(np.searchsorted(np.cumsum(e - s), rest, side="left"))
            used = int((e[:fit] - s[:fit]).sum())
            s, e = s[: fit + 1].copy(), e[: fit + 1].copy()
            e[fit] = s[fit] + (rest - used)
        seg_starts.append(s)
        seg_stops.append(e)
    return np.concatenate(seg_starts), np.concatenate(seg_stops)


def segment_seed(seed: int, index: int) -> int:
    """Seed of output segment ``index``: seed * 2**32 + index (as GTA's per-window seeds)."""
    return (int(seed) << 32) + int(index)


def noise_std(data: Transitions, cfg: S4RLConfig) -> np.ndarray:
    """[obs_dim] float64: the raw-unit std of the noise on each state dimension."""
    if cfg.scale == "absolute":
        return np.full(data.obs_dim, float(cfg.sigma))
    return cfg.sigma * (data.observations.astype(np.float64).std(0) + STD_EPS)


def noisy_segment(data: Transitions, start: int, stop: int, sigma: float | np.ndarray, seg_seed: int,
                  episode_end: bool) -> Transitions:
    """Source rows [start, stop) with noisy states: one N(0, diag(sigma^2)) vector per state of the segment
    (L transitions have L + 1 states; ``sigma`` a scalar or one std per dimension), shared between s'_t and
    s_{t+1}. ``episode_end`` False marks a cut segment: its last step becomes a timeout (segment end) and is
    never terminal."""
    src = data.slice(start, stop)
    length = stop - start
    eps = np.random.default_rng(seg_seed).standard_normal((length + 1, data.obs_dim))  # [L+1, obs] float64
    eps *= sigma
    # Added in float64 and rounded to float32 once, so the only error is one float32 rounding of s~.
    obs = (src.observations.astype(np.float64) + eps[:-1]).astype(np.float32)
    nxt = (src.next_observations.astype(np.float64) + eps[1:]).astype(np.float32)
    terminals, timeouts = src.terminals.copy(), src.timeouts.copy()
    if not episode_end:
        terminals[-1] = False
        timeouts[-1] = True
    return Transitions(observations=obs, actions=src.actions, rewards=src.rewards, next_observations=nxt,
                       terminals=terminals, timeouts=timeouts, extras=src.extras)


def _segments(data: Transitions, episode_ends: np.ndarray, cfg: S4RLConfig
              ) -> Iterator[tuple[Transitions, int, int]]:
    seg_starts, seg_stops = segment_plan(episode_ends, cfg.num_transitions, cfg.seed)
    is_end = np.isin(seg_stops, episode_ends)
    std = noise_std(data, cfg)
    for k, (a, b) in enumerate(zip(seg_starts.tolist(), seg_stops.tolist(), strict=True)):
        seed_k = segment_seed(cfg.seed, k)
        yield noisy_segment(data, a, b, std, seed_k, bool(is_end[k])), a, seed_k


def augment_s4rl(data_path: str | Path, out_path: str | Path, cfg: S4RLConfig, *, overwrite: bool = False,
                 progress: Callable[[int], None] | None = None) -> TrajectoryStore:
    """Write ``cfg.num_transitions`` S4RL transitions made from the store ``data_path`` to ``out_path``
    (atomically: nothing appears at ``out_path`` if anything fails)."""
    cfg.check()
    out_path = check_output_store(out_path, overwrite=overwrite, source=data_path)
    store = TrajectoryStore.open(data_path)
    data = store.load(names=())  # no extras: e.g. a source's returns-to-go would not describe the new segments
    lo, hi = store.ref_scores or (None, None)
    provenance: dict[str, Any] = {
        "producer": f"gta-diffusion {__version__}",
        "method": "S4RL",
        "s4rl": asdict(cfg),
        "noise": "one Gaussian vector per state, shared by s'_t and s_{t+1}; actions/rewards unchanged",
        "noise_std": noise_std(data, cfg).tolist(),  # raw units, per state dimension
        "source_store": str(Path(data_path).resolve()),
        "source_env_id": store.env_id,
        "source_transitions": store.num_transitions,
    }
    with StoreWriter(out_path, env_id=store.env_id, obs_dim=store.obs_dim, act_dim=store.act_dim,
                     ref_min_score=lo, ref_max_score=hi, provenance=provenance,
                     observation_layout=store.attrs.get("observation_layout"), overwrite=overwrite) as writer:
        for seg, source_start, seed_k in _segments(data, store.episode_ends, cfg):
            writer.add_episode(seg, source_start=np.int64(source_start), seed=np.int64(seed_k))
            if progress is not None:
                progress(len(seg))
    return TrajectoryStore.open(out_path)
