"""The SAC agent (Haarnoja et al. 2018, eqs. 5, 7, 18): a tanh-Gaussian actor, twin critics with Polyak-averaged
targets and a learned temperature, on gta-rl's stacked networks with one member (the twin critics: two members
in one batched matmul), Adam and counter-based random streams::

    y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a' | s')),  a' ~ pi(. | s')
    L_Q = sum_j mean (Q_j(s, a) - y)^2
    L_pi = mean (alpha log pi(a~ | s) - min_j Q_j(s, a~)),  a~ = tanh(mu + sigma eps) (reparameterised)
    L_alpha = -mean log(alpha) (log pi(a~ | s) + target_entropy)

The actor is the tanh-Gaussian of ``gta_data.policies`` (bounded log std as CleanRL's ``sac_continuous``).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from gta_rl.base import freeze, step_jointly
from gta_rl.behaviour.config import S_ACTOR, S_TARGET, SACConfig
from gta_rl.nets import StackedMLP, mlp_generators, soft_update_
from gta_rl.optim import Adam
from gta_rl.rng import SeedStreams


class SACAgent(nn.Module):
    """Tanh-Gaussian actor, twin critics with targets, learned temperature (one seed)."""

    def __init__(self, cfg: SACConfig, obs_dim: int, act_dim: int, low: np.ndarray, high: np.ndarray,
                 device: torch.device) -> None:
        super().__init__()
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        seeds = [cfg.seed]
        # StackedMLP with one member (actor) and two members (the twin critics in one batched matmul).
        self.actor = StackedMLP(mlp_generators(seeds, "sac.actor"), [obs_dim, *cfg.hidden, 2 * act_dim])
        self.critic = StackedMLP(mlp_generators(seeds, "sac.q", 2), [obs_dim + act_dim, *cfg.hidden, 1])
        self.critic_target = freeze(copy.deepcopy(self.critic))
        self.log_alpha = nn.Parameter(torch.full((), math.log(cfg.init_alpha)))
        self.register_buffer("scale", torch.as_tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("bias", torch.as_tensor((high + low) / 2.0, dtype=torch.float32))
        self.register_buffer("seeds", torch.tensor(seeds, dtype=torch.int64))
        self.register_buffer("update_step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("env_step", torch.zeros((), dtype=torch.int64))
        self.target_entropy = float(-act_dim if cfg.target_entropy is None else cfg.target_entropy)
        self.to(device)
        self.optimizers = {
            "actor": Adam(list(self.actor.parameters()), cfg.actor_lr),
            "critic": Adam(list(self.critic.parameters()), cfg.critic_lr),
            "alpha": Adam([self.log_alpha], cfg.alpha_lr),
        }

    # -- policy ---------------------------------------------------------------------------------------

    def distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Pre-tanh Gaussian (mean, log_std), each [B, act], for obs [B, obs]."""
        out = self.actor(obs[None])[0]  # [B, 2 act]
        mean, raw = out[:, : self.act_dim], out[:, self.act_dim:]
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        return mean, lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0)

    def sample(self, obs: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
        """Reparameterised action in env units and its log-probability, for standard normal noise [B, act]."""
        mean, log_std = self.distribution(obs)
        u = mean + log_std.exp() * noise
        # log N(u; mean, std) - sum log |d a / d u|, with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))
        # (stable for large |u|) and the constant log(scale) of the rescaling to the env's bounds.
        log_prob = (-0.5 * noise.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u)) + self.scale.log()).sum(-1)
        return torch.tanh(u) * self.scale + self.bias, log_prob

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        """Deterministic action tanh(mean) in env units (evaluation)."""
        mean, _ = self.distribution(obs)
        return torch.tanh(mean) * self.scale + self.bias

    # -- learning -------------------------------------------------------------------------------------

    def streams(self, counter: Tensor) -> SeedStreams:
        return SeedStreams(self.seeds, counter)

    def update(self, obs: Tensor, act: Tensor, rew: Tensor, next_obs: Tensor, term: Tensor) -> Tensor:
        """One gradient step of critics, actor and temperature; returns [critic loss, actor loss, alpha,
        entropy] before the step, on the device."""
        cfg = self.cfg
        rng = self.streams(self.update_step)
        b = obs.shape[0]
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_a, next_logp = self.sample(next_obs, rng.normal(S_TARGET, (b, self.act_dim))[0])
            q_next = self.critic_target(torch.cat([next_obs, next_a], -1)[None], shared=2)  # [2, B, 1]
            y = rew + cfg.gamma * (1.0 - term) * (q_next.min(0).values[:, 0] - alpha * next_logp)  # [B]
        q = self.critic(torch.cat([obs, act], -1)[None], shared=2)[:, :, 0]  # [2, B]
        critic_loss = (q - y).square().mean(1).sum()
        pi_a, logp = self.sample(obs, rng.normal(S_ACTOR, (b, self.act_dim))[0])
        # Frozen critic: the actor's gradient must not reach the critic (step_jointly's contract).
        q_pi = self.critic(torch.cat([obs, pi_a], -1)[None], shared=2, frozen=True)[:, :, 0].min(0).values
        actor_loss = (alpha * logp - q_pi).mean()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        step_jointly([(critic_loss, self.optimizers["critic"]), (actor_loss, self.optimizers["actor"]),
                      (alpha_loss, self.optimizers["alpha"])])
        soft_update_(self.critic_target, self.critic, cfg.tau)
        self.update_step.add_(1)
        return torch.stack([critic_loss.detach(), actor_loss.detach(), alpha, -logp.detach().mean()])

    def full_state_dict(self) -> dict[str, Tensor]:
        out = {f"model.{k}": v for k, v in self.state_dict().items()}
        for name, opt in self.optimizers.items():
            out.update({f"optim.{name}.{k}": v for k, v in opt.state_dict().items()})
        return out

    def load_full_state_dict(self, state: dict[str, Tensor]) -> None:
        self.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
        for name, opt in self.optimizers.items():
            prefix = f"optim.{name}."
            opt.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    def actor_tensors(self) -> dict[str, Tensor]:
        """Actor layers as (w [in, out], b [out]) tensors, the layout of gta-data policy files."""
        out = {}
        for i, layer in enumerate(self.actor.layers):
            out[f"w{i}"] = layer.weight[0]
            out[f"b{i}"] = layer.bias[0, 0]
        return out
