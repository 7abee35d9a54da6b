"""Denoising networks F of the EDM denoiser and their named configurations (``gta-diffusion train --network``).

Trajectory networks (input ``[B, H+1, D]`` windows):

* ``mixer-unet``: GTA's own denoiser (App. A.2, the authors' ``MixerUnet`` with ``dim`` 16): a temporal
  U-Net of MLP-Mixer blocks and linear attention on the window seen as a one-channel image ``[B, 1, T, D]``
  (:mod:`gta_diffusion.networks.mixer_unet`);
* ``fast-mixer``: this package's redesign of that idea for throughput, with about the same parameter count
  (:mod:`gta_diffusion.networks.fast_mixer`); ``fast-mixer-small`` is its CPU-sized variant.

Transition networks (SynthER, input ``[B, 1, D]``): ``synther`` and ``synther-small``
(:mod:`gta_diffusion.networks.residual_mlp`).

Every network is called as ``net(x, c_noise [B], cond [B] | None, cond_dropped [B] bool | None)`` and returns
a tensor shaped like x; a dropped (or ``None``) condition is the unconditional model of classifier-free
guidance (GTA Eq. 5). None of them is stochastic: condition dropout is drawn by the training loss, so
sampling is deterministic given its noise.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gta_diffusion.networks.embeddings import ConditionEmbedding, FourierEmbedding, RandomFourierEmbedding
from gta_diffusion.networks.fast_mixer import FastMixerBlock, FastMixerUnet
from gta_diffusion.networks.mixer_unet import MixerUnet
from gta_diffusion.networks.residual_mlp import RESIDUAL_MLP_STYLES, ResidualMLPDenoiser

__all__ = [
    "ConditionEmbedding",
    "FastMixerBlock",
    "FastMixerUnet",
    "FourierEmbedding",
    "LEGACY_NAMES",
    "MixerUnet",
    "PRESETS",
    "RESIDUAL_MLP_STYLES",
    "RandomFourierEmbedding",
    "ResidualMLPDenoiser",
    "TRAJECTORY_KINDS",
    "build_network",
    "count_parameters",
    "network_spec",
    "resolve_network_name",
]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


PRESETS: dict[str, dict[str, Any]] = {
    "mixer-unet": dict(kind="mixer_unet", dim=16, dim_mults=(1, 2, 4, 8)),
    "fast-mixer": dict(
        kind="fast_mixer",
        dim=96,
        dim_mults=(1, 2, 4, 8),
        blocks_per_level=1,
        mid_blocks=2,
        emb_dim=160,
        token_expansion=2.0,
        channel_expansion=4.0,
    ),
    "fast-mixer-small": dict(
        kind="fast_mixer",
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
"""The networks by name (``build_network(name, transition_dim, horizon_rows)``).

mixer-unet: GTA's network (App. A.2; configs/gta.yaml of the authors: dim 16), 29,628,949 parameters for
    halfcheetah (D = 24, 32 rows; GTA App. B.1: ~29.6M), channels 16/32/64/128 at 32/16/8/4 rows;
fast-mixer: 29,497,688 parameters for the same shape, widths 96/192/384/768 at 32/16/8/4 rows;
fast-mixer-small: 383,552 parameters for D = 24, 32 rows; trains on CPU in minutes;
synther: SynthER's residual MLP, 25,552,682 parameters for halfcheetah's [s, a, r, s', done]
    (D = 42; SynthER reports ~25.6M; the same count as its code with resmlp_denoiser.gin);
    synther-small: for CPU tests.
Exact counts are asserted in tests/test_networks.py and tests/test_mixer_unet.py.
"""

LEGACY_NAMES = {"paper": "fast-mixer", "small": "fast-mixer-small"}
"""Names that runs written before the networks were renamed carry in their config; they load as the new ones."""

TRAJECTORY_KINDS = ("mixer_unet", "fast_mixer")
"""Kinds of network that model windows (GTA); "residual_mlp" models single transitions (SynthER)."""

_BUILDERS = {"mixer_unet": MixerUnet, "fast_mixer": FastMixerUnet, "residual_mlp": ResidualMLPDenoiser}


def resolve_network_name(name: str) -> str:
    """The current name of a network (old run configs say "paper" / "small")."""
    return LEGACY_NAMES.get(name, name)


def network_spec(name: str) -> dict[str, Any]:
    """The configuration of a named network (``kind`` plus constructor keywords); legacy names resolve."""
    resolved = resolve_network_name(name)
    if resolved not in PRESETS:
        raise ValueError(f"unknown network {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[resolved])


def build_network(name: str, transition_dim: int, horizon_rows: int, **overrides: Any) -> nn.Module:
    """Build the raw network F of a named configuration; keyword overrides replace its entries."""
    cfg = {**network_spec(name), **overrides}
    return _BUILDERS[cfg.pop("kind")](transition_dim, horizon_rows, **cfg)
