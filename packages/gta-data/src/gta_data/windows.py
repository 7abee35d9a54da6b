"""Sub-trajectory windows inside episode bounds, without copying the data H times.

A window of horizon H starting at row t covers the transitions t .. t+H-1 of one episode and is
represented, as in GTA appendix A.1, by H+1 state rows: s_t .. s_{t+H-1} from ``observations`` and
s_{t+H} from ``next_observations[t+H-1]``; actions and rewards have H rows. Only the start indices are
kept; :func:`gather_windows` builds a batch on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gta_data.errors import StoreError
from gta_data.store import Transitions


def window_starts(episode_ends: np.ndarray, horizon: int) -> np.ndarray:
    """Start rows of every window of ``horizon`` transitions that lies inside one episode (stride 1).
    Episodes shorter than ``horizon`` contribute no window."""
    if horizon < 1:
        raise StoreError(f"horizon must be >= 1, got {horizon}")
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    counts = np.maximum(ends - starts - horizon + 1, 0)
    if counts.sum() == 0:
        return np.zeros(0, dtype=np.int64)
    # For each episode e: starts[e] + arange(counts[e]), vectorised.
    offsets = np.arange(counts.sum(), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + offsets


def episode_index(episode_ends: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Index of the episode that holds each row."""
    return np.searchsorted(np.asarray(episode_ends), np.asarray(rows), side="right")


@dataclass
class WindowBatch:
    observations: np.ndarray  # [B, H+1, obs_dim]: s_t .. s_{t+H}
    actions: np.ndarray  # [B, H, act_dim]
    rewards: np.ndarray  # [B, H]
    terminals: np.ndarray  # [B, H] bool
    timeouts: np.ndarray  # [B, H] bool
    starts: np.ndarray  # [B] first row of each window in the store


def gather_windows(data: Transitions, starts: np.ndarray, horizon: int) -> WindowBatch:
    """Gather a batch of windows (rows ``starts[b] .. starts[b]+horizon-1``) from loaded transitions.
    The caller guarantees the windows lie inside episodes (use :func:`window_starts`)."""
    starts = np.asarray(starts, dtype=np.int64)
    rows = starts[:, None] + np.arange(horizon)  # [B, H]
    if len(starts) and (starts.min() < 0 or rows[:, -1].max() >= len(data)):
        raise StoreError("window rows out of range")
    last_state = data.next_observations[rows[:, -1]][:, None]  # [B, 1, obs_dim]
    return WindowBatch(
        observations=np.concatenate([data.observations[rows], last_state], axis=1),
        actions=data.actions[rows],
        rewards=data.rewards[rows],
        terminals=data.terminals[rows],
        timeouts=data.timeouts[rows],
        starts=starts,
    )
