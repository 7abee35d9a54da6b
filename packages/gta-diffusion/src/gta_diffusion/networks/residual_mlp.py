"""SynthER's transition-level residual MLP denoiser (the ``synther`` networks)."""

from __future__ import annotations

from torch import Tensor, nn

from gta_diffusion.networks.embeddings import ConditionEmbedding, RandomFourierEmbedding

__all__ = ["RESIDUAL_MLP_STYLES", "ResidualMLPDenoiser"]


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
    embedding, as in FastMixerUnet.
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
