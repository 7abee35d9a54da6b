"""Per-sample reproducible Gaussian noise for the EDM sampler.

EDM's ``StackedRandomGenerator`` keeps one ``torch.Generator`` per sample so that a generated
sample depends on its seed and not on the batch it was drawn in. A Python loop over generators
is slow at the batch sizes we sample with (thousands of windows) and cannot run inside a CUDA
graph, so this module does the same thing with a counter-based generator: every normal variate
is a pure function of ``(seed_b, stream, element index)``, computed with a 32-bit integer hash
(Wellons' "lowbias32" finaliser, two rounds) followed by Box-Muller. Everything is plain torch
integer/float arithmetic on the target device, so it is vectorised, device-agnostic,
bit-identical across batch compositions and capturable by ``torch.compile`` / CUDA graphs.

The 32-bit multiplications are carried out in int64 on 16-bit halves so that no intermediate
exceeds 2**63: signed overflow would be implementation-defined and could differ between CPU
and GPU kernels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SeededNoise"]

_MASK32 = 0xFFFFFFFF
_MASK16 = 0xFFFF
# Multipliers of the lowbias32 finaliser (C. Wellons, "Prospecting for hash functions").
_M1 = 0x7FEB352D
_M2 = 0x846CA68B
# Odd constants that decorrelate the key schedule (golden ratio and sqrt(3) fractional bits).
_K_STREAM = 0x9E3779B9
_K_SEED_HI = 0xBB67AE85


def _mul32(x: Tensor, c: int) -> Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32) without int64 overflow."""
    lo = x & _MASK16
    hi = x >> 16
    # hi * c < 2**48 and only its low 16 bits survive the shift by 16 modulo 2**32.
    return (lo * c + (((hi * c) & _MASK16) << 16)) & _MASK32


def _hash32(x: Tensor) -> Tensor:
    """lowbias32: a bijective 32-bit mixer with near-ideal avalanche (x int64 in [0, 2**32))."""
    x = x ^ (x >> 16)
    x = _mul32(x, _M1)
    x = x ^ (x >> 15)
    x = _mul32(x, _M2)
    return x ^ (x >> 16)


class SeededNoise:
    """Counter-based N(0, 1) noise keyed by one seed per sample.

    ``randn(stream, shape)`` returns ``[B, *shape]`` where row ``b`` depends only on
    ``seeds[b]``, ``stream`` and the element index inside ``shape``: the same seed gives the same
    noise wherever the sample sits in a batch and whatever the batch size. Different streams
    (the sampler uses one per step and purpose) give independent noise.
    """

    def __init__(self, seeds: Tensor) -> None:
        seeds = torch.as_tensor(seeds)
        if seeds.ndim != 1 or seeds.dtype.is_floating_point or seeds.dtype == torch.bool:
            raise ValueError(
                f"seeds must be a 1-D integer tensor, got dtype {seeds.dtype} shape {tuple(seeds.shape)}"
            )
        self.seeds = seeds.to(torch.int64)  # [B]

    def __len__(self) -> int:
        return self.seeds.shape[0]

    def _keys(self, stream: int, device: torch.device | str | None) -> tuple[Tensor, Tensor]:
        seeds = self.seeds.to(device)
        lo = seeds & _MASK32
        hi = (seeds >> 32) & _MASK32
        k1 = _hash32(lo ^ _hash32(hi ^ _K_SEED_HI))
        k2 = _hash32(k1 ^ ((stream * _K_STREAM) & _MASK32))
        k3 = _hash32(k2 ^ _hash32(torch.full_like(k2, stream & _MASK32)))
        return k2, k3  # [B], [B]

    def randn(
        self,
        stream: int,
        shape_per_sample: tuple[int, ...],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Tensor:
        """Standard normal noise ``[B, *shape_per_sample]`` for ``stream`` (a non-negative int)."""
        if not isinstance(stream, int) or stream < 0:
            raise ValueError(f"stream must be a non-negative int, got {stream!r}")
        shape_per_sample = tuple(int(s) for s in shape_per_sample)
        n = math.prod(shape_per_sample)
        k2, k3 = self._keys(stream, device)
        counter = torch.arange(n, device=k2.device, dtype=torch.int64)  # [n]
        # Two independent 32-bit words per element (counters 2j and 2j+1), each through two
        # keyed hash rounds so that neighbouring counters and neighbouring seeds decorrelate.
        c1 = _hash32(((2 * counter)[None, :] + k3[:, None]) & _MASK32) ^ k2[:, None]  # [B, n]
        c2 = _hash32(((2 * counter + 1)[None, :] + k3[:, None]) & _MASK32) ^ k2[:, None]
        bits1 = _hash32(c1)
        bits2 = _hash32(c2)
        # Uniforms strictly inside (0, 1); float64 keeps all 32 bits (tails to ~6.7 sigma), float32
        # keeps the top 24 (tails to ~5.9 sigma, probability ~4e-9 of being clipped).
        work = torch.float64 if dtype == torch.float64 else torch.float32
        if work == torch.float64:
            u1 = (bits1.to(work) + 0.5) * 2.0**-32
            u2 = bits2.to(work) * 2.0**-32
        else:
            u1 = ((bits1 >> 8).to(work) + 0.5) * 2.0**-24
            u2 = (bits2 >> 8).to(work) * 2.0**-24
        z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)  # Box-Muller
        return z.to(dtype).reshape(len(self), *shape_per_sample)
