"""Pixel replay on the device: frames stored once as uint8, observations stacked by index at sampling time.

A dataset of N steps in E episodes has N + E frames (the reset frame of each episode, then the frame after
each action). Stacking three frames per observation and keeping next observations would store every frame six
times; here the whole frame array sits on the device once (2.1 GB for V-D4RL's 100k-step datasets at 84 px)
and a batch is one gather of frame rows. The n-step reward sums and bootstrap discounts are precomputed per
sampleable step (:func:`gta_pixel.pixelstore.stack_indices`, V-D4RL's ``EfficientReplayBuffer`` convention).

The random shift of DrQ (replicate padding, then a whole-pixel shift) is a gather too: output pixel (y, x)
is frame pixel (clamp(y + shift_y - pad), clamp(x + shift_x - pad)), so :meth:`PixelReplay.shifted` gathers the
shifted stack straight from the frames in uint8 (the reference shifts float copies with ``grid_sample``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gta_pixel.drqbc import PixelBatch
from gta_pixel.errors import RunError
from gta_pixel.pixelstore import PixelData, nstep_returns, stack_indices


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
            raise RunError(f"frames must be uint8 [F, C, H, W], got {frames.dtype} {tuple(frames.shape)}")
        n, ends = len(actions), np.asarray(episode_ends, dtype=np.int64)
        if frames.shape[0] != n + len(ends):
            raise RunError(f"{frames.shape[0]} frames for {n} steps in {len(ends)} episodes (need steps + episodes)")
        index = stack_indices(ends, frame_stack, nstep)
        valid = np.flatnonzero(index.valid)  # V-D4RL samples only steps with n steps ahead in their episode
        if len(valid) == 0:
            raise RunError(f"no episode is longer than nstep - 1 = {nstep - 1} steps")
        nstep_rewards, nstep_discounts = nstep_returns(rewards, discounts, index.nstep_rows[valid], discount)

        self.device = torch.device(device)
        self.frame_stack, self.nstep = frame_stack, nstep
        self.frames = frames.to(self.device)  # [F, C, H, W] uint8
        self.frame_shape = tuple(int(s) for s in frames.shape[1:])
        self.obs_rows = torch.as_tensor(index.obs_frames[valid], device=self.device)  # [M, K]
        self.next_rows = torch.as_tensor(index.next_frames[valid], device=self.device)  # [M, K]
        self.actions = torch.as_tensor(np.asarray(actions, np.float32)[valid], device=self.device)  # [M, A]
        self.rewards = torch.as_tensor(nstep_rewards, device=self.device)  # [M]
        self.discounts = torch.as_tensor(nstep_discounts, device=self.device)  # [M]

    @classmethod
    def from_data(cls, data: PixelData, *, frame_stack: int = 3, nstep: int = 3, discount: float = 0.99,
                  device: torch.device | str = "cpu") -> PixelReplay:
        return cls(data.frames, data.actions, data.rewards, data.discounts, data.episode_ends,
                   frame_stack=frame_stack, nstep=nstep, discount=discount, device=device)

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
        padding is a clamp of the source coordinates. One gather of flat indices, uint8."""
        c, h, w = self.frame_shape
        ys = (torch.arange(h, device=shifts.device) + shifts[..., 1:2] - pad).clamp(0, h - 1)  # [..., H]
        xs = (torch.arange(w, device=shifts.device) + shifts[..., 0:1] - pad).clamp(0, w - 1)  # [..., W]
        chans = torch.arange(c, device=shifts.device)[:, None, None]  # [C, 1, 1]
        # Flat index of (frame, channel, y, x), [..., K, C, H, W]. One index tensor (not four): compiled, the
        # strides of a multi-index gather's result can differ from those traced.
        flat = ((frame_rows[..., :, None, None, None] * c + chans) * h + ys[..., None, None, :, None]) * w \
            + xs[..., None, None, None, :]
        return torch.take(self.frames, flat).flatten(-4, -3)  # [..., K C, H, W]

    def batch(self, rows: Tensor) -> PixelBatch:
        """The unshifted batch of replay rows [...]."""
        return PixelBatch(obs=self.stacked(self.obs_rows[rows]), actions=self.actions[rows],
                          rewards=self.rewards[rows], discounts=self.discounts[rows],
                          next_obs=self.stacked(self.next_rows[rows]))
