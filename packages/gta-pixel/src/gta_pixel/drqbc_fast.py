"""DrQ+BC for several seeds at once: the fast path of :mod:`gta_pixel.drqbc`.

GTA reports pixel results over 6 seeds (appendix C.4). DrQ+BC's encoder is four 32-channel convolutions, far
too small to fill a GPU with one seed's batch of 256, so S seeds train as one network:

- every parameter carries a leading seed axis and keeps the reference's name (``encoder.convnet.0.weight``
  [S, 32, 9, 3, 3], ``actor.trunk.0.weight`` [S, 50, 39200], ...), so seed k of a checkpoint is the
  reference's state dict after indexing ``[k]``;
- the convolutions are grouped convolutions (groups = S) over the seeds' batches laid side by side in the
  channel axis, the linear layers batched matmuls;
- the random shift is one uint8 gather from the frames resident on the device (:meth:`PixelReplay.shifted`);
- optional bf16 autocast of the encoder and the trunks' first product (the bulk of the work; LayerNorm, heads,
  losses, parameters and Adam stay fp32), optional channels_last convolutions;
- a step never reads a value back to the host (counter-based draws, a device std schedule, graph-safe Adam),
  so :class:`gta_rl.fast.StepRunner` can compile it and capture it whole in a CUDA graph.

In fp32 it computes what :class:`gta_pixel.drqbc.DrQBC` computes for each seed from the same draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gta_pixel.drqbc import DrQBCConfig, DrQBCNets, UpdateNoise, draw_noise, repr_dim, sample_action
from gta_pixel.replay import PixelReplay
from gta_rl.base import Agent
from gta_rl.nets import soft_update_
from gta_rl.optim import Adam


class SConv2d(nn.Module):
    """S independent convolutions (no padding): one grouped convolution, or (``grouped`` False) one convolution
    per seed, whichever the device's convolution library runs faster."""

    def __init__(self, seeds: int, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(seeds, out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(seeds, out_ch))
        self.stride = stride
        self.grouped = True

    def forward(self, x: Tensor) -> Tensor:
        """x [B, S in_ch, H, W] -> [B, S out_ch, H', W'] (seed s owns channel block s)."""
        s, o = self.weight.shape[:2]
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        if self.grouped:
            return F.conv2d(x, w.reshape(s * o, *w.shape[2:]), b.reshape(s * o), stride=self.stride, groups=s)
        return torch.cat([F.conv2d(part, w[k], b[k], stride=self.stride)
                          for k, part in enumerate(x.chunk(s, dim=1))], 1)


class SLinear(nn.Module):
    """S independent affine maps with nn.Linear's weight layout: weight [S, out, in], bias [S, out]."""

    def __init__(self, seeds: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(seeds, out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(seeds, out_dim))

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        """x [S, B, in] -> [S, B, out]; ``frozen``: gradients reach x, not the parameters."""
        w, b = (self.weight.detach(), self.bias.detach()) if frozen else (self.weight, self.bias)
        return torch.bmm(x, w.transpose(1, 2)) + b[:, None, :]


class SLayerNorm(nn.Module):
    """S LayerNorms (eps 1e-5 as nn.LayerNorm), computed in fp32: weight, bias [S, D]."""

    def __init__(self, seeds: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(seeds, dim))
        self.bias = nn.Parameter(torch.zeros(seeds, dim))

    def forward(self, x: Tensor, frozen: bool = False) -> Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if frozen else (self.weight, self.bias)
        x = F.layer_norm(x.float(), x.shape[-1:], eps=1e-5)
        return x * w[:, None, :] + b[:, None, :]


def _trunk(seeds: int, in_dim: int, dim: int) -> nn.Sequential:
    return nn.Sequential(SLinear(seeds, in_dim, dim), SLayerNorm(seeds, dim), nn.Tanh())


def _head(seeds: int, in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(SLinear(seeds, in_dim, hidden), nn.ReLU(), SLinear(seeds, hidden, hidden), nn.ReLU(),
                         SLinear(seeds, hidden, out_dim))


def run_head(net: nn.Sequential, x: Tensor, frozen: bool = False) -> Tensor:
    """A stacked Linear-ReLU-Linear-ReLU-Linear head, [S, B, in] -> [S, B, out]."""
    for layer in net:
        x = layer(x, frozen) if isinstance(layer, SLinear) else torch.relu(x)
    return x


def run_trunk(net: nn.Sequential, features: Tensor, autocast=nullcontext, frozen: bool = False) -> Tensor:
    """Linear (under ``autocast``: the 39,200-wide product) + LayerNorm (fp32) + tanh, [S, B, 50]."""
    with autocast():
        x = net[0](features, frozen)
    return torch.tanh(net[1](x, frozen))


def q_twin(critic: nn.Module, h: Tensor, action: Tensor, frozen: bool = False) -> Tensor:
    """Both Q heads on the critic latent h [S, B, 50] and actions [S, B, act] -> [S, 2, B]."""
    h_action = torch.cat([h, action], -1)
    return torch.stack([run_head(critic.Q1, h_action, frozen), run_head(critic.Q2, h_action, frozen)], 1)[..., 0]


class StackedEncoder(nn.Module):
    def __init__(self, seeds: int, in_channels: int) -> None:
        super().__init__()
        self.convnet = nn.Sequential(SConv2d(seeds, in_channels, 32, 3, 2), nn.ReLU(), SConv2d(seeds, 32, 32, 3, 1),
                                     nn.ReLU(), SConv2d(seeds, 32, 32, 3, 1), nn.ReLU(),
                                     SConv2d(seeds, 32, 32, 3, 1), nn.ReLU())

    def forward(self, obs: Tensor, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> Tensor:
        """obs [B, S, C, H, W] uint8 (seed-interleaved batch) -> features [S, B, repr_dim] (in ``dtype``)."""
        b, s = obs.shape[:2]
        x = obs.reshape(b, -1, *obs.shape[3:]).to(dtype) / 255.0 - 0.5  # [B, S C, H, W]
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        h = self.convnet(x)  # [B, S 32, h, w]
        return h.reshape(b, s, -1).transpose(0, 1)  # [S, B, 32 h w]


class StackedActor(nn.Module):
    def __init__(self, seeds: int, repr_dim: int, act_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = _trunk(seeds, repr_dim, feature_dim)
        self.policy = _head(seeds, feature_dim, hidden_dim, act_dim)


class StackedCritic(nn.Module):
    def __init__(self, seeds: int, repr_dim: int, act_dim: int, feature_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.trunk = _trunk(seeds, repr_dim, feature_dim)
        self.Q1 = _head(seeds, feature_dim + act_dim, hidden_dim, 1)
        self.Q2 = _head(seeds, feature_dim + act_dim, hidden_dim, 1)


class DrQBCStack(Agent):
    """S seeds of DrQ+BC in one set of stacked networks (parameter names of :class:`DrQBCNets`)."""

    name = "drqbc"
    policy_prefixes = ("encoder.", "actor.")

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        act_dim: int,
        seeds: Sequence[int],
        config: DrQBCConfig = DrQBCConfig(),
        device: torch.device | str = "cpu",
        *,
        bf16: bool = False,
        channels_last: bool = False,
        grouped_convs: bool = True,
        init: bool = True,
    ) -> None:
        super().__init__(seeds, 1.0, device)
        self.config, self.obs_shape, self.act_dim = config, tuple(obs_shape), int(act_dim)
        s, dim = self.num_seeds, repr_dim(obs_shape[1])
        self.encoder = StackedEncoder(s, obs_shape[0])
        self.actor = StackedActor(s, dim, act_dim, config.feature_dim, config.hidden_dim)
        self.critic = StackedCritic(s, dim, act_dim, config.feature_dim, config.hidden_dim)
        self.critic_target = StackedCritic(s, dim, act_dim, config.feature_dim, config.hidden_dim)
        self.critic_target.requires_grad_(False)
        if init:  # each seed's reference initialisation, stacked
            self.load_seed_states([DrQBCNets(self.obs_shape, act_dim, config, seed).state_dict()
                                   for seed in self.seed_list])
        self.to(self.device_)
        self.bf16, self.channels_last = bool(bf16), bool(channels_last)
        for conv in self.encoder.convnet:
            if isinstance(conv, SConv2d):
                conv.grouped = bool(grouped_convs)
        self.optimizers = {name: Adam(list(getattr(self, name).parameters()), config.lr)
                           for name in ("encoder", "actor", "critic")}

    # -- pieces ---------------------------------------------------------------------------------------

    def autocast(self):
        """bf16 autocast of the encoder and trunk products when enabled, else nothing."""
        if not self.bf16:
            return nullcontext()
        return torch.autocast(self.step.device.type, dtype=torch.bfloat16)

    def encode(self, obs: Tensor) -> Tensor:
        """Stacked frames [B, S, C, H, W] uint8 -> encoder features [S, B, repr_dim]."""
        with self.autocast():
            return self.encoder(obs, torch.bfloat16 if self.bf16 else torch.float32, self.channels_last)

    def latents(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(actor trunk, critic trunk) latents [S, B, 50] of encoder features: GTA's pixel latent space."""
        return run_trunk(self.actor.trunk, features, self.autocast), run_trunk(self.critic.trunk, features, self.autocast)

    def actor_mean(self, h: Tensor, frozen: bool = False) -> Tensor:
        """tanh of the policy head on actor latents [S, B, 50] -> [S, B, act]."""
        return torch.tanh(run_head(self.actor.policy, h, frozen))

    # -- training -------------------------------------------------------------------------------------

    def train_step(self, replay: PixelReplay, batch_size: int, *, actor_step: bool = True) -> dict[str, Tensor]:
        """Draw this step's noise for every seed, update, advance the step counter; no host synchronisation."""
        noise = draw_noise(self.rng(), replay.num_rows, batch_size, self.act_dim, self.config.pad)
        metrics = self.update(replay, noise)
        self.step.add_(1)
        return metrics

    def update(self, replay: PixelReplay, noise: UpdateNoise) -> dict[str, Tensor]:
        """One DrQ+BC update of every seed from the draws ``noise`` (see :meth:`gta_pixel.drqbc.DrQBC.update`);
        per-seed metrics [S]."""
        cfg = self.config
        std = cfg.stddev_tensor(self.step)
        rows = noise.rows  # [S, B]
        obs = replay.shifted(replay.obs_rows[rows.T], noise.obs_shifts.transpose(0, 1), cfg.pad)  # [B, S, C, H, W]
        next_obs = replay.shifted(replay.next_rows[rows.T], noise.next_shifts.transpose(0, 1), cfg.pad)
        actions, rewards, discounts = replay.actions[rows], replay.rewards[rows], replay.discounts[rows]
        features = self.encode(obs)  # [S, B, repr]
        with torch.no_grad():
            next_features = self.encode(next_obs)
            h_actor = run_trunk(self.actor.trunk, next_features, self.autocast)
            next_action = sample_action(self.actor_mean(h_actor), std, noise.target_eps, cfg.std_clip)
            h_target = run_trunk(self.critic_target.trunk, next_features, self.autocast)
            y = rewards + discounts * q_twin(self.critic_target, h_target, next_action).amin(1)  # [S, B]
        q = q_twin(self.critic, run_trunk(self.critic.trunk, features, self.autocast), actions)  # [S, 2, B]
        critic_loss = (q - y[:, None]).square().mean(-1).sum(1)  # [S]: MSE(Q1, y) + MSE(Q2, y)
        enc, crit = self.optimizers["encoder"], self.optimizers["critic"]
        grads = torch.autograd.grad(critic_loss.sum(), enc.params + crit.params)
        crit.step(grads[len(enc.params):])
        enc.step(grads[:len(enc.params)])

        # The actor: on detached features, through the updated critic with frozen weights (V-D4RL lets gradients
        # reach the critic too and discards them at the next zero_grad).
        features = features.detach()
        h_actor = run_trunk(self.actor.trunk, features, self.autocast)
        action = sample_action(self.actor_mean(h_actor), std, noise.actor_eps, cfg.std_clip)
        h_critic = run_trunk(self.critic.trunk, features, self.autocast, frozen=True)
        q_pi = q_twin(self.critic, h_critic, action, frozen=True).amin(1)  # [S, B]
        lam = cfg.bc_weight / q_pi.detach().abs().mean(-1)  # [S]
        bc = (action - actions).square().mean((1, 2))  # [S]
        actor_loss = -q_pi.mean(-1) * lam + bc
        actor = self.optimizers["actor"]
        actor.step(torch.autograd.grad(actor_loss.sum(), actor.params))
        soft_update_(self.critic_target, self.critic, cfg.tau)
        return {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "bc_mse": bc.detach(),
                "q_mean": q.detach()[:, 0].mean(-1), "lambda": lam}

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Mean actions for stacked frames [S, N, C, H, W] uint8 (seed s acts on row s) -> [S, N, act]."""
        features = self.encode(obs.transpose(0, 1))
        return self.actor_mean(run_trunk(self.actor.trunk, features, self.autocast))

    # -- per-seed views -------------------------------------------------------------------------------

    def seed_state(self, k: int) -> dict[str, Tensor]:
        """Seed k's networks as a :class:`DrQBCNets` state dict (copies)."""
        return {name: t[k].detach().clone() for name, t in self.state_dict().items() if name not in ("seeds", "step")}

    def load_seed_states(self, states: Sequence[dict[str, Tensor]]) -> None:
        """Set every seed's networks from :class:`DrQBCNets` state dicts (one per seed, in seed order)."""
        if len(states) != self.num_seeds:
            raise ValueError(f"{len(states)} seed states for {self.num_seeds} seeds")
        stacked = {k: torch.stack([s[k] for s in states]) for k in states[0]}
        missing, unexpected = self.load_state_dict(stacked, strict=False)
        if unexpected or set(missing) - {"seeds", "step"}:
            raise ValueError(f"seed states do not fit the networks (missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]})")
