"""Pixel replay on the device: frames stored once as uint8, observations stacked by index at sampling time.

A dataset of N steps in E episodes has N + E frames (the reset frame of each episode, then the frame after
each action). Stacking three frames per observation and keeping next observations would store every frame six
times; here the whole frame array sits on the device once (2.1 GB for V-D4RL's 100k-step datasets at 84 px)
and a batch is one gather of frame rows. The n-step reward sums and bootstrap discounts are precomputed per
sampleable step, as V-D4RL's ``EfficientReplayBuffer.gather_nstep_indices`` computes them per batch.

The random shift of DrQ (replicate padding, then a whole-pixel shift) is a gather too: output pixel (y, x)
is frame pixel (clamp(y + shift_y - pad), clamp(x + shift_x - pad)), so :meth:`PixelReplay.shifted` gathers the
shifted stack straight from the frames in uint8 (the reference shifts float copies with ``grid_sample``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gta_pixel.drqbc import PixelBatch


def stack_rows(episode_ends: np.ndarray, frame_stack: int, nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(step rows [M], obs frame rows [M, K], next obs frame rows [M, K]) of every step that has n steps ahead
    in its episode, V-D4RL's convention: step t of episode e (global step row i) acts on the stack of frames
    t-K+1 .. t of its episode (frame row of frame t: i + e; the reset frame repeated before t = 0) and its
    n-step next observation is the stack ending at frame t + n."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    steps, obs, nxt = [], [], []
    lags = np.arange(frame_stack - 1, -1, -1)  # [K]: K-1 .. 0
    for e, (start, end) in enumerate(zip(starts, ends, strict=True)):
        length = int(end - start)
        t = np.arange(0, length - nstep + 1)  # steps with n steps ahead
        if len(t) == 0:
            continue
        frame0 = start + e  # frame row of the episode's reset frame
        steps.append(start + t)
        obs.append(frame0 + np.maximum(t[:, None] - lags, 0))
        nxt.append(frame0 + np.maximum(t[:, None] + nstep - lags, 0))
    if not steps:
        raise ValueError(f"no episode is longer than nstep - 1 = {nstep - 1} steps")
    return np.concatenate(steps), np.concatenate(obs), np.concatenate(nxt)


class PixelReplay:
    """Frames, actions and n-step targets of a pixel dataset on one device."""

    def __init__(
        self,
        frames: np.ndarray | Tensor,
        actions: np.ndarray,
        rewards: np.ndarray,
        discounts: np.ndarray,
        episode_ends: np.ndarray,
        *,
        frame_stack: int = 3,
        nstep: int = 3,
        discount: float = 0.99,
        device: torch.device | str = "cpu",
    ) -> None:
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4:
            raise ValueError(f"frames must be uint8 [F, C, H, W], got {frames.dtype} {tuple(frames.shape)}")
        n, ends = len(actions), np.asarray(episode_ends, dtype=np.int64)
        if frames.shape[0] != n + len(ends):
            raise ValueError(f"{frames.shape[0]} frames for {n} steps in {len(ends)} episodes (need steps + episodes)")
        step_rows, obs_rows, next_rows = stack_rows(ends, frame_stack, nstep)
        rewards = np.asarray(rewards, dtype=np.float64)
        discounts = np.asarray(discounts, dtype=np.float64)
        powers = discount ** np.arange(nstep)  # [n]
        window = step_rows[:, None] + np.arange(nstep)  # [M, n]
        nstep_rewards = (rewards[window] * powers).sum(1)  # sum_k gamma^k r_{t+k}
        nstep_discounts = discount**nstep * discounts[step_rows + nstep - 1]

        self.device = torch.device(device)
        self.frame_stack, self.nstep = frame_stack, nstep
        self.frames = frames.to(self.device)  # [F, C, H, W] uint8
        self.frame_shape = tuple(int(s) for s in frames.shape[1:])
        self.obs_rows = torch.as_tensor(obs_rows, device=self.device)  # [M, K]
        self.next_rows = torch.as_tensor(next_rows, device=self.device)  # [M, K]
        self.actions = torch.as_tensor(np.asarray(actions, np.float32)[step_rows], device=self.device)  # [M, A]
        self.rewards = torch.as_tensor(nstep_rewards.astype(np.float32), device=self.device)  # [M]
        self.discounts = torch.as_tensor(nstep_discounts.astype(np.float32), device=self.device)  # [M]

    @property
    def num_rows(self) -> int:
        return int(self.actions.shape[0])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        c, h, w = self.frame_shape
        return (c * self.frame_stack, h, w)

    def stacked(self, frame_rows: Tensor) -> Tensor:
        """Frames [..., K] rows -> stacked observations [..., K C, H, W] uint8 (oldest frame first)."""
        out = self.frames[frame_rows]  # [..., K, C, H, W]
        return out.flatten(-4, -3)

    def shifted(self, frame_rows: Tensor, shifts: Tensor, pad: int) -> Tensor:
        """:meth:`stacked` with DrQ's random shift applied: ``shifts`` [..., 2] (x, y) in [0, 2 pad]; replicate
        padding is a clamp of the source coordinates. One gather, uint8."""
        _, h, w = self.frame_shape
        ys = (torch.arange(h, device=shifts.device) + shifts[..., 1:2] - pad).clamp(0, h - 1)  # [..., H]
        xs = (torch.arange(w, device=shifts.device) + shifts[..., 0:1] - pad).clamp(0, w - 1)  # [..., W]
        rows = frame_rows[..., :, None, None, None]  # [..., K, 1, 1, 1]
        chans = torch.arange(self.frame_shape[0], device=shifts.device)[:, None, None]  # [C, 1, 1]
        out = self.frames[rows, chans, ys[..., None, None, :, None], xs[..., None, None, None, :]]
        return out.flatten(-4, -3)  # [..., K C, H, W]

    def batch(self, rows: Tensor) -> PixelBatch:
        """The unshifted batch of replay rows [...]."""
        return PixelBatch(obs=self.stacked(self.obs_rows[rows]), actions=self.actions[rows],
                          rewards=self.rewards[rows], discounts=self.discounts[rows],
                          next_obs=self.stacked(self.next_rows[rows]))
