"""DrQ+BC (Lu et al., V-D4RL, 2022): the readable reference, written as V-D4RL's ``drqbc/drqv2.py`` has it.

DrQ-v2's networks (Yarats et al., 2021) trained offline with TD3+BC's behaviour-cloning term: GTA's pixel
baseline (paper section 5.2, Table 3, appendix C.4), which pretrains the encoder and the actor and critic trunks
that define the latent space GTA augments.

- Encoder: ``obs / 255 - 0.5``, Conv(3F -> 32, 3x3, stride 2), 3x Conv(32 -> 32, 3x3), ReLU after each,
  flattened (32 x 35 x 35 = 39,200 features at 84 px).
- Actor: its own trunk Linear(39,200 -> 50) + LayerNorm + tanh, a 1024-1024 ReLU policy, tanh mean; actions
  are drawn as mean + clip(std * eps, +-c), clamped to (-1, 1) with a straight-through gradient
  (V-D4RL's ``TruncatedNormal.sample``).
- Critic: its own trunk of the same form, twin Q heads 1024-1024 on [h, a].
- Update: random shift (replicate pad 4, integer shift by ``grid_sample``) of obs and next obs; next obs
  encoded without gradient; n-step target y = R_n + gamma^n d min_j Q'_j(h', a'), a' sampled from the online
  actor with clipped noise; the critic loss MSE(Q1, y) + MSE(Q2, y) steps the critic AND the encoder (the
  encoder learns only through the critic); the actor, on detached features, minimises
  -lambda min_j Q_j(h, a) + MSE(a, a_data) with a the noisy clipped sample and lambda = 2.5 / mean|Q| (TD3+BC's
  Eq. 5); Polyak averaging (tau 0.01) of the whole critic, trunk included.

Every random draw (batch rows, shifts, noise) is given to :meth:`DrQBC.update` as an :class:`UpdateNoise`, drawn
from the counter-based seed streams of :mod:`gta_rl.rng`, so the stacked fast path (:mod:`gta_pixel.drqbc_fast`)
can be checked against this one draw for draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gta_rl.nets import member_generator
from gta_rl.rng import SeedStreams

# Streams of the per-seed random draws (gta_rl.rng); the replay's batch rows use stream 1.
ROW_STREAM = 1
OBS_SHIFT_STREAM = 2
NEXT_SHIFT_STREAM = 3
TARGET_NOISE_STREAM = 100
ACTOR_NOISE_STREAM = 101


@dataclass(frozen=True)
class DrQBCConfig:
    """V-D4RL's offline DrQ+BC settings (file:line in conglu1997/v-d4rl's drqbc/)."""

    feature_dim: int = 50  # trunk width (cfgs/config.yaml:37)
    hidden_dim: int = 1024  # head width (cfgs/algo/drqv2.yaml:17)
    lr: float = 3e-4  # Adam for encoder, actor and critic (cfgs/task/offline_dmc.yaml:8)
    batch_size: int = 256  # cfgs/config.yaml:26
    discount: float = 0.99  # gamma (cfgs/config.yaml:10)
    nstep: int = 3  # the published command's nstep=3 (README.md:69; the config file says 1)
    tau: float = 0.01  # Polyak rate of the target critic, trunk included (cfgs/algo/drqv2.yaml:13)
    bc_weight: float = 2.5  # lambda = bc_weight / mean|Q| (drqv2.py:236)
    std_init: float = 1.0  # stddev_schedule linear(1.0, 0.1, 250000) (cfgs/task/offline_dmc.yaml:5) ...
    std_final: float = 0.1
    std_duration: int = 250_000  # ... in loop steps
    loop_steps_per_update: int = 2  # update_every_steps: the schedule's clock advances 2 per update (drqv2.py:260)
    std_clip: float = 0.3  # stddev_clip (cfgs/algo/drqv2.yaml:20)
    pad: int = 4  # RandomShiftsAug(pad=4)
    frame_stack: int = 3  # cfgs/config.yaml:8

    def stddev(self, update: int) -> float:
        """Exploration std of the ``update``-th gradient update (0-based): V-D4RL's ``utils.schedule`` at loop
        step ``loop_steps_per_update * update``."""
        mix = min(max(self.loop_steps_per_update * update / self.std_duration, 0.0), 1.0)
        return (1.0 - mix) * self.std_init + mix * self.std_final

    def stddev_tensor(self, update: Tensor) -> Tensor:
        """:meth:`stddev` of a device step counter (no host read: usable inside a captured step)."""
        mix = (update.to(torch.float32) * (self.loop_steps_per_update / self.std_duration)).clamp(0.0, 1.0)
        return (1.0 - mix) * self.std_init + mix * self.std_final


def conv_output_side(size: int) -> int:
    """Side of the encoder's feature map for ``size`` x ``size`` frames (84 -> 35)."""
    side = (size - 3) // 2 + 1 - 3 * 2
    if side < 1:
        raise ValueError(f"frames of {size} px are too small for the encoder (at least 15 px)")
    return side


def repr_dim(size: int) -> int:
    """Encoder features for ``size`` x ``size`` frames: 32 x 35 x 35 = 39,200 at 84 px."""
    return 32 * conv_output_side(size) ** 2


def weight_init(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DrQ-v2's ``utils.weight_init``: orthogonal Linear weights (gain 1) and Conv weights (gain sqrt 2, ReLU's),
    zero biases; LayerNorm keeps (1, 0)."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight.data, generator=generator)
        module.bias.data.fill_(0.0)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight.data, nn.init.calculate_gain("relu"), generator=generator)
        module.bias.data.fill_(0.0)


class Encoder(nn.Module):
    def __init__(self, in_channels: int, size: int) -> None:
        super().__init__()
        self.repr_dim = repr_dim(size)
        self.convnet = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, stride=1), nn.ReLU(),
        )

    def forward(self, obs: Tensor) -> Tensor:
        obs = obs / 255.0 - 0.5  # [B, 3F, H, W] in [-0.5, 0.5]
        h = self.convnet(obs)
        return h.view(h.shape[0], -1)  # [B, repr_dim]


def trunk(in_dim: int, feature_dim: int) -> nn.Sequential:
    """Linear + LayerNorm + tanh: the 50-d latent of the actor and of the critic (SynthER's latent)."""
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def head(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, out_dim))


class Actor(nn.Module):
    def __init__(self, repr_dim: int, act_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.policy = head(feature_dim, hidden_dim, act_dim)

    def forward(self, features: Tensor) -> Tensor:
        """The policy mean tanh(policy(trunk(features))), [B, act]."""
        return torch.tanh(self.policy(self.trunk(features)))


class Critic(nn.Module):
    def __init__(self, repr_dim: int, act_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = trunk(repr_dim, feature_dim)
        self.Q1 = head(feature_dim + act_dim, hidden_dim, 1)
        self.Q2 = head(feature_dim + act_dim, hidden_dim, 1)

    def forward(self, features: Tensor, action: Tensor) -> tuple[Tensor, Tensor]:
        h_action = torch.cat([self.trunk(features), action], dim=-1)
        return self.Q1(h_action), self.Q2(h_action)  # [B, 1] each


def sample_action(mean: Tensor, std: float | Tensor, eps: Tensor, clip: float) -> Tensor:
    """V-D4RL's ``TruncatedNormal(mean, std).sample(clip)`` from given standard normal draws ``eps``:
    mean + clip(std * eps, +-clip), clamped to [-1 + 1e-6, 1 - 1e-6] with the gradient of the unclamped value."""
    x = mean + torch.clamp(eps * std, -clip, clip)
    clamped = torch.clamp(x, -1.0 + 1e-6, 1.0 - 1e-6)
    return x - x.detach() + clamped.detach()


def random_shift(x: Tensor, shifts: Tensor, pad: int) -> Tensor:
    """DrQ-v2's ``RandomShiftsAug`` with given shifts: x [N, C, H, W] float, ``shifts`` [N, 2] integers in
    [0, 2 pad] (x then y). Replicate padding, then ``grid_sample`` (bilinear, align_corners=False) at pixel
    centres moved by whole pixels: out[y, x] = padded[y + shift_y, x + shift_x]."""
    n, _, h, w = x.shape
    if h != w:
        raise ValueError(f"random shift needs square frames, got {h}x{w}")
    x = F.pad(x, (pad, pad, pad, pad), "replicate")
    eps = 1.0 / (h + 2 * pad)
    arange = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, device=x.device, dtype=x.dtype)[:h]
    arange = arange.unsqueeze(0).repeat(h, 1).unsqueeze(2)
    base_grid = torch.cat([arange, arange.transpose(1, 0)], dim=2)
    base_grid = base_grid.unsqueeze(0).repeat(n, 1, 1, 1)  # [N, H, W, 2]
    shift = shifts.to(x.dtype).view(n, 1, 1, 2) * (2.0 / (h + 2 * pad))
    return F.grid_sample(x, base_grid + shift, padding_mode="zeros", align_corners=False)


@dataclass
class PixelBatch:
    """One DrQ+BC batch (stacked frames unshifted), [B, ...], or [S, B, ...] for stacked seeds."""

    obs: Tensor  # [B, 3F, H, W] uint8
    actions: Tensor  # [B, act] a_t
    rewards: Tensor  # [B] sum_k gamma^k r_{t+k}, k < n
    discounts: Tensor  # [B] gamma^n times the discount of step t+n-1
    next_obs: Tensor  # [B, 3F, H, W] uint8, the stacked observation n steps later


@dataclass
class UpdateNoise:
    """The random draws of one update, [S, B, ...] (one row per stacked seed)."""

    rows: Tensor  # [S, B] int64 batch rows of the replay
    obs_shifts: Tensor  # [S, B, 2] int64 in [0, 2 pad]
    next_shifts: Tensor  # [S, B, 2]
    target_eps: Tensor  # [S, B, act] standard normal: the target action's noise
    actor_eps: Tensor  # [S, B, act]: the actor loss's sampled action

    def seed(self, k: int) -> UpdateNoise:
        return UpdateNoise(*(t[k:k + 1] for t in (self.rows, self.obs_shifts, self.next_shifts, self.target_eps,
                                                    self.actor_eps)))


def draw_noise(rng: SeedStreams, num_rows: int, batch_size: int, act_dim: int, pad: int) -> UpdateNoise:
    """Every random draw of one update for each seed of ``rng`` at its current step."""
    return UpdateNoise(
        rows=rng.randint(ROW_STREAM, num_rows, (batch_size,)),
        obs_shifts=rng.randint(OBS_SHIFT_STREAM, 2 * pad + 1, (batch_size, 2)),
        next_shifts=rng.randint(NEXT_SHIFT_STREAM, 2 * pad + 1, (batch_size, 2)),
        target_eps=rng.normal(TARGET_NOISE_STREAM, (batch_size, act_dim)),
        actor_eps=rng.normal(ACTOR_NOISE_STREAM, (batch_size, act_dim)),
    )


class DrQBCNets(nn.Module):
    """One seed's networks: encoder, actor, critic and target critic, initialised from the seed alone."""

    def __init__(self, obs_shape: tuple[int, int, int], act_dim: int, config: DrQBCConfig, seed: int) -> None:
        super().__init__()
        channels, height, width = obs_shape
        if height != width:
            raise ValueError(f"DrQ+BC needs square frames, got {height}x{width}")
        self.encoder = Encoder(channels, height)
        dim = self.encoder.repr_dim
        self.actor = Actor(dim, act_dim, config.feature_dim, config.hidden_dim)
        self.critic = Critic(dim, act_dim, config.feature_dim, config.hidden_dim)
        for name in ("encoder", "actor", "critic"):
            gen = member_generator(seed, f"drqbc.{name}")
            for module in getattr(self, name).modules():
                weight_init(module, gen)
        self.critic_target = Critic(dim, act_dim, config.feature_dim, config.hidden_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)


class DrQBC:
    """One seed of DrQ+BC, updated as ``drqv2.py``'s ``DrQV2Agent.update`` (torch.optim.Adam, backward())."""

    def __init__(self, obs_shape: tuple[int, int, int], act_dim: int, config: DrQBCConfig = DrQBCConfig(),
                 seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.config, self.act_dim = config, act_dim
        self.nets = DrQBCNets(obs_shape, act_dim, config, seed).to(device)
        self.encoder, self.actor = self.nets.encoder, self.nets.actor
        self.critic, self.critic_target = self.nets.critic, self.nets.critic_target
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=config.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=config.lr)

    def update(self, batch: PixelBatch, noise: UpdateNoise, update: int) -> dict[str, float]:
        """One gradient update (``update``: its 0-based index, the std schedule's clock). ``noise`` holds this
        seed's draws ([1, B, ...], its ``rows`` already used to build ``batch``)."""
        cfg = self.config
        std = cfg.stddev(update)
        obs = random_shift(batch.obs.float(), noise.obs_shifts[0], cfg.pad)
        next_obs = random_shift(batch.next_obs.float(), noise.next_shifts[0], cfg.pad)
        obs = self.encoder(obs)
        with torch.no_grad():
            next_obs = self.encoder(next_obs)

        # Critic (and encoder): n-step clipped double-Q target with the online actor's noisy action.
        with torch.no_grad():
            next_action = sample_action(self.actor(next_obs), std, noise.target_eps[0], cfg.std_clip)
            target_q1, target_q2 = self.critic_target(next_obs, next_action)
            target_q = batch.rewards[:, None] + batch.discounts[:, None] * torch.min(target_q1, target_q2)
        q1, q2 = self.critic(obs, batch.actions)
        critic_loss = F.mse_loss(q1, target_q) + F.mse_loss(q2, target_q)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        # Actor on the features computed before the encoder step, detached; BC on the noisy clipped sample.
        features = obs.detach()
        action = sample_action(self.actor(features), std, noise.actor_eps[0], cfg.std_clip)
        q = torch.min(*self.critic(features, action))
        lam = cfg.bc_weight / q.detach().abs().mean()
        bc = F.mse_loss(action, batch.actions)
        actor_loss = -q.mean() * lam + bc
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters(), strict=True):
                tp.copy_(cfg.tau * p + (1.0 - cfg.tau) * tp)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item(), "bc_mse": bc.item(),
                "q_mean": q1.mean().item(), "lambda": lam.item()}

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Deterministic (mean) actions for stacked frames [B, 3F, H, W] uint8: V-D4RL's eval_mode act."""
        return self.actor(self.encoder(obs.float()))

