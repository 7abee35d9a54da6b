"""Sequences of (return-to-go, state, action) for the Decision Transformer (GTA appendix E.4, Eq. 16-17).

Original episodes get the usual undiscounted return-to-go R_t = sum_{k>=t} r_k (gamma 1) and their
in-episode timestep. A generated segment of an augmented store (one "episode" per GTA window, with
``meta/source_start`` = row of its first transition in the source store) is relabelled as Eq. 17 says:
its first return-to-go is the ORIGINAL data's R_t at ``source_start`` (to the end of the source
episode), and each later one subtracts the generated rewards,

    R'_0 = R_t,   R'_j = R_t - sum_{k<j} r'_k,

and its timesteps continue from the source window's (source_start - source episode start + j).
Transition-level stores (SynthER) have no sequences and are refused.

Sequences are sampled as CORL does: an episode with probability proportional to its length, then a
uniform start inside it, which is the same as a uniform start row over the union of all stores. A
sequence that runs past the end of its episode is padded (at its end, as CORL's ``pad_along_axis``)
and the padded steps are masked out of the loss; with a causal mask no real token attends to them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gta_data import StoreError, TrajectoryStore, Transitions
from gta_rl.buffer import STD_EPS, OfflineData, open_stores


@dataclass
class SequenceBatch:
    """K-step sequences per seed."""

    states: Tensor  # [S, B, K, obs] z-scored
    actions: Tensor  # [S, B, K, act]
    returns_to_go: Tensor  # [S, B, K] scaled by the return scale
    timesteps: Tensor  # [S, B, K] int64
    mask: Tensor  # [S, B, K] float, 1 for real steps, 0 for padding


def returns_to_go(rewards: np.ndarray, episode_ends: np.ndarray) -> np.ndarray:
    """Undiscounted return-to-go of every row within its episode, float64 [N]."""
    r = np.asarray(rewards, dtype=np.float64)
    out = np.empty_like(r)
    start = 0
    for end in np.asarray(episode_ends, dtype=np.int64).tolist():
        out[start:end] = np.cumsum(r[start:end][::-1])[::-1]
        start = end
    return out


def episode_timesteps(episode_ends: np.ndarray) -> np.ndarray:
    """Index of every row within its episode, int64 [N]."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    n = int(ends[-1]) if len(ends) else 0
    return np.arange(n, dtype=np.int64) - np.repeat(starts, ends - starts)


def relabel_segments(source_rtg: np.ndarray, source_t: np.ndarray, source_start: np.ndarray,
                     rewards: np.ndarray, episode_ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 17: returns-to-go and timesteps of generated segments ([N] each) from the source rows'
    return-to-go ``source_rtg`` and timestep ``source_t`` at each segment's ``source_start``."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    lengths = ends - starts
    r = np.asarray(rewards, dtype=np.float64)
    # sum_{k<j} r'_k within each segment: inclusive cumsum minus the row's own reward, reset per segment
    csum = np.cumsum(r)
    before = np.repeat(np.concatenate([[0.0], csum[:-1]])[starts], lengths)
    exclusive = csum - r - before
    rtg = np.repeat(source_rtg[source_start], lengths) - exclusive
    t = np.repeat(source_t[source_start], lengths) + episode_timesteps(ends)
    return rtg, t


def sequence_labels(store: TrajectoryStore, data: Transitions,
                    sources: dict[str, tuple[TrajectoryStore, np.ndarray, np.ndarray]] | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(returns-to-go float64 [N], timesteps int64 [N]) of one store; augmented stores are relabelled
    from their source store (``sources`` caches opened sources by path)."""
    prov = store.provenance or {}
    if prov.get("transition_level"):
        raise StoreError(f"{store.path} holds single transitions ({prov.get('method', 'transition-level')}), "
                         "not trajectories: a Decision Transformer cannot train on it")
    if "source_store" not in prov:
        return returns_to_go(data.rewards, store.episode_ends), episode_timesteps(store.episode_ends)
    if "source_start" not in store.meta_keys():
        raise StoreError(f"{store.path} names a source store but has no meta/source_start to relabel from")
    src_path = str(prov["source_store"])
    sources = {} if sources is None else sources
    if src_path not in sources:
        if not Path(src_path).exists():
            raise StoreError(f"{store.path}: its source store {src_path} is missing (needed for Eq. 17 returns-to-go)")
        src = TrajectoryStore.open(src_path)
        if src.env_id != store.env_id:
            raise StoreError(f"{store.path} is {store.env_id!r} but its source store {src_path} is {src.env_id!r}")
        src_rewards = src.load(names=()).rewards
        sources[src_path] = (src, returns_to_go(src_rewards, src.episode_ends), episode_timesteps(src.episode_ends))
    src, src_rtg, src_t = sources[src_path]
    start = np.asarray(store.meta("source_start"), dtype=np.int64).reshape(-1)
    if len(start) != store.num_episodes or (len(start) and (start.min() < 0 or start.max() >= src.num_transitions)):
        raise StoreError(f"{store.path}: meta/source_start does not index rows of its source store {src_path}")
    return relabel_segments(src_rtg, src_t, start, data.rewards, store.episode_ends)


class SequenceData:
    """Every store's rows on one device with their return-to-go and timestep, sampled as K-step sequences.

    Rows of all stores are concatenated; ``episode_end[i]`` is the exclusive end of row i's episode, so a
    sequence starting at row i is real up to that end and padded after it."""

    def __init__(self, parts: Sequence[Transitions], rtgs: Sequence[np.ndarray], timesteps: Sequence[np.ndarray],
                 ends: Sequence[np.ndarray], *, context: int, return_scale: float,
                 device: torch.device | str = "cpu", mix_ratio: float | None = None) -> None:
        if not parts:
            raise StoreError("no training data")
        if mix_ratio is not None and (len(parts) < 2 or not 0.0 <= mix_ratio <= 1.0):
            raise StoreError("a mix ratio in [0, 1] needs at least two stores (original first)")
        self.device = torch.device(device)
        self.context = int(context)
        self.sizes = [len(p) for p in parts]
        self.mix_ratio = mix_ratio
        self.reward_factor = float(return_scale)
        obs = np.concatenate([p.observations for p in parts]).astype(np.float64)
        self.obs_mean = obs.mean(0).astype(np.float32)  # [obs]
        self.obs_std = (obs.std(0) + STD_EPS).astype(np.float32)  # [obs]
        offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]])
        row_end = np.concatenate([np.repeat(e + o, np.diff(np.concatenate([[0], e])))
                                  for e, o in zip(ends, offsets, strict=True)])
        acts = np.concatenate([p.actions for p in parts])
        rtg = np.concatenate(rtgs) * return_scale
        t = np.concatenate(timesteps)
        self.max_timestep = int(t.max()) if len(t) else 0
        self.max_abs_action = float(np.abs(acts).max()) if len(acts) else 1.0
        # K - 1 padding rows at the end so that every gather stays in bounds; they are always masked.
        pad = self.context - 1

        def put(x: np.ndarray, dtype=torch.float32) -> Tensor:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)])
            return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=self.device)

        self.states = put(((obs - self.obs_mean) / self.obs_std).astype(np.float32))  # [N+K-1, obs]
        self.actions = put(acts.astype(np.float32))  # [N+K-1, act]
        self.rtg = put(rtg.astype(np.float32))  # [N+K-1]
        self.timesteps = put(t, torch.int64)  # [N+K-1]
        self.row_end = torch.as_tensor(row_end, dtype=torch.int64, device=self.device)  # [N]
        self.offsets = torch.arange(self.context, device=self.device, dtype=torch.int64)  # [K]

    num_transitions = property(lambda self: int(self.row_end.shape[0]))
    obs_dim = property(lambda self: int(self.states.shape[1]))
    act_dim = property(lambda self: int(self.actions.shape[1]))

    # [S, B] start rows: uniform over the union, or ``mix_ratio`` of them from the first store
    indices = OfflineData.indices

    def sample(self, rng, batch_size: int) -> SequenceBatch:
        start = self.indices(rng, batch_size)  # [S, B]
        rows = start[..., None] + self.offsets  # [S, B, K]
        mask = (rows < self.row_end[start][..., None]).float()  # [S, B, K]
        return SequenceBatch(
            states=self.states[rows] * mask[..., None],
            actions=self.actions[rows] * mask[..., None],
            returns_to_go=self.rtg[rows] * mask,
            timesteps=self.timesteps[rows] * mask.long(),
            mask=mask,
        )

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return ((obs - self.obs_mean) / self.obs_std).astype(np.float32)


def load_sequence_data(paths: Sequence[str | os.PathLike], *, context: int, return_scale: float,
                       device: torch.device | str = "cpu", mix_ratio: float | None = None
                       ) -> tuple[SequenceData, list[TrajectoryStore]]:
    """Open, check, relabel and load the stores (the first one is the original dataset)."""
    stores = open_stores(paths)
    parts, rtgs, ts = [], [], []
    sources: dict = {}
    for store in stores:
        part = store.load(names=())
        rtg, t = sequence_labels(store, part, sources)
        parts.append(part)
        rtgs.append(rtg)
        ts.append(t)
    data = SequenceData(parts, rtgs, ts, [s.episode_ends for s in stores], context=context,
                        return_scale=return_scale, device=device, mix_ratio=mix_ratio)
    return data, stores
