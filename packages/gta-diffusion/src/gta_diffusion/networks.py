"""Denoising networks: GTA's MLP-Mixer temporal U-Net (GTA App. A.2) and presets.

GTA's denoiser is a temporal U-Net (Janner et al. 2022, Diffuser) whose residual blocks are
MLP-Mixer blocks (Tolstikhin et al. 2021): token mixing across time steps (the same MLP for every
channel) and channel mixing across features (the same MLP for every time step). The authors
built it from 1x1 Conv2d over fake images, permutes, Group/InstanceNorm and attention, which is
what makes their code slow (DESIGN.md Sec. 4). This implementation keeps the function class and
works natively on ``[B, T, C]`` tensors with plain ``nn.Linear`` / ``LayerNorm``:

* channel mixing is a Linear on the last dimension;
* token mixing multiplies a ``[T', T]`` weight from the left (``W @ h`` with h ``[B, T, C]``), so
  no transpose of the activations is needed;
* the time axis is halved by folding adjacent rows into channels (a free reshape) followed by a
  Linear, and doubled by the inverse; skips are concatenated on channels and projected;
* conditioning (noise level and return) enters every block through adaLN-Zero modulation
  (shift, scale, gate per branch, DiT-style), the gates start at zero so each block starts as the
  identity. A learned null embedding replaces the return embedding where the condition is
  dropped (classifier-free guidance, GTA Eq. 5).

Widths grow as the time axis shrinks, so most parameters sit at the coarse levels where each
costs only 2 T_level FLOPs per sample: the "paper" preset has GTA's 29.6M parameters at about a
quarter of the FLOPs it would cost at full resolution. There is no dropout, so eval mode is
deterministic.

``ResidualMLPDenoiser`` is SynthER's transition-level residual MLP (REFERENCE.md), with the same
forward signature on ``[B, 1, D]`` inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "MixerBlock",
    "MixerUnet",
    "ResidualMLPDenoiser",
    "PRESETS",
    "build_network",
    "count_parameters",
]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


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


class MixerBlock(nn.Module):
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


class MixerUnet(nn.Module):
    """Temporal U-Net of MLP-Mixer blocks (GTA App. A.2), native on [B, T, D].

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
                MixerBlock(rows[lvl], widths[lvl], emb_dim, token_expansion, channel_expansion)
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


RESIDUAL_MLP_STYLES = ("synther", "silu-rff128")


class ResidualMLPDenoiser(nn.Module):
    """SynthER's residual MLP denoiser (transition vectors as [B, 1, D]); unconditional by default.

    The input is projected to ``input_dim`` and the noise embedding (features of c_noise through an MLP)
    is added, then a Linear to ``width`` and ``num_blocks`` residual blocks h + Linear(act(h)) without
    normalisation, and Linear(act(h)) out (SynthER: 128 / 2048 / 6, ~25.6M parameters for halfcheetah).
    ``style`` "synther" is SynthER's ``ResidualMLPDenoiser`` with its ``resmlp_denoiser.gin``: ReLU, and
    c_noise as [c, sin(2 pi w c), cos(2 pi w c)] with ``fourier_dim`` / 2 = 8 frequencies w ~ N(0, 1).
    "silu-rff128" is this package's first version (SiLU, ``emb_dim`` / 2 = 64 frequencies ~ N(0, 16^2)),
    kept to load the models trained with it. ``conditional=True`` adds a return embedding with a null
    embedding, as in MixerUnet.
    """

    def __init__(
        self,
        transition_dim: int,
        horizon_rows: int = 1,
        *,
        width: int = 2048,
        num_blocks: int = 6,
        input_dim: int = 128,
        emb_dim: int = 128,
        fourier_dim: int = 16,
        conditional: bool = False,
        style: str = "synther",
    ) -> None:
        super().__init__()
        if horizon_rows != 1:
            raise ValueError(
                f"ResidualMLPDenoiser models single transitions (horizon_rows=1), got {horizon_rows}"
            )
        if style not in RESIDUAL_MLP_STYLES:
            raise ValueError(f"unknown residual MLP style {style!r}; choose one of {RESIDUAL_MLP_STYLES}")
        self.transition_dim = transition_dim
        self.horizon_rows = 1
        self.style = style
        if style == "synther":
            fourier, act = RandomFourierEmbedding(fourier_dim, scale=1.0, with_input=True), nn.ReLU
        else:
            fourier, act = RandomFourierEmbedding(emb_dim), nn.SiLU
        self.input_proj = nn.Linear(transition_dim, input_dim)
        self.embed = ConditionEmbedding(input_dim, fourier=fourier, conditional=conditional)
        self.trunk_in = nn.Linear(input_dim, width)
        self.blocks = nn.ModuleList(
            nn.Sequential(act(), nn.Linear(width, width)) for _ in range(num_blocks)
        )
        self.output_proj = nn.Sequential(act(), nn.Linear(width, transition_dim))

    def forward(self, x: Tensor, c_noise: Tensor, cond: Tensor | None, cond_dropped: Tensor | None) -> Tensor:
        # x [B, 1, D]; c_noise [B]
        if x.ndim != 3 or x.shape[1] != 1 or x.shape[2] != self.transition_dim:
            raise ValueError(f"expected [B, 1, {self.transition_dim}] input, got {tuple(x.shape)}")
        h = self.trunk_in(self.input_proj(x[:, 0]) + self.embed(c_noise, cond, cond_dropped))  # [B, W]
        for block in self.blocks:
            h = h + block(h)
        return self.output_proj(h)[:, None, :]  # [B, 1, D]


PRESETS: dict[str, dict] = {
    "paper": dict(
        kind="mixer",
        dim=96,
        dim_mults=(1, 2, 4, 8),
        blocks_per_level=1,
        mid_blocks=2,
        emb_dim=160,
        token_expansion=2.0,
        channel_expansion=4.0,
    ),
    "small": dict(
        kind="mixer",
        dim=24,
        dim_mults=(1, 2, 4),
        blocks_per_level=1,
        mid_blocks=1,
        emb_dim=64,
        token_expansion=2.0,
        channel_expansion=2.0,
    ),
    "synther": dict(kind="residual_mlp", width=2048, num_blocks=6, input_dim=128, emb_dim=128),
    "synther-small": dict(kind="residual_mlp", width=256, num_blocks=3, input_dim=64, emb_dim=64),
}
"""Network presets (``build_network(name, transition_dim, horizon_rows)``).

paper: GTA's size (App. B.1: ~29.6M parameters): 29,497,688 parameters for halfcheetah (D = 24,
    32 rows), widths 96/192/384/768 at 32/16/8/4 rows, ~0.26 GFLOP per forward pass per window;
small: 383,552 parameters for D = 24, 32 rows; trains on CPU in minutes;
synther: SynthER's residual MLP, 25,552,682 parameters for halfcheetah's [s, a, r, s', done]
    (D = 42; SynthER reports ~25.6M; the same count as its code with resmlp_denoiser.gin);
    synther-small: for CPU tests.
Exact counts are asserted in tests/test_networks.py.
"""


def build_network(preset: str, transition_dim: int, horizon_rows: int, **overrides) -> nn.Module:
    """Build the raw network F of a preset; keyword overrides replace preset entries."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; choose one of {sorted(PRESETS)}")
    cfg = {**PRESETS[preset], **overrides}
    kind = cfg.pop("kind")
    if kind == "mixer":
        return MixerUnet(transition_dim, horizon_rows, **cfg)
    if kind == "residual_mlp":
        return ResidualMLPDenoiser(transition_dim, horizon_rows, **cfg)  # style: see build_denoiser
    raise ValueError(f"unknown network kind {kind!r} in preset {preset!r}")
