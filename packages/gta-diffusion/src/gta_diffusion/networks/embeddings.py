"""Embeddings of the noise level and the return condition shared by the denoising networks."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["FourierEmbedding", "RandomFourierEmbedding", "ConditionEmbedding"]


class FourierEmbedding(nn.Module):
    """Fixed sinusoidal features of a scalar (c_noise = ln(sigma)/4 spans about [-1.6, 1.1])."""

    def __init__(self, dim: int, max_freq: float = 100.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier embedding dim must be even, got {dim}")
        # Log-spaced angular frequencies from 1 to max_freq: the lowest resolves the whole sigma
        # range, the highest neighbouring sampler steps (Delta c_noise ~ 0.01 near sigma_min).
        freqs = torch.exp(torch.linspace(0.0, math.log(max_freq), dim // 2))
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:  # [B] -> [B, dim]
        arg = t.to(self.freqs.dtype)[:, None] * self.freqs[None, :]
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class RandomFourierEmbedding(nn.Module):
    """Random Fourier features of a scalar, frequencies ~ N(0, scale^2). ``with_input`` is SynthER's
    ``RandomOrLearnedSinusoidalPosEmb`` (random): [t, sin(2 pi w t), cos(2 pi w t)], dim + 1 features;
    without it, [cos, sin] (EDM NCSN++ style)."""

    def __init__(self, dim: int, scale: float = 16.0, with_input: bool = False) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier embedding dim must be even, got {dim}")
        # Persistent buffer: the frequencies are part of the model and travel with its state_dict.
        self.register_buffer("freqs", torch.randn(dim // 2) * scale)
        self.with_input = with_input
        self.out_dim = dim + int(with_input)

    def forward(self, t: Tensor) -> Tensor:  # [B] -> [B, out_dim]
        t = t.to(self.freqs.dtype)[:, None]
        arg = (2 * math.pi) * t * self.freqs[None, :]
        if self.with_input:
            return torch.cat([t, torch.sin(arg), torch.cos(arg)], dim=-1)
        return torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)


class ConditionEmbedding(nn.Module):
    """Noise-level embedding + return embedding (learned null embedding where the return is dropped)."""

    def __init__(
        self, emb_dim: int, fourier: nn.Module | None = None, fourier_dim: int = 128, conditional: bool = True
    ) -> None:
        super().__init__()
        self.fourier = FourierEmbedding(fourier_dim) if fourier is None else fourier
        fourier_dim = getattr(self.fourier, "out_dim", self.fourier.freqs.numel() * 2)
        self.noise_mlp = nn.Sequential(
            nn.Linear(fourier_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.conditional = conditional
        if conditional:
            self.cond_mlp = nn.Sequential(nn.Linear(1, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.null_emb = nn.Parameter(torch.randn(emb_dim) / math.sqrt(emb_dim))

    def forward(self, c_noise: Tensor, cond: Tensor | None, cond_dropped: Tensor | None) -> Tensor:
        emb = self.noise_mlp(self.fourier(c_noise))  # [B, E]
        if not self.conditional:
            return emb
        if cond is None:
            return emb + self.null_emb.to(emb.dtype)
        y = self.cond_mlp(cond.reshape(-1, 1).to(emb.dtype))  # [B, E]
        if cond_dropped is not None:
            # torch.where rather than indexing: no data-dependent shapes, no host sync.
            y = torch.where(cond_dropped.reshape(-1, 1), self.null_emb.to(y.dtype), y)
        return emb + y
