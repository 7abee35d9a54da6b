"""TD3+BC (Fujimoto and Gu, 2021), the first offline RL algorithm of GTA's Table 1.

Critic target y = r + gamma (1 - d) min_j Q'_j(s', clip(pi'(s') + clip(eps, -c, c), -m, m)), eps ~
N(0, sigma^2); critic loss sum_j MSE(Q_j(s, a), y). Every ``policy_freq`` steps the actor minimises
-lambda Q_1(s, pi(s)) + MSE(pi(s), a) with lambda = alpha / mean|Q_1(s, pi(s))| (detached), then both
target networks move by Polyak averaging. Defaults are CORL's ``algorithms/offline/td3_bc.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gta_rl.base import Agent, freeze, grads
from gta_rl.buffer import Batch
from gta_rl.nets import FP32, Arithmetic, StackedMLP, mlp_generators, soft_update_
from gta_rl.optim import Adam

_NOISE_STREAM = 100


@dataclass(frozen=True)
class TD3BCConfig:
    hidden: tuple[int, ...] = (256, 256)  # actor and critic hidden widths (CORL: 256-256 ReLU)
    actor_lr: float = 3e-4  # CORL actor_lr
    critic_lr: float = 3e-4  # CORL critic_lr
    discount: float = 0.99  # gamma
    tau: float = 0.005  # Polyak rate of both target networks
    policy_noise: float = 0.2  # target policy smoothing noise std, in units of max_action
    noise_clip: float = 0.5  # clip of that noise, in units of max_action
    policy_freq: int = 2  # actor and target updates every policy_freq critic updates
    alpha: float = 2.5  # BC trade-off: lambda = alpha / mean|Q|
    normalize_reward: bool = False  # CORL TD3+BC leaves rewards as they are
    reward_scale: float = 1.0  # r <- scale * r + bias
    reward_bias: float = 0.0


PRESETS: dict[str, dict] = {}


class TD3BC(Agent):
    name = "td3bc"

    def __init__(
        self,
        config: TD3BCConfig,
        obs_dim: int,
        act_dim: int,
        seeds: Sequence[int],
        max_action: float = 1.0,
        device: torch.device | str = "cpu",
        total_steps: int = 1,
        arithmetic: Arithmetic = FP32,
    ) -> None:
        super().__init__(seeds, max_action, device, arithmetic)
        self.config = config
        self.update_period = config.policy_freq
        self.act_dim = act_dim
        self.actor = StackedMLP(mlp_generators(self.seed_list, "td3bc.actor"), [obs_dim, *config.hidden, act_dim],
                                arithmetic=arithmetic)
        self.critic = StackedMLP(
            mlp_generators(self.seed_list, "td3bc.critic", 2), [obs_dim + act_dim, *config.hidden, 1],
            arithmetic=arithmetic,
        )
        self.actor_target = freeze(copy.deepcopy(self.actor))
        self.critic_target = freeze(copy.deepcopy(self.critic))
        self.to(self.device_)
        self.optimizers = {
            "actor": Adam(list(self.actor.parameters()), config.actor_lr),
            "critic": Adam(list(self.critic.parameters()), config.critic_lr),
        }

    def policy(self, net: StackedMLP, obs: Tensor) -> Tensor:
        return self.max_action * torch.tanh(net(obs))  # [S, B, act]

    def q_twin(self, net: StackedMLP, obs: Tensor, act: Tensor) -> Tensor:
        s, b, _ = obs.shape
        return net(torch.cat([obs, act], -1), shared=2).view(s, 2, b)  # [S, 2, B]

    def q_first(self, net: StackedMLP, obs: Tensor, act: Tensor, frozen: bool = False) -> Tensor:
        return net(torch.cat([obs, act], -1), first_of=2, frozen=frozen).squeeze(-1)  # [S, B]

    def update(self, batch: Batch, *, actor_step: bool = True) -> dict[str, Tensor]:
        cfg, m = self.config, self.max_action
        rng = self.rng()
        s, b = batch.rewards.shape
        with torch.no_grad():
            eps = rng.normal(_NOISE_STREAM, (b, self.act_dim))  # [S, B, act]
            noise = (eps * cfg.policy_noise * m).clamp(-cfg.noise_clip * m, cfg.noise_clip * m)
            next_action = (self.policy(self.actor_target, batch.next_observations) + noise).clamp(-m, m)
            target_q = self.q_twin(self.critic_target, batch.next_observations, next_action).amin(1)  # [S, B]
            y = batch.rewards + (1.0 - batch.dones) * cfg.discount * target_q
        q = self.q_twin(self.critic, batch.observations, batch.actions)  # [S, 2, B]
        critic_loss = (q - y[:, None]).square().mean(-1).sum(1)  # [S]: MSE(Q1, y) + MSE(Q2, y)
        self.optimizers["critic"].step(grads(critic_loss.sum(), self.critic.parameters()))
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.detach().mean((1, 2))}
        if actor_step:
            # CORL steps the critic first, so the actor sees the updated critic.
            pi = self.policy(self.actor, batch.observations)
            q1 = self.q_first(self.critic, batch.observations, pi, frozen=True)  # [S, B], no gradient to Q
            lmbda = cfg.alpha / q1.abs().mean(-1).detach()  # [S]
            bc = (pi - batch.actions).square().mean((1, 2))  # [S]
            actor_loss = -lmbda * q1.mean(-1) + bc
            self.optimizers["actor"].step(grads(actor_loss.sum(), self.actor.parameters()))
            soft_update_(self.critic_target, self.critic, cfg.tau)
            soft_update_(self.actor_target, self.actor, cfg.tau)
            metrics.update(actor_loss=actor_loss.detach(), bc_mse=bc.detach(), lambda_=lmbda)
        return metrics

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        return self.policy(self.actor, obs)
