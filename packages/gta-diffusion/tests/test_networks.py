"""FastMixerUnet (fast-mixer) and ResidualMLPDenoiser (SynthER): shapes, conditioning, named networks, learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gta_diffusion.edm import Denoiser, EDMConfig, edm_loss, edm_sampler
from gta_diffusion.networks import (
    PRESETS,
    FastMixerUnet,
    ResidualMLPDenoiser,
    build_network,
    count_parameters,
)
from gta_diffusion.noise import SeededNoise


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # These tensors are tiny: intra-op threads only add barrier spinning, which on the shared
    # 2-core CI machine under load made a 4 s test take minutes.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def randomize_zero_inits(net: nn.Module, seed: int = 0) -> nn.Module:
    """The adaLN-Zero gates and the output layer start at zero; give them values so tests see F != 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if (p == 0).all():
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


def inputs(b: int, rows: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, rows, d, generator=g)
    c_noise = torch.randn(b, generator=g)
    cond = torch.randn(b, generator=g)
    dropped = torch.rand(b, generator=g) < 0.5
    return x, c_noise, cond, dropped


@pytest.mark.parametrize("horizon", [1, 7, 31, 127])
def test_fast_mixer_any_horizon(horizon):
    rows, d = horizon + 1, 5
    net = randomize_zero_inits(build_network("fast-mixer-small", d, rows))
    x, c_noise, cond, dropped = inputs(3, rows, d)
    out = net(x, c_noise, cond, dropped)
    assert out.shape == (3, rows, d) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert net.padded_rows % 2 ** (len(PRESETS["fast-mixer-small"]["dim_mults"]) - 1) == 0
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_output_depends_on_every_input_row():
    # Padding rows must not cut real rows off from each other (the U-Net mixes across all of time).
    rows, d = 7, 3
    net = randomize_zero_inits(build_network("fast-mixer-small", d, rows)).double()
    x, c_noise, cond, _ = inputs(1, rows, d)
    x = x.double().requires_grad_(True)
    net(x, c_noise.double(), cond.double(), None)[0, 0].sum().backward()
    assert (x.grad[0].abs().sum(-1) > 0).all()


def test_fast_mixer_size_is_close_to_gta():
    net = build_network("fast-mixer", 24, 32)  # halfcheetah: 17 + 6 + 1, H = 31
    assert count_parameters(net) == 29_497_688  # GTA App. B.1: ~29.6M
    assert net.rows == [32, 16, 8, 4] and net.widths == [96, 192, 384, 768]


def test_small_and_synther_sizes():
    assert 100_000 <= count_parameters(build_network("fast-mixer-small", 24, 32)) <= 500_000
    # SynthER's ResidualMLPDenoiser with resmlp_denoiser.gin for D = 42, counted by hand from its code:
    # proj 42*128+128, time MLP (16+1)*128+128 + 128*128+128, trunk 128*2048+2048, 6 x (2048^2+2048),
    # out 2048*42+42 (its 8 random frequencies are a frozen parameter there, a buffer here).
    synther = 5504 + (17 * 128 + 128 + 128 * 128 + 128) + (128 * 2048 + 2048) + 6 * (2048**2 + 2048) + 2048 * 42 + 42
    assert count_parameters(build_network("synther", 42, 1)) == synther == 25_552_682
    assert count_parameters(build_network("synther", 42, 1, style="silu-rff128")) == 25_566_890  # first version
    assert count_parameters(build_network("synther-small", 42, 1)) == 232_874


def test_build_network_overrides_and_errors():
    net = build_network("fast-mixer-small", 4, 8, dim=8, dim_mults=(1, 2))
    assert isinstance(net, FastMixerUnet) and net.widths == [8, 16]
    with pytest.raises(ValueError, match="unknown network"):
        build_network("huge", 4, 8)
    with pytest.raises(ValueError):
        build_network("fast-mixer-small", 4, 0)
    with pytest.raises(ValueError):
        build_network("synther", 4, 8)  # transition-level model only
    net = build_network("fast-mixer-small", 4, 8)
    with pytest.raises(ValueError):
        net(torch.zeros(2, 9, 4), torch.zeros(2), None, None)


def test_condition_handling():
    rows, d = 8, 4
    net = randomize_zero_inits(build_network("fast-mixer-small", d, rows)).eval()
    x, c_noise, cond, _ = inputs(4, rows, d)
    all_dropped = torch.ones(4, dtype=torch.bool)
    none_dropped = torch.zeros(4, dtype=torch.bool)
    with torch.no_grad():
        uncond = net(x, c_noise, None, None)
        # Dropped conditions use the null embedding: independent of the condition's value.
        assert torch.allclose(net(x, c_noise, cond, all_dropped), uncond, atol=1e-6)
        assert torch.allclose(net(x, c_noise, cond * 5 + 1, all_dropped), uncond, atol=1e-6)
        cond_out = net(x, c_noise, cond, none_dropped)
        assert not torch.allclose(cond_out, uncond)
        assert torch.allclose(net(x, c_noise, cond, None), cond_out, atol=1e-6)
        mixed = net(x, c_noise, cond, torch.tensor([True, False, True, False]))
        assert torch.allclose(mixed[[0, 2]], uncond[[0, 2]], atol=1e-6)
        assert torch.allclose(mixed[[1, 3]], cond_out[[1, 3]], atol=1e-6)
        # The noise level matters.
        assert not torch.allclose(net(x, c_noise + 0.5, None, None), uncond)


def test_eval_and_train_mode_are_deterministic_and_batch_independent():
    rows, d = 8, 4
    net = randomize_zero_inits(build_network("fast-mixer-small", d, rows))
    x, c_noise, cond, dropped = inputs(6, rows, d)
    with torch.no_grad():
        net.eval()
        a = net(x, c_noise, cond, dropped)
        b = net(x, c_noise, cond, dropped)
        net.train()
        c = net(x, c_noise, cond, dropped)  # no dropout anywhere: train mode is deterministic too
        single = net(x[2:3], c_noise[2:3], cond[2:3], dropped[2:3])
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-6)
    assert torch.allclose(single[0], a[2], atol=1e-5)


def test_zero_init_network_makes_denoiser_c_skip_x():
    # adaLN-Zero + zero output layer: F = 0 at initialisation, so D = c_skip x (a sane start).
    net = build_network("fast-mixer-small", 4, 8)
    x, _, cond, dropped = inputs(2, 8, 4)
    sigma = torch.tensor([0.5, 3.0])
    d = Denoiser(net)(x, sigma, cond, dropped)
    assert torch.allclose(d, x / (1 + sigma.view(-1, 1, 1) ** 2))


def test_bf16_autocast_forward_returns_input_dtype():
    net = randomize_zero_inits(build_network("fast-mixer-small", 4, 8))
    den = Denoiser(net)
    x, _, cond, dropped = inputs(3, 8, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        d = den(x, torch.ones(3), cond, dropped)
    ref = den(x, torch.ones(3), cond, dropped)
    assert d.dtype == torch.float32
    assert torch.allclose(d, ref, atol=0.1)


def test_sampler_with_fast_mixer_depends_on_seed_not_batch():
    rows, d = 8, 4
    den = Denoiser(randomize_zero_inits(build_network("fast-mixer-small", d, rows)).eval())
    cfg = EDMConfig(num_steps=6)
    x, _, cond, _ = inputs(5, rows, d)
    seeds = torch.tensor([11, 12, 13, 14, 15])
    with torch.no_grad():
        full = edm_sampler(den, x, cond, cfg=cfg, start_index=2, noise=SeededNoise(seeds))
        part = edm_sampler(
            den, x[[3, 1]], cond[[3, 1]], cfg=cfg, start_index=2, noise=SeededNoise(seeds[[3, 1]])
        )
    assert torch.isfinite(full).all()
    assert torch.allclose(part, full[[3, 1]], atol=1e-4)


def test_small_fast_mixer_learns_a_toy_distribution():
    # Windows are a sine wave with random phase plus per-row reward = condition; the EDM loss must
    # fall well below its value at initialisation within a few hundred CPU steps.
    torch.manual_seed(0)
    rows, d, b = 8, 3, 64
    net = build_network("fast-mixer-small", d, rows, dim=16)
    den = Denoiser(net)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    cfg = EDMConfig()
    t = torch.linspace(0, 3, rows)

    def batch():
        phase = torch.rand(b, 1) * 6.28
        y = torch.randn(b)
        x = torch.stack([torch.sin(t + phase), torch.cos(t + phase), y[:, None].expand(b, rows)], dim=-1)
        return x, y

    g = torch.Generator().manual_seed(0)
    x_eval, y_eval = batch()

    def eval_loss() -> float:
        with torch.no_grad():
            return edm_loss(den, x_eval, y_eval, cfg=cfg, generator=g.manual_seed(1)).mean().item()

    before = eval_loss()
    for _ in range(100):
        x, y = batch()
        loss = edm_loss(den, x, y, cfg=cfg).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = eval_loss()
    assert after < 0.5 * before


def test_residual_mlp_follows_synther():
    import math

    net = build_network("synther-small", 6, 1)
    assert net.style == "synther"
    assert all(isinstance(b[0], torch.nn.ReLU) for b in net.blocks) and isinstance(net.output_proj[0], torch.nn.ReLU)
    fourier = net.embed.fourier
    c = torch.tensor([-1.2, 0.0, 0.7])
    w = fourier.freqs  # 8 frequencies ~ N(0, 1)
    expected = torch.cat([c[:, None], torch.sin(2 * math.pi * c[:, None] * w), torch.cos(2 * math.pi * c[:, None] * w)], 1)
    torch.testing.assert_close(fourier(c), expected)
    assert w.shape == (8,) and net.embed.noise_mlp[0].in_features == 17
    legacy = build_network("synther-small", 6, 1, style="silu-rff128")
    assert isinstance(legacy.blocks[0][0], torch.nn.SiLU) and legacy.embed.fourier.freqs.shape == (32,)
    with pytest.raises(ValueError, match="unknown residual MLP style"):
        build_network("synther-small", 6, 1, style="relu")


def test_models_without_a_style_load_as_the_first_version():
    from gta_diffusion.training import build_denoiser

    network = {"preset": "synther-small", "overrides": {}, "transition_dim": 6, "horizon_rows": 1}
    assert build_denoiser(network, 1.0).net.style == "silu-rff128"
    assert build_denoiser({**network, "style": "synther"}, 1.0).net.style == "synther"
    assert build_denoiser({"preset": "small", "overrides": {}, "transition_dim": 4, "horizon_rows": 8}, 1.0) is not None  # old name


def test_residual_mlp_denoiser():
    d = 10
    net = randomize_zero_inits(build_network("synther-small", d, 1))
    assert isinstance(net, ResidualMLPDenoiser)
    x, c_noise, _, _ = inputs(4, 1, d)
    out = net(x, c_noise, None, None)
    assert out.shape == (4, 1, d)
    with pytest.raises(ValueError):
        net(torch.zeros(4, 2, d), c_noise, None, None)
    cond_net = build_network("synther-small", d, 1, conditional=True)
    _, _, cond, dropped = inputs(4, 1, d)
    with torch.no_grad():
        a = cond_net(x, c_noise, cond, torch.ones(4, dtype=torch.bool))
        b = cond_net(x, c_noise, None, None)
        c = cond_net(x, c_noise, cond, torch.zeros(4, dtype=torch.bool))
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c)
    # Unconditional SynthER sampling from pure noise runs end to end.
    with torch.no_grad():
        s = edm_sampler(
            Denoiser(net),
            torch.zeros(3, 1, d),
            None,
            cfg=EDMConfig(num_steps=4),
            noise=SeededNoise(torch.arange(3)),
        )
    assert s.shape == (3, 1, d) and torch.isfinite(s).all()
