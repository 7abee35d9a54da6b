"""EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models").

Written from the EDM paper, not from NVlabs' code. Implements what GTA uses (GTA Sec. 3, Eq. 2-5;
Sec. 4.2, Eq. 9-10; App. B.1, Table 7):

* preconditioning (EDM Table 1 / Eq. 7): D(x; sigma) = c_skip x + c_out F(c_in x; c_noise);
* the rho noise schedule (EDM Eq. 5) and the training distribution ln(sigma) ~ N(P_mean, P_std^2);
* the weighted denoising loss (EDM Eq. 2 and 8, GTA Eq. 2) with classifier-free condition dropout
  (GTA Eq. 5);
* classifier-free guidance (GTA Eq. 4) applied in BOTH stages of every Heun step;
* the stochastic Heun sampler with churn (EDM Algorithm 2), which also performs GTA's partial
  noising (Eq. 9: start from the original window plus sigma_k eps) and denoising (Eq. 10), and an
  inpainting variant for the reward-inpainting ablation (GTA App. E.6).

Sigma arithmetic: the schedule is computed once on the host in float64 and the sampler only
multiplies tensors by Python floats, so the loop performs no device->host synchronisation and
can be captured by CUDA graphs or ``torch.compile``. Inside ``Denoiser`` sigma is cast to x's
dtype (float32 normally, float64 in the analytic tests) and all c_* are computed there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gta_diffusion.noise import SeededNoise

__all__ = [
    "EDMConfig",
    "sigma_schedule",
    "start_index",
    "Denoiser",
    "edm_loss",
    "guided_denoise",
    "edm_sampler",
    "NOISE_STREAM_INIT",
    "noise_stream_churn",
    "noise_stream_known",
]


@dataclass(frozen=True)
class EDMConfig:
    """EDM settings; defaults are GTA's Table 7 (= SynthER's) and EDM's training distribution."""

    sigma_min: float = 0.002  # smallest positive noise level of the schedule
    sigma_max: float = 80.0  # noise level pure-noise sampling starts from
    sigma_data: float = 1.0  # data std; windows are z-scored per dimension, hence 1
    rho: float = 7.0  # schedule curvature (EDM Eq. 5)
    num_steps: int = 128  # N: steps of the full schedule (also used for partial noising)
    s_churn: float = 80.0  # total churn; per-step gamma = min(S_churn / N, sqrt(2) - 1)
    s_tmin: float = 0.05  # churn only for sigma in [S_tmin, S_tmax]
    s_tmax: float = 50.0
    s_noise: float = 1.003  # slight noise inflation of the churn noise
    p_mean: float = -1.2  # training: ln(sigma) ~ N(P_mean, P_std^2)
    p_std: float = 1.2

    def __post_init__(self) -> None:
        if not (0.0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.sigma_data <= 0 or self.rho <= 0 or self.p_std <= 0:
            raise ValueError("sigma_data, rho and p_std must be positive")
        if int(self.num_steps) != self.num_steps or self.num_steps < 2:
            raise ValueError(f"num_steps must be an int >= 2, got {self.num_steps}")
        if self.s_churn < 0 or self.s_noise <= 0:
            raise ValueError("s_churn must be >= 0 and s_noise > 0")


def _schedule_floats(cfg: EDMConfig) -> list[float]:
    """EDM Eq. 5: sigma_i = (smax^(1/rho) + i/(N-1) (smin^(1/rho) - smax^(1/rho)))^rho, sigma_N = 0."""
    n = cfg.num_steps
    a = cfg.sigma_max ** (1.0 / cfg.rho)
    b = cfg.sigma_min ** (1.0 / cfg.rho)
    return [(a + i / (n - 1) * (b - a)) ** cfg.rho for i in range(n)] + [0.0]


def sigma_schedule(cfg: EDMConfig, device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """The sampling noise levels ``[num_steps + 1]``: sigma_max, ..., sigma_min, 0 (decreasing)."""
    return torch.tensor(_schedule_floats(cfg), device=device, dtype=dtype)


def start_index(mu: float, num_steps: int) -> int:
    """Partial-noising start step for noising ratio mu (GTA Sec. 4.2: mu = k/K, 0 < mu <= 1).

    mu = 1 starts at index 0 (sigma_max, pure generation); mu = 0.5 with 128 steps starts at 64
    (sigma ~ 2.43) and runs the remaining 64 steps.
    """
    if not (0.0 < mu <= 1.0):
        raise ValueError(f"noising ratio mu must satisfy 0 < mu <= 1, got {mu}")
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps}")
    # floor of N (1 - mu), tolerant of rounding: 10 x (1 - 0.9) is 0.99999... in floating point, and a plain
    # int() would start at step 0 (pure noise) instead of step 1.
    return int(math.floor(num_steps * (1.0 - mu) + 1e-9))


class Denoiser(nn.Module):
    """EDM preconditioning D(x; sigma, y) = c_skip x + c_out F(c_in x; c_noise, y) around a raw network F.

    ``net(x_in [B,T,D], c_noise [B], cond [B] | None, cond_dropped [B] bool | None) -> [B,T,D]``.
    ``cond=None`` means every condition is dropped (the unconditional model of GTA Eq. 5).
    """

    def __init__(self, net: nn.Module, sigma_data: float = 1.0) -> None:
        super().__init__()
        if sigma_data <= 0:
            raise ValueError(f"sigma_data must be positive, got {sigma_data}")
        self.net = net
        self.sigma_data = float(sigma_data)

    def forward(
        self, x: Tensor, sigma: Tensor, cond: Tensor | None, cond_dropped: Tensor | None = None
    ) -> Tensor:
        # x [B, T, D]; sigma [B] or scalar
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).reshape(-1).expand(b)  # [B]
        sd = self.sigma_data
        s = sigma.view(b, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / torch.sqrt(s**2 + sd**2)
        c_in = 1.0 / torch.sqrt(s**2 + sd**2)
        c_noise = torch.log(sigma) / 4.0  # [B]
        if cond is None:
            cond_dropped = None
        f = self.net(c_in * x, c_noise, cond, cond_dropped)  # [B, T, D], maybe bf16 under autocast
        return c_skip * x + c_out * f.to(x.dtype)


def edm_loss(
    denoiser: nn.Module,
    x0: Tensor,
    cond: Tensor | None,
    *,
    cfg: EDMConfig,
    loss_mask: Tensor | None = None,
    cond_drop_prob: float = 0.25,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unreduced EDM training loss ``[B, T, D]`` (EDM Eq. 2 with weight lambda(sigma), GTA Eq. 2 and 5).

    sigma ~ exp(N(P_mean, P_std^2)) per sample; loss = lambda(sigma) (D(x0 + n; sigma, y) - x0)^2 with
    lambda = (sigma^2 + sd^2) / (sigma sd)^2 = 1 / c_out^2, i.e. unit-variance targets for F. The
    condition is dropped with probability ``cond_drop_prob`` (beta ~ Bern(lambda) in GTA Eq. 5);
    this is the ONLY place dropout happens. ``loss_mask`` ([T, D] or [B, T, D], 1 = counts) zeroes
    padding entries (the action/reward of the last window row).
    """
    if x0.ndim != 3:
        raise ValueError(f"x0 must be [B, T, D], got shape {tuple(x0.shape)}")
    if not (0.0 <= cond_drop_prob <= 1.0):
        raise ValueError(f"cond_drop_prob must be in [0, 1], got {cond_drop_prob}")
    sd_net = getattr(denoiser, "sigma_data", cfg.sigma_data)
    if sd_net != cfg.sigma_data:
        raise ValueError(f"denoiser.sigma_data={sd_net} differs from cfg.sigma_data={cfg.sigma_data}")
    b = x0.shape[0]
    dev = x0.device
    rnd = torch.randn(b, device=dev, dtype=x0.dtype, generator=generator)
    sigma = torch.exp(rnd * cfg.p_std + cfg.p_mean)  # [B]
    n = torch.randn(x0.shape, device=dev, dtype=x0.dtype, generator=generator) * sigma.view(b, 1, 1)
    dropped = None
    if cond is not None:
        dropped = torch.rand(b, device=dev, generator=generator) < cond_drop_prob  # [B] bool
    d = denoiser(x0 + n, sigma, cond, dropped)  # [B, T, D]
    sd = cfg.sigma_data
    weight = ((sigma**2 + sd**2) / (sigma * sd) ** 2).view(b, 1, 1)
    loss = weight * (d - x0) ** 2
    if loss_mask is not None:
        loss = loss * loss_mask.to(device=dev, dtype=loss.dtype).expand_as(loss)
    return loss


def guided_denoise(
    denoiser: nn.Module, x: Tensor, sigma: Tensor, cond: Tensor | None, guidance_scale: float
) -> Tensor:
    """Classifier-free guidance (GTA Eq. 4): D_uncond + s (D_cond - D_uncond).

    s = 0 is the unconditional model, s = 1 the conditional one; GTA's weight w corresponds to
    s = w + 1 (paper default w = 2 -> s = 3). Both branches run in one batched call of 2B.
    """
    b = x.shape[0]
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype).reshape(-1).expand(b)  # [B]
    if cond is None:
        return denoiser(x, sigma, None, None)
    if guidance_scale == 1.0:
        return denoiser(x, sigma, cond, torch.zeros(b, dtype=torch.bool, device=x.device))
    if guidance_scale == 0.0:
        return denoiser(x, sigma, cond, torch.ones(b, dtype=torch.bool, device=x.device))
    dropped = torch.cat(
        [torch.zeros(b, dtype=torch.bool, device=x.device), torch.ones(b, dtype=torch.bool, device=x.device)]
    )
    d = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([cond, cond]), dropped)  # [2B, T, D]
    d_cond, d_uncond = d[:b], d[b:]
    return d_uncond + guidance_scale * (d_cond - d_uncond)


# Noise streams of the sampler (SeededNoise.randn's ``stream``): fixed so that a sample's noise is
# a function of its seed only. Stream 0 draws the starting noise, 1 + i the churn noise of step i,
# 1 + N + i the re-noising of known entries after step i (inpainting).
NOISE_STREAM_INIT = 0


def noise_stream_churn(i: int) -> int:
    return 1 + i


def noise_stream_known(i: int, num_steps: int) -> int:
    return 1 + num_steps + i


def edm_sampler(
    denoiser: nn.Module,
    x_start: Tensor,
    cond: Tensor | None,
    *,
    cfg: EDMConfig,
    start_index: int = 0,
    guidance_scale: float = 3.0,
    noise: SeededNoise | None = None,
    known: Tensor | None = None,
    known_mask: Tensor | None = None,
) -> Tensor:
    """Stochastic Heun sampler with churn (EDM Algorithm 2) and classifier-free guidance in both stages.

    start_index = 0: start from sigma_max * eps (x_start only gives the shape). start_index = k > 0:
    GTA partial noising (Eq. 9), x_k = x_start + sigma_k eps with x_start the z-scored original
    window, then denoising (Eq. 10) through steps k .. N-1. known/known_mask: after every step the
    masked entries are reset to known + sigma_{i+1} eps (inpainting; exact known values at the end).
    Randomness comes only from ``noise`` (per-sample seeds) or, if None, torch's global generator.
    Returns x at sigma = 0, ``[B, T, D]``.
    """
    n_steps = cfg.num_steps
    if not (0 <= start_index <= n_steps):
        raise ValueError(f"start_index must be in [0, {n_steps}], got {start_index}")
    if x_start.ndim != 3:
        raise ValueError(f"x_start must be [B, T, D], got shape {tuple(x_start.shape)}")
    if (known is None) != (known_mask is None):
        raise ValueError("known and known_mask must be given together")
    b = x_start.shape[0]
    shape = tuple(x_start.shape[1:])
    dev, dt = x_start.device, x_start.dtype
    if noise is not None and len(noise) != b:
        raise ValueError(f"noise has {len(noise)} seeds for a batch of {b}")

    def randn(stream: int) -> Tensor:
        if noise is None:
            return torch.randn((b, *shape), device=dev, dtype=dt)
        return noise.randn(stream, shape, device=dev, dtype=dt)

    if known is not None:
        known = known.to(device=dev, dtype=dt).expand(b, *shape)
        known_mask = known_mask.to(device=dev, dtype=torch.bool).expand(b, *shape)

    t = _schedule_floats(cfg)  # host floats: no device sync in the loop
    gamma_max = min(cfg.s_churn / n_steps, math.sqrt(2.0) - 1.0)

    eps = randn(NOISE_STREAM_INIT)
    x = eps * t[0] if start_index == 0 else x_start + t[start_index] * eps
    if known is not None:
        x = torch.where(known_mask, known + t[start_index] * eps, x)

    for i in range(start_index, n_steps):
        t_cur, t_next = t[i], t[i + 1]
        # Churn: temporarily raise the noise level to t_hat = (1 + gamma) t_i (Algorithm 2, lines 4-6).
        gamma = gamma_max if cfg.s_tmin <= t_cur <= cfg.s_tmax else 0.0
        t_hat = t_cur + gamma * t_cur
        if gamma > 0.0:
            x_hat = x + math.sqrt(t_hat**2 - t_cur**2) * cfg.s_noise * randn(noise_stream_churn(i))
        else:
            x_hat = x
        # Euler step from t_hat to t_{i+1} (lines 7-8); guided denoiser (GTA Eq. 4).
        d_cur = (x_hat - guided_denoise(denoiser, x_hat, _full(b, t_hat, x), cond, guidance_scale)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        # Second-order correction, guided as well, except on the last step to sigma = 0 (lines 9-11).
        if i < n_steps - 1:
            d_prime = (
                x_next - guided_denoise(denoiser, x_next, _full(b, t_next, x), cond, guidance_scale)
            ) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        if known is not None:
            x_next = torch.where(known_mask, known + t_next * randn(noise_stream_known(i, n_steps)), x_next)
        x = x_next
    return x


def _full(b: int, value: float, like: Tensor) -> Tensor:
    return torch.full((b,), value, device=like.device, dtype=like.dtype)  # [B]
