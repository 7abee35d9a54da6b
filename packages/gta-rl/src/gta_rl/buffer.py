"""Offline training data held on the device: one or more stores, state normalisation, batch sampling.

GTA's stage C (paper section 4.4, Table 1 and 2) trains an offline RL algorithm on the original data
plus the generated trajectories, "sampled uniformly from the union". ``mix_ratio`` optionally fixes the
fraction of each batch drawn from the first (original) store instead. States are z-scored with the
mean and std (+1e-3) of the training data, as CORL does. Batches are drawn per seed from the
counter-based streams of :mod:`gta_rl.rng`, so each seed has its own data order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gta_data import StoreError, TrajectoryStore, Transitions

STD_EPS = 1e-3  # CORL's compute_mean_std(eps=1e-3)
_INDEX_STREAM = 1  # rng stream of the batch indices (the algorithms use streams >= 100)


@dataclass
class Batch:
    """One training batch per seed."""

    observations: Tensor  # [S, B, obs] z-scored s
    actions: Tensor  # [S, B, act] a
    rewards: Tensor  # [S, B] r after the algorithm's reward transform
    next_observations: Tensor  # [S, B, obs] z-scored s'
    dones: Tensor  # [S, B] float, 1 where s' is terminal (no bootstrap); time-outs bootstrap


@dataclass(frozen=True)
class RewardTransform:
    """r <- scale * r + bias, optionally after scaling by 1000 / (max return - min return) of the original
    episodes (CORL's IQL/CQL reward normalisation for Gym locomotion)."""

    scale: float = 1.0
    bias: float = 0.0
    return_range_normalize: bool = False


def open_stores(paths: Sequence[str | os.PathLike]) -> list[TrajectoryStore]:
    """Open the training stores and check they describe the same task."""
    if not paths:
        raise StoreError("no training data given (pass --data at least once)")
    stores = [TrajectoryStore.open(p) for p in paths]
    first = stores[0]
    for store in stores[1:]:
        if store.env_id != first.env_id:
            raise StoreError(
                f"stores disagree in env: {first.path} is {first.env_id!r}, {store.path} is {store.env_id!r}"
            )
        if (store.obs_dim, store.act_dim) != (first.obs_dim, first.act_dim):
            raise StoreError(
                f"stores disagree in dims: {first.path} has obs/act {first.obs_dim}/{first.act_dim}, "
                f"{store.path} has {store.obs_dim}/{store.act_dim}"
            )
    return stores


class OfflineData:
    """The union of the training stores on one device."""

    def __init__(
        self,
        parts: Sequence[Transitions],
        *,
        device: torch.device | str = "cpu",
        reward_transform: RewardTransform = RewardTransform(),
        original_returns: np.ndarray | None = None,
        mix_ratio: float | None = None,
    ) -> None:
        if not parts:
            raise StoreError("no training data")
        if mix_ratio is not None:
            if not 0.0 <= mix_ratio <= 1.0:
                raise StoreError(f"mix ratio must lie in [0, 1], got {mix_ratio}")
            if len(parts) < 2:
                raise StoreError("a mix ratio needs at least two stores (original first)")
        self.device = torch.device(device)
        self.sizes = [len(p) for p in parts]
        self.mix_ratio = mix_ratio
        data = Transitions.concatenate([Transitions(**{k: getattr(p, k) for k in (
            "observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}) for p in parts])
        obs = data.observations.astype(np.float64)
        self.obs_mean = obs.mean(0).astype(np.float32)  # [obs]
        self.obs_std = (obs.std(0) + STD_EPS).astype(np.float32)  # [obs]
        rewards = data.rewards.astype(np.float64)
        if reward_transform.return_range_normalize:
            if original_returns is None or len(original_returns) == 0:
                raise StoreError("reward normalisation needs the episode returns of the original store")
            spread = float(np.max(original_returns) - np.min(original_returns))
            if spread <= 0:
                raise StoreError("reward normalisation needs episodes with different returns")
            rewards = rewards * (1000.0 / spread)
        rewards = rewards * reward_transform.scale + reward_transform.bias
        self.reward_factor = (
            (1000.0 / spread if reward_transform.return_range_normalize else 1.0) * reward_transform.scale
        )

        def put(x: np.ndarray) -> Tensor:
            return torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32, device=self.device)

        self.observations = put((data.observations - self.obs_mean) / self.obs_std)  # [N, obs]
        self.next_observations = put((data.next_observations - self.obs_mean) / self.obs_std)  # [N, obs]
        self.actions = put(data.actions)  # [N, act]
        self.rewards = put(rewards)  # [N]
        self.dones = put(data.terminals.astype(np.float32))  # [N]
        self.max_abs_action = float(np.abs(data.actions).max()) if len(data) else 1.0

    @property
    def num_transitions(self) -> int:
        return int(self.observations.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def indices(self, rng, batch_size: int) -> Tensor:
        """[S, B] row indices: uniform over the union, or ``mix_ratio`` of each batch from store 0."""
        if self.mix_ratio is None:
            return rng.randint(_INDEX_STREAM, self.num_transitions, (batch_size,))
        n0 = int(round(self.mix_ratio * batch_size))
        first, rest = self.sizes[0], self.num_transitions - self.sizes[0]
        parts = []
        if n0 > 0:
            parts.append(rng.randint(_INDEX_STREAM, first, (n0,)))
        if batch_size - n0 > 0:
            parts.append(first + rng.randint(_INDEX_STREAM + 1, rest, (batch_size - n0,)))
        return torch.cat(parts, dim=1)

    def sample(self, rng, batch_size: int) -> Batch:
        idx = self.indices(rng, batch_size)  # [S, B]
        return Batch(
            observations=self.observations[idx],
            actions=self.actions[idx],
            rewards=self.rewards[idx],
            next_observations=self.next_observations[idx],
            dones=self.dones[idx],
        )

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return ((obs - self.obs_mean) / self.obs_std).astype(np.float32)


class StackedData:
    """Several training sets side by side: member group g of a stacked agent (``counts[g]`` consecutive
    members) draws its batches from ``parts[g]`` only.

    This is how runs that differ in their data, not only in their seed, train in one process (``gta-rl train
    --arm``: original data, original + GTA, ...). The parts' arrays (which may stay on the host) are
    concatenated once on ``device``; member group g draws exactly the rows that ``parts[g]`` alone would give it (its own seeds' streams, its
    own size and mix ratio), offset into the concatenation. Each part keeps its own state statistics and
    reward transform (already applied to its arrays); :attr:`obs_mean` / :attr:`obs_std` are per member
    ([S, 1, obs]) for acting."""

    def __init__(self, parts: Sequence[OfflineData], counts: Sequence[int],
                 device: torch.device | str | None = None) -> None:
        if len(parts) != len(counts) or not parts or min(counts) < 1:
            raise ValueError("one positive member count per part is needed")
        dims = {(p.obs_dim, p.act_dim) for p in parts}
        if len(dims) != 1:
            raise StoreError(f"the arms' data disagree in (obs, act) dims: {sorted(dims)}")
        self.parts, self.counts = list(parts), [int(c) for c in counts]
        self.device = torch.device(device) if device is not None else parts[0].device
        self.offsets = np.cumsum([0, *(p.num_transitions for p in parts)])[:-1].tolist()
        for name in ("observations", "actions", "rewards", "next_observations", "dones"):
            setattr(self, name, torch.cat([getattr(p, name) for p in parts]).to(self.device))

        def per_member(stat: str) -> np.ndarray:  # [S, 1, obs]
            return np.concatenate([np.repeat(getattr(p, stat)[None, None], c, axis=0)
                                   for p, c in zip(parts, counts, strict=True)])

        self.obs_mean, self.obs_std = per_member("obs_mean"), per_member("obs_std")

    obs_dim = OfflineData.obs_dim
    act_dim = OfflineData.act_dim
    num_transitions = OfflineData.num_transitions

    def indices(self, rng, batch_size: int) -> Tensor:
        """[S, B] rows of the concatenation: each member group's :meth:`OfflineData.indices`, offset."""
        out, start = [], 0
        for part, count, offset in zip(self.parts, self.counts, self.offsets, strict=True):
            group = rng.subset(slice(start, start + count))
            out.append(part.indices(group, batch_size) + offset)
            start += count
        return torch.cat(out)

    sample = OfflineData.sample


def load_training_data(
    paths: Sequence[str | os.PathLike],
    *,
    device: torch.device | str = "cpu",
    reward_transform: RewardTransform = RewardTransform(),
    mix_ratio: float | None = None,
) -> tuple[OfflineData, list[TrajectoryStore]]:
    """Open, check and load the stores (the first one is the original dataset) onto ``device``."""
    stores = open_stores(paths)
    parts = [s.load(names=()) for s in stores]
    original_returns = stores[0].episode_returns(parts[0])
    data = OfflineData(
        parts,
        device=device,
        reward_transform=reward_transform,
        original_returns=original_returns,
        mix_ratio=mix_ratio,
    )
    return data, stores
