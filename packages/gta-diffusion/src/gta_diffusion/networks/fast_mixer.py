"""``fast-mixer``: this package's MLP-Mixer temporal U-Net on ``[B, T, C]`` (a redesign, not GTA's network).

GTA's denoiser (App. A.2, :mod:`gta_diffusion.networks.mixer_unet`) is a temporal U-Net (Janner et al.
2022, Diffuser) whose residual blocks are MLP-Mixer blocks (Tolstikhin et al. 2021) on the window seen as
an image, with the feature axis kept as a spatial axis. This network keeps the idea -- token mixing across
time steps and channel mixing across features, a U-Net over time -- but is designed for throughput and
works natively on ``[B, T, C]`` tensors with plain ``nn.Linear`` / ``LayerNorm``:

* the input is projected from D features to C channels once (D is not a spatial axis);
* channel mixing is a Linear on the last dimension;
* token mixing multiplies a ``[T', T]`` weight from the left (``W @ h`` with h ``[B, T, C]``), so
  no transpose of the activations is needed;
* the time axis is halved by folding adjacent rows into channels (a free reshape) followed by a
  Linear, and doubled by the inverse; skips are concatenated on channels and projected;
* conditioning (noise level and return) enters every block through adaLN-Zero modulation
  (shift, scale, gate per branch, DiT-style), the gates start at zero so each block starts as the
  identity. A learned null embedding replaces the return embedding where the condition is
  dropped (classifier-free guidance, GTA Eq. 5); there is no attention and no convolution.

Widths grow as the time axis shrinks, so most parameters sit at the coarse levels where each
costs only 2 T_level FLOPs per sample: the ``fast-mixer`` preset has about GTA's parameter count
(29.5M vs 29.6M) at a fraction of its FLOPs. There is no dropout, so eval mode is deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gta_diffusion.networks.embeddings import ConditionEmbedding

__all__ = ["FastMixerBlock", "FastMixerUnet"]


class FastMixerBlock(nn.Module):
    """MLP-Mixer residual block on [B, T, C] with adaLN-Zero conditioning.

    x = x + g1 * TokenMLP(mod(LN(x), s1, b1));  x = x + g2 * ChannelMLP(mod(LN(x), s2, b2)).
    """

    def __init__(
        self, rows: int, width: int, emb_dim: int, token_expansion: float, channel_expansion: float
    ) -> None:
        super().__init__()
        t_hidden = max(1, int(round(rows * token_expansion)))
        c_hidden = max(1, int(round(width * channel_expansion)))
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False)
        self.token_in = nn.Linear(rows, t_hidden)  # used as W @ h: mixes time, shared over channels
        self.token_out = nn.Linear(t_hidden, rows)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False)
        self.channel_in = nn.Linear(width, c_hidden)
        self.channel_out = nn.Linear(c_hidden, width)
        self.modulation = nn.Linear(emb_dim, 6 * width)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    @staticmethod
    def _time_linear(lin: nn.Linear, h: Tensor) -> Tensor:
        # [T_out, T_in] @ [B, T_in, C] -> [B, T_out, C]; bias broadcast per output row.
        return torch.matmul(lin.weight.to(h.dtype), h) + lin.bias.to(h.dtype)[:, None]

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        # x [B, T, C]; emb [B, E] (already passed through SiLU)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(emb)[:, None, :].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        h = self._time_linear(self.token_out, F.gelu(self._time_linear(self.token_in, h), approximate="tanh"))
        x = x + gate1 * h
        h = self.norm2(x) * (1 + scale2) + shift2
        h = self.channel_out(F.gelu(self.channel_in(h), approximate="tanh"))
        return x + gate2 * h


class FastMixerUnet(nn.Module):
    """Temporal U-Net of MLP-Mixer blocks with adaLN-Zero conditioning, native on [B, T, D] (``fast-mixer``).

    Levels l = 0..L-1 (L = len(dim_mults)) run at T_pad / 2^l rows and width dim * dim_mults[l];
    each level has ``blocks_per_level`` blocks on the way down and up, the middle ``mid_blocks``.
    ``horizon_rows`` may be any T >= 1: the window is zero-padded to a multiple of 2^(L-1) rows
    inside and cropped on output.
    """

    def __init__(
        self,
        transition_dim: int,
        horizon_rows: int,
        *,
        dim: int,
        dim_mults: tuple[int, ...],
        blocks_per_level: int = 1,
        mid_blocks: int = 2,
        emb_dim: int = 256,
        token_expansion: float = 2.0,
        channel_expansion: float = 4.0,
        conditional: bool = True,
    ) -> None:
        super().__init__()
        if transition_dim < 1 or horizon_rows < 1:
            raise ValueError(
                f"need transition_dim >= 1 and horizon_rows >= 1, got {transition_dim}, {horizon_rows}"
            )
        if dim < 1 or not dim_mults or any(m < 1 for m in dim_mults):
            raise ValueError(f"invalid dim={dim} / dim_mults={dim_mults}")
        self.transition_dim = transition_dim
        self.horizon_rows = horizon_rows
        levels = len(dim_mults)
        factor = 2 ** (levels - 1)
        self.padded_rows = math.ceil(horizon_rows / factor) * factor
        widths = [dim * m for m in dim_mults]
        rows = [self.padded_rows // 2**lvl for lvl in range(levels)]
        self.widths, self.rows = widths, rows

        def blocks(n: int, lvl: int) -> nn.ModuleList:
            return nn.ModuleList(
                FastMixerBlock(rows[lvl], widths[lvl], emb_dim, token_expansion, channel_expansion)
                for _ in range(n)
            )

        self.embed = ConditionEmbedding(emb_dim, conditional=conditional)
        self.input_proj = nn.Linear(transition_dim, widths[0])
        self.down_blocks = nn.ModuleList(blocks(blocks_per_level, lvl) for lvl in range(levels))
        # Downsample: fold row pairs into channels ([B, T, C] -> [B, T/2, 2C], a free view) + Linear.
        self.downsample = nn.ModuleList(
            nn.Linear(2 * widths[lvl], widths[lvl + 1]) for lvl in range(levels - 1)
        )
        self.mid_blocks = blocks(mid_blocks, levels - 1)
        self.skip_proj = nn.ModuleList(nn.Linear(2 * widths[lvl], widths[lvl]) for lvl in range(levels))
        self.up_blocks = nn.ModuleList(blocks(blocks_per_level, lvl) for lvl in range(levels))
        # Upsample: Linear to 2 C_{l-1} channels, then unfold into twice the rows.
        self.upsample = nn.ModuleList(nn.Linear(widths[lvl], 2 * widths[lvl - 1]) for lvl in range(1, levels))
        self.out_norm = nn.LayerNorm(widths[0], elementwise_affine=False)
        self.out_modulation = nn.Linear(emb_dim, 2 * widths[0])
        self.output_proj = nn.Linear(widths[0], transition_dim)
        for lin in (self.out_modulation, self.output_proj):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None, cond_dropped: Tensor | None) -> Tensor:
        # x [B, T, D]; c_noise [B]; cond [B] or None (= all dropped); cond_dropped [B] bool or None
        t = x.shape[1]
        if t != self.horizon_rows or x.shape[2] != self.transition_dim:
            raise ValueError(
                f"expected [B, {self.horizon_rows}, {self.transition_dim}] input, got {tuple(x.shape)}"
            )
        emb = F.silu(self.embed(c_noise, cond, cond_dropped))  # [B, E]
        h = self.input_proj(x)  # [B, T, C0]
        if self.padded_rows != t:
            h = F.pad(h, (0, 0, 0, self.padded_rows - t))  # [B, T_pad, C0]
        skips = []
        for lvl, level_blocks in enumerate(self.down_blocks):
            for block in level_blocks:
                h = block(h, emb)
            skips.append(h)
            if lvl < len(self.downsample):
                h = self.downsample[lvl](rearrange(h, "b (t two) c -> b t (two c)", two=2))
        for block in self.mid_blocks:
            h = block(h, emb)
        for lvl in reversed(range(len(self.up_blocks))):
            h = self.skip_proj[lvl](torch.cat([h, skips[lvl]], dim=-1))
            for block in self.up_blocks[lvl]:
                h = block(h, emb)
            if lvl > 0:
                h = rearrange(self.upsample[lvl - 1](h), "b t (two c) -> b (t two) c", two=2)
        shift, scale = self.out_modulation(emb)[:, None, :].chunk(2, dim=-1)
        h = self.out_norm(h) * (1 + scale) + shift
        return self.output_proj(h[:, :t])  # [B, T, D]
