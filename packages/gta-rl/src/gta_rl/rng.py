"""Counter-based random numbers, one independent stream per training seed.

Every random draw of a training step (batch indices, target-policy noise, reparameterised actions,
dropout masks) is a pure function of (seed, step, stream, element index), computed with integer hashes
on the device. This gives the multi-seed protocol of the paper (8 seeds per cell, section 5.1) three
properties at once:

- seed k draws the same numbers whether it is trained alone or stacked with other seeds;
- the step counter is a device tensor, so a whole update (sampling included) can be captured in one
  CUDA graph and replayed without host synchronisation;
- resuming from a checkpoint only needs the step counter: no generator state to save.

The hash is a 32-bit integer mixer in the style of Wellons' "lowbias32", with multipliers below 2**31 so
that every product of a 32-bit value fits in int64 without overflow.

torch.compile (inductor, Triton on CUDA) folds arithmetic on ``arange`` into the kernel's index expression
and emits its constants as 32-bit scalars: ``arange(n) * 0x9E3779B9`` fails to compile ("Scalar 2654435769
is out of range for type int32"), and a product of the index that leaves int32 could wrap. The element
counter therefore only ever meets an *addition* of the (runtime) key before the first multiply-mix; every
constant that multiplies a tensor is below 2**31 and applied to loaded values, not to the index.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_KEY2 = 0x3C6EF372


def mix32(x: Tensor) -> Tensor:
    """Bijective 32-bit mixer on int64 tensors holding values in [0, 2**32)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    x = x ^ (x >> 13)
    x = (x * 0x297A2D39) & _M32
    x = x ^ (x >> 16)
    return x


class SeedStreams:
    """Random draws for S seeds at the step held in ``step`` (an int64 scalar tensor that the trainer
    increments in place). ``stream`` separates the draws made at different call sites of one step."""

    def __init__(self, seeds: Tensor, step: Tensor) -> None:
        self.seeds = seeds.to(torch.int64)  # [S]
        self.step = step  # [] int64, shared with the trainer

    @property
    def num_seeds(self) -> int:
        return int(self.seeds.shape[0])

    def subset(self, members: slice) -> SeedStreams:
        """The streams of some of the seeds, at the same step: draws equal those of the full set's rows."""
        return SeedStreams(self.seeds[members], self.step)

    def bits(self, stream: int, shape: tuple[int, ...]) -> Tensor:
        """Uniform 32-bit integers, [S, *shape] int64."""
        n = math.prod(shape)
        key = mix32(self.seeds * 0x01000193 + (stream * _GOLDEN & _M32))  # [S]
        key = mix32(key ^ mix32(self.step + 0x5BD1E995))  # [S]
        idx = torch.arange(n, device=self.seeds.device, dtype=torch.int64)
        # Two keyed mixing rounds per element (counter + key, then xor with a second key): neighbouring
        # counters avalanche through the 3-multiply mixer (see the module note on compile).
        key2 = mix32(key ^ _KEY2)  # [S]
        out = mix32(mix32(idx[None, :] + key[:, None]) ^ key2[:, None])  # [S, n]
        return out.view(self.num_seeds, *shape)

    def uniform(self, stream: int, shape: tuple[int, ...]) -> Tensor:
        """Uniform floats in the open interval (0, 1), [S, *shape] float32 (24 random bits)."""
        return ((self.bits(stream, shape) >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))

    def normal(self, stream: int, shape: tuple[int, ...]) -> Tensor:
        """Standard normal floats by the Box-Muller transform, [S, *shape] float32."""
        u = self.uniform(stream, (2, *shape))  # [S, 2, *shape]
        u1, u2 = u[:, 0], u[:, 1]
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)

    def randint(self, stream: int, high: int, shape: tuple[int, ...]) -> Tensor:
        """Uniform integers in [0, high), [S, *shape] int64; exact (multiply-shift) for high < 2**31."""
        if not 0 < high < 2**31:
            raise ValueError(f"randint needs 0 < high < 2**31, got {high}")
        return (self.bits(stream, shape) * high) >> 32
