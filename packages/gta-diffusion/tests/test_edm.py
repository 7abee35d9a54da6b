"""EDM core: preconditioning, schedule, loss, guidance, and the stochastic Heun sampler.

The key test runs the sampler with the exact denoiser of a Gaussian data distribution N(m, C),
D(x; sigma) = m + C (C + sigma^2 I)^-1 (x - m), expressed as a raw network F behind the EDM
preconditioning, and checks that samples reproduce m and C (full sampling and partial noising).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gta_diffusion.edm import (
    Denoiser,
    EDMConfig,
    edm_loss,
    edm_sampler,
    guided_denoise,
    sigma_schedule,
    start_index,
)
from gta_diffusion.noise import SeededNoise

SHAPE = (2, 3)  # [T, D] of the toy windows


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    # These tensors are tiny: intra-op threads only add barrier spinning, which on the shared
    # 2-core CI machine under load made a 4 s test take minutes.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class GaussianF(nn.Module):
    """Raw network F whose preconditioned denoiser is the exact one of N(m, C) (flattened windows)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, sigma_data: float = 1.0) -> None:
        super().__init__()
        self.mean, self.sigma_data = mean, sigma_data  # [d]
        self.evals, self.evecs = torch.linalg.eigh(cov)  # [d], [d, d]
        self.calls = 0

    def exact(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        z = (x.reshape(b, -1) - self.mean) @ self.evecs  # [B, d]
        z = z * (self.evals / (self.evals + sigma[:, None] ** 2))
        return (self.mean + z @ self.evecs.T).reshape(x.shape)

    def forward(self, x_in, c_noise, cond, cond_dropped):
        self.calls += 1
        sigma = torch.exp(4.0 * c_noise)  # [B]
        s = sigma.view(-1, 1, 1)
        sd = self.sigma_data
        x = x_in * torch.sqrt(s**2 + sd**2)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        return (self.exact(x, sigma) - c_skip * x) / c_out


def gaussian_problem():
    g = torch.Generator().manual_seed(1)
    d = math.prod(SHAPE)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(a)
    evals = torch.tensor([0.05, 0.2, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    cov = q @ torch.diag(evals) @ q.T
    mean = torch.linspace(-1.0, 2.0, d, dtype=torch.float64)
    return mean, cov


def assert_matches_gaussian(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    n = samples.shape[0]
    flat = samples.reshape(n, -1)
    emp_mean = flat.mean(0)
    emp_cov = torch.cov(flat.T)
    se_mean = torch.sqrt(torch.diag(cov) / n)
    assert (emp_mean - mean).abs().max() < 5 * se_mean.max(), (emp_mean, mean)
    # Standard error of a covariance entry is sqrt((C_ii C_jj + C_ij^2) / n).
    var = torch.diag(cov)
    se_cov = torch.sqrt((var[:, None] * var[None, :] + cov**2) / n)
    assert ((emp_cov - cov).abs() / se_cov).max() < 6.0, (emp_cov - cov).abs().max()


# ---------------------------------------------------------------------------------------------
# schedule and partial-noising index


def test_sigma_schedule_endpoints_and_monotone():
    cfg = EDMConfig()
    s = sigma_schedule(cfg)
    assert s.shape == (cfg.num_steps + 1,) and s.dtype == torch.float64
    assert s[0].item() == pytest.approx(cfg.sigma_max, rel=1e-12)
    assert s[-2].item() == pytest.approx(cfg.sigma_min, rel=1e-12)
    assert s[-1].item() == 0.0
    assert (s[1:] < s[:-1]).all()
    # EDM Eq. 5 in closed form at an interior index.
    i, n, rho = 40, cfg.num_steps, cfg.rho
    ref = (
        cfg.sigma_max ** (1 / rho) + i / (n - 1) * (cfg.sigma_min ** (1 / rho) - cfg.sigma_max ** (1 / rho))
    ) ** rho
    assert s[i].item() == pytest.approx(ref, rel=1e-12)
    # Partial noising (GTA 4.2): mu = 0.5 starts at index 64 with sigma ~ 2.43.
    assert s[start_index(0.5, 128)].item() == pytest.approx(2.428, abs=1e-3)
    assert sigma_schedule(cfg, dtype=torch.float32).dtype == torch.float32


def test_start_index():
    assert start_index(1.0, 128) == 0
    assert start_index(0.5, 128) == 64
    assert start_index(0.25, 128) == 96
    assert start_index(1e-6, 128) == 127
    # mu = k / N exactly in floating point or not: the start is N - k (10 x (1 - 0.9) = 0.99999... in float64)
    assert [start_index(k / 10, 10) for k in range(1, 11)] == list(range(9, -1, -1))
    assert [start_index(round(0.1 * k, 10), 10) for k in range(1, 11)] == list(range(9, -1, -1))
    assert start_index(0.9, 10) == 1 and start_index(0.7, 10) == 3
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            start_index(bad, 128)


def test_config_validation():
    with pytest.raises(ValueError):
        EDMConfig(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError):
        EDMConfig(num_steps=1)
    with pytest.raises(ValueError):
        EDMConfig(sigma_data=0.0)


# ---------------------------------------------------------------------------------------------
# preconditioning


class ProbeF(nn.Module):
    """Records its inputs and returns a constant, to read c_skip, c_out, c_in, c_noise back."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.last = None

    def forward(self, x_in, c_noise, cond, cond_dropped):
        self.last = (x_in, c_noise, cond, cond_dropped)
        return torch.full_like(x_in, self.value)


@pytest.mark.parametrize("sd", [1.0, 0.5])
def test_preconditioning_coefficients_and_identities(sd):
    sigma = torch.tensor([0.002, 0.1, 1.0, 5.0, 80.0], dtype=torch.float64)
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    zero, one = ProbeF(0.0), ProbeF(1.0)
    d0 = Denoiser(zero, sigma_data=sd)(x, sigma, None)
    d1 = Denoiser(one, sigma_data=sd)(x, sigma, None)
    s = sigma.view(-1, 1, 1)
    c_skip = d0 / x  # F = 0 -> D = c_skip x
    c_out = d1 - d0  # F = 1 -> D - c_skip x = c_out
    c_in = zero.last[0] / x
    assert torch.allclose(c_skip, (sd**2 / (s**2 + sd**2)).expand_as(x))
    assert torch.allclose(c_out, (s * sd / torch.sqrt(s**2 + sd**2)).expand_as(x))
    assert torch.allclose(c_in, (1 / torch.sqrt(s**2 + sd**2)).expand_as(x))
    assert torch.allclose(zero.last[1], torch.log(sigma) / 4)
    # EDM App. B.6: unit-variance network input and training target when Var(x0) = sd^2:
    # c_in^2 (sd^2 + sigma^2) = 1 and ((1 - c_skip)^2 sd^2 + c_skip^2 sigma^2) / c_out^2 = 1.
    assert torch.allclose(c_in**2 * (sd**2 + s**2), torch.ones_like(x))
    assert torch.allclose(((1 - c_skip) ** 2 * sd**2 + c_skip**2 * s**2) / c_out**2, torch.ones_like(x))
    # loss weight lambda = 1 / c_out^2 makes the weighted loss an unweighted loss on F.
    lam = (s**2 + sd**2) / (s * sd) ** 2
    assert torch.allclose(lam * c_out**2, torch.ones_like(x))


def test_effective_training_target_has_unit_variance_empirically():
    sd = 0.5
    g = torch.Generator().manual_seed(0)
    x0 = sd * torch.randn(200_000, dtype=torch.float64, generator=g)
    for sigma in (0.01, 1.0, 80.0):
        n = sigma * torch.randn(x0.shape, dtype=torch.float64, generator=g)
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / math.sqrt(sigma**2 + sd**2)
        target = (x0 - c_skip * (x0 + n)) / c_out
        assert target.var().item() == pytest.approx(1.0, abs=0.02)


def test_denoiser_returns_x_as_sigma_goes_to_zero():
    x = torch.randn(4, *SHAPE, dtype=torch.float64)
    den = Denoiser(ProbeF(3.0))  # any bounded network output
    d = den(x, torch.full((4,), 1e-6, dtype=torch.float64), None)
    assert torch.allclose(d, x, atol=1e-5)


def test_denoiser_scalar_sigma_and_none_cond():
    probe = ProbeF(0.0)
    den = Denoiser(probe)
    x = torch.randn(3, *SHAPE)
    den(x, torch.tensor(2.0), None, torch.ones(3, dtype=torch.bool))
    assert probe.last[1].shape == (3,)
    assert probe.last[2] is None and probe.last[3] is None  # cond None = all dropped


# ---------------------------------------------------------------------------------------------
# loss


class RecordingDenoiser(nn.Module):
    """A Denoiser around a small deterministic net that records what the loss feeds it."""

    def __init__(self, sigma_data: float = 1.0) -> None:
        super().__init__()
        self.sigma_data = sigma_data
        self.lin = nn.Linear(SHAPE[1], SHAPE[1]).double()
        self.calls = []

    def forward(self, x, sigma, cond, cond_dropped=None):
        self.calls.append(
            (x.clone(), sigma.clone(), cond, None if cond_dropped is None else cond_dropped.clone())
        )
        return torch.tanh(self.lin(x))


def test_edm_loss_matches_float64_transcription_and_mask():
    torch.manual_seed(0)
    cfg = EDMConfig()
    den = RecordingDenoiser()
    x0 = torch.randn(6, *SHAPE, dtype=torch.float64)
    mask = torch.ones(SHAPE, dtype=torch.float64)
    mask[-1, 1:] = 0.0  # padding entries of the last row, as in GTA's H+1-row windows
    loss = edm_loss(
        den,
        x0,
        torch.randn(6, dtype=torch.float64),
        cfg=cfg,
        loss_mask=mask,
        generator=torch.Generator().manual_seed(3),
    )
    assert loss.shape == x0.shape  # unreduced
    x_noisy, sigma, _, _ = den.calls[-1]
    s = sigma.view(-1, 1, 1)
    lam = (s**2 + 1.0) / s**2
    ref = lam * (torch.tanh(den.lin(x_noisy)) - x0) ** 2 * mask
    assert torch.allclose(loss, ref, rtol=1e-12, atol=0)
    assert (loss[:, -1, 1:] == 0).all() and (loss[:, :-1] > 0).all()
    # The per-sample mask shape [B, T, D] is accepted too.
    edm_loss(den, x0, None, cfg=cfg, loss_mask=mask.expand(6, *SHAPE))


def test_edm_loss_sigma_distribution_and_dropout_rate():
    cfg = EDMConfig()
    den = RecordingDenoiser()
    x0 = torch.zeros(20_000, *SHAPE, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    edm_loss(den, x0, torch.ones(20_000, dtype=torch.float64), cfg=cfg, cond_drop_prob=0.25, generator=g)
    x_noisy, sigma, _, dropped = den.calls[-1]
    log_s = torch.log(sigma)
    assert log_s.mean().item() == pytest.approx(cfg.p_mean, abs=0.05)
    assert log_s.std().item() == pytest.approx(cfg.p_std, abs=0.05)
    assert (x_noisy / sigma.view(-1, 1, 1)).std().item() == pytest.approx(1.0, abs=0.01)
    assert dropped.dtype == torch.bool and dropped.float().mean().item() == pytest.approx(0.25, abs=0.02)
    edm_loss(den, x0[:100], torch.ones(100, dtype=torch.float64), cfg=cfg, cond_drop_prob=0.0)
    assert not den.calls[-1][3].any()
    edm_loss(den, x0[:100], None, cfg=cfg)
    assert den.calls[-1][2] is None and den.calls[-1][3] is None  # unconditional: no dropout mask


def test_edm_loss_is_reproducible_with_generator_and_rejects_bad_input():
    cfg = EDMConfig()
    den = RecordingDenoiser()
    x0 = torch.randn(4, *SHAPE, dtype=torch.float64)
    a = edm_loss(den, x0, None, cfg=cfg, generator=torch.Generator().manual_seed(5))
    b = edm_loss(den, x0, None, cfg=cfg, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        edm_loss(den, x0[0], None, cfg=cfg)
    with pytest.raises(ValueError):
        edm_loss(den, x0, None, cfg=cfg, cond_drop_prob=1.5)
    with pytest.raises(ValueError):
        edm_loss(RecordingDenoiser(sigma_data=0.5), x0, None, cfg=cfg)


# ---------------------------------------------------------------------------------------------
# guidance


class CondF(nn.Module):
    """F depends on the condition; the null condition is a fixed value. Counts calls and batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = []

    def forward(self, x_in, c_noise, cond, cond_dropped):
        b = x_in.shape[0]
        self.calls.append((b, None if cond_dropped is None else cond_dropped.clone()))
        y = torch.full((b,), -0.7, dtype=x_in.dtype) if cond is None else cond
        if cond_dropped is not None:
            y = torch.where(cond_dropped, torch.full_like(y, -0.7), y)
        return torch.sin(x_in) + y.view(-1, 1, 1) * (1 + c_noise.view(-1, 1, 1))


def test_guided_denoise_scales_and_single_batched_call():
    net = CondF()
    den = Denoiser(net)
    x = torch.randn(5, *SHAPE, dtype=torch.float64)
    sigma = torch.rand(5, dtype=torch.float64) + 0.1
    cond = torch.randn(5, dtype=torch.float64)
    d_cond = den(x, sigma, cond, torch.zeros(5, dtype=torch.bool))
    d_uncond = den(x, sigma, cond, torch.ones(5, dtype=torch.bool))
    assert torch.allclose(den(x, sigma, None), d_uncond)  # cond None == all dropped
    net.calls.clear()
    assert torch.allclose(guided_denoise(den, x, sigma, cond, 0.0), d_uncond)
    assert torch.allclose(guided_denoise(den, x, sigma, cond, 1.0), d_cond)
    assert [c[0] for c in net.calls] == [5, 5]
    net.calls.clear()
    w = 2.0  # GTA Eq. 4 weight -> s = w + 1
    out = guided_denoise(den, x, sigma, cond, w + 1)
    assert torch.allclose(out, (w + 1) * d_cond - w * d_uncond)
    assert len(net.calls) == 1 and net.calls[0][0] == 10
    assert net.calls[0][1].tolist() == [False] * 5 + [True] * 5
    net.calls.clear()
    guided_denoise(den, x, sigma, None, 3.0)  # unconditional model: one plain call
    assert len(net.calls) == 1 and net.calls[0][0] == 5


def test_sampler_guides_both_heun_stages_and_never_drops_conditions():
    net = CondF()
    den = Denoiser(net)
    cfg = EDMConfig(num_steps=16)
    x = torch.zeros(4, *SHAPE, dtype=torch.float64)
    cond = torch.ones(4, dtype=torch.float64)
    edm_sampler(den, x, cond, cfg=cfg, guidance_scale=3.0, noise=SeededNoise(torch.arange(4)))
    # 2 evaluations per step (Euler + Heun correction) except the last, each one batched CFG call.
    assert len(net.calls) == 2 * cfg.num_steps - 1
    for b, dropped in net.calls:
        assert b == 8 and dropped.tolist() == [False] * 4 + [True] * 4
    net.calls.clear()
    k = start_index(0.5, cfg.num_steps)
    edm_sampler(den, x, cond, cfg=cfg, start_index=k, guidance_scale=1.0, noise=SeededNoise(torch.arange(4)))
    assert len(net.calls) == 2 * (cfg.num_steps - k) - 1
    for b, dropped in net.calls:  # s = 1: conditional model only, no condition dropout at sampling
        assert b == 4 and not dropped.any()


# ---------------------------------------------------------------------------------------------
# the sampler on an exactly known denoiser


@pytest.fixture(scope="module")
def gaussian():
    mean, cov = gaussian_problem()
    return mean, cov, Denoiser(GaussianF(mean, cov))


def test_sampler_full_generation_reproduces_gaussian(gaussian):
    mean, cov, den = gaussian
    n = 20_000
    x = torch.zeros(n, *SHAPE, dtype=torch.float64)
    out = edm_sampler(den, x, None, cfg=EDMConfig(), noise=SeededNoise(torch.arange(n)))
    assert out.shape == x.shape and out.dtype == torch.float64
    assert_matches_gaussian(out, mean, cov)


def test_sampler_partial_noising_preserves_gaussian(gaussian):
    mean, cov, den = gaussian
    n = 20_000
    g = torch.Generator().manual_seed(11)
    chol = torch.linalg.cholesky(cov)
    x0 = (mean + torch.randn(n, mean.numel(), dtype=torch.float64, generator=g) @ chol.T).reshape(n, *SHAPE)
    cfg = EDMConfig()
    dist = {}
    for mu in (0.5, 0.1):
        out = edm_sampler(
            den,
            x0,
            None,
            cfg=cfg,
            start_index=start_index(mu, cfg.num_steps),
            noise=SeededNoise(torch.arange(n) + 10**6),
        )
        assert_matches_gaussian(out, mean, cov)
        dist[mu] = (out - x0).square().mean().item()
    # Partial noising keeps samples tied to their sources, more so for smaller mu; independent
    # samples of N(m, C) would be 2 tr(C) / d = 2.58 apart in mean squared distance.
    independent = 2 * torch.trace(cov).item() / mean.numel()
    assert 0 < dist[0.1] < 0.1 * independent
    assert dist[0.1] < dist[0.5] < independent


def test_sampler_small_mu_returns_almost_the_source(gaussian):
    mean, cov, den = gaussian
    x0 = torch.randn(64, *SHAPE, dtype=torch.float64)
    cfg = EDMConfig()
    k = start_index(1e-3, cfg.num_steps)
    assert k == cfg.num_steps - 1
    out = edm_sampler(den, x0, None, cfg=cfg, start_index=k, noise=SeededNoise(torch.arange(64)))
    assert (out - x0).abs().max() < 0.02  # sigma_{N-1} = 0.002 noise, one Euler step
    same = edm_sampler(den, x0, None, cfg=cfg, start_index=cfg.num_steps)
    assert torch.equal(same, x0)


def test_sampler_depends_on_seed_not_batch(gaussian):
    _, _, den = gaussian
    cfg = EDMConfig(num_steps=24)
    seeds = torch.arange(50, 60)
    x = torch.zeros(10, *SHAPE, dtype=torch.float64)
    full = edm_sampler(den, x, None, cfg=cfg, noise=SeededNoise(seeds))
    part = edm_sampler(den, x[:3], None, cfg=cfg, noise=SeededNoise(seeds[[7, 2, 9]]))
    assert torch.allclose(part, full[[7, 2, 9]], rtol=0, atol=1e-12)
    other = edm_sampler(den, x[:1], None, cfg=cfg, noise=SeededNoise(torch.tensor([999])))
    assert not torch.allclose(other[0], full[0])


def test_sampler_inpainting_keeps_known_entries(gaussian):
    mean, cov, den = gaussian
    n = 256
    known = torch.zeros(SHAPE, dtype=torch.float64)
    known[:, -1] = torch.tensor([3.0, -2.0])  # e.g. amplified rewards in the last column
    known_mask = torch.zeros(SHAPE, dtype=torch.bool)
    known_mask[:, -1] = True
    out = edm_sampler(
        den,
        torch.zeros(n, *SHAPE, dtype=torch.float64),
        None,
        cfg=EDMConfig(num_steps=32),
        noise=SeededNoise(torch.arange(n)),
        known=known,
        known_mask=known_mask,
    )
    assert torch.equal(out[:, :, -1], known[:, -1].expand(n, -1))
    assert torch.isfinite(out).all()
    assert out[:, :, :-1].std(0).min() > 0.05  # unknown entries are still sampled
    # Conditioning on known entries moves the rest towards the Gaussian conditional mean.
    flat_mask = known_mask.flatten()
    cov_uk = cov[~flat_mask][:, flat_mask]
    cov_kk = cov[flat_mask][:, flat_mask]
    cond_mean = mean[~flat_mask] + cov_uk @ torch.linalg.solve(
        cov_kk, known.flatten()[flat_mask] - mean[flat_mask]
    )
    emp = out.reshape(n, -1)[:, ~flat_mask].mean(0)
    free = (
        edm_sampler(
            den,
            torch.zeros(n, *SHAPE, dtype=torch.float64),
            None,
            cfg=EDMConfig(num_steps=32),
            noise=SeededNoise(torch.arange(n)),
        )
        .reshape(n, -1)[:, ~flat_mask]
        .mean(0)
    )
    assert (emp - cond_mean).norm() < (free - cond_mean).norm()


def test_sampler_rejects_bad_arguments(gaussian):
    _, _, den = gaussian
    x = torch.zeros(2, *SHAPE, dtype=torch.float64)
    cfg = EDMConfig(num_steps=4)
    with pytest.raises(ValueError):
        edm_sampler(den, x, None, cfg=cfg, start_index=5)
    with pytest.raises(ValueError):
        edm_sampler(den, x, None, cfg=cfg, noise=SeededNoise(torch.arange(3)))
    with pytest.raises(ValueError):
        edm_sampler(den, x, None, cfg=cfg, known=x)
    with pytest.raises(ValueError):
        edm_sampler(den, x[0], None, cfg=cfg)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sampler_captures_in_a_cuda_graph():
    # No host syncs in the loop: the whole sampler must be capturable and replay identically.
    from gta_diffusion.networks import build_network

    torch.manual_seed(0)
    net = build_network("fast-mixer-small", SHAPE[1], SHAPE[0]).cuda().eval()
    den = Denoiser(net)
    cfg = EDMConfig(num_steps=8)
    x = torch.randn(16, *SHAPE, device="cuda")
    cond = torch.randn(16, device="cuda")
    noise = SeededNoise(torch.arange(16, device="cuda"))
    with torch.no_grad():
        eager = edm_sampler(den, x, cond, cfg=cfg, start_index=2, noise=noise)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            edm_sampler(den, x, cond, cfg=cfg, start_index=2, noise=noise)  # warm-up
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = edm_sampler(den, x, cond, cfg=cfg, start_index=2, noise=noise)
        graph.replay()
        torch.cuda.synchronize()
    assert torch.allclose(out, eager, atol=1e-5)


def test_sampler_and_loss_trace_as_single_graphs_without_breaks():
    # A graph break would mean a host sync or Python branching on tensor values in the hot loop,
    # which would stop torch.compile / CUDA-graph capture of the whole sampler on the GPU.
    import torch._dynamo as dynamo

    from gta_diffusion.networks import build_network

    den = Denoiser(build_network("fast-mixer-small", 4, 8, dim=8))
    x, cond = torch.randn(4, 8, 4), torch.randn(4)
    noise = SeededNoise(torch.arange(4))
    cfg = EDMConfig(num_steps=3, s_tmax=100.0)  # steps 1, 2: churn, Heun correction, final Euler step
    known_mask = torch.zeros(8, 4, dtype=torch.bool)
    known_mask[:, -1] = True

    def sample(x, cond):
        return edm_sampler(
            den, x, cond, cfg=cfg, start_index=1, noise=noise, known=x[0], known_mask=known_mask
        )

    for fn in (sample, lambda x, cond: edm_loss(den, x, cond, cfg=cfg)):
        report = dynamo.explain(fn)(x, cond)
        assert report.graph_break_count == 0, report.break_reasons
        assert report.graph_count == 1
