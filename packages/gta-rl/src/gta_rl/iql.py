"""Implicit Q-Learning (Kostrikov et al., 2022), one of the offline RL algorithms of GTA's Table 1.

V minimises the expectile loss L_2^tau(min_j Q'_j(s, a) - V(s)) with L_2^tau(u) = |tau - 1(u < 0)| u^2;
each Q_j minimises MSE(Q_j(s, a), r + gamma (1 - d) V(s')); the actor maximises the advantage-weighted
log-likelihood exp(beta (min_j Q'_j(s, a) - V(s))) log pi(a | s), weights clipped at 100 (advantage
weighted regression). Defaults and the per-family settings are CORL's ``iql.py`` and its configs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gta_rl.base import Agent, freeze, step_jointly
from gta_rl.buffer import Batch
from gta_rl.nets import FP32, Arithmetic, StackedMLP, mlp_generators, soft_update_
from gta_rl.optim import Adam, cosine_schedule


@dataclass(frozen=True)
class IQLConfig:
    hidden: tuple[int, ...] = (256, 256)  # Q, V and actor hidden widths (CORL: 2x256)
    actor_lr: float = 3e-4  # CORL actor_lr, cosine-annealed to 0 over the run
    qf_lr: float = 3e-4  # CORL qf_lr
    vf_lr: float = 3e-4  # CORL vf_lr
    discount: float = 0.99  # gamma
    tau: float = 0.005  # Polyak rate of the target Q networks
    beta: float = 3.0  # inverse temperature of the advantage weights
    expectile: float = 0.7  # tau of the expectile loss (CORL's iql_tau)
    exp_adv_max: float = 100.0  # clip of exp(beta * advantage)
    deterministic_actor: bool = False  # True: tanh MLP actor with an advantage-weighted MSE
    log_std_min: float = -20.0  # clamp of the state-independent log std (Gaussian actor)
    log_std_max: float = 2.0
    cosine_actor_lr: bool = True  # CORL: CosineAnnealingLR(actor, max_timesteps)
    normalize_reward: bool = False  # r * 1000 / (max return - min return); on for hopper-medium(-replay) only
    reward_scale: float = 1.0  # r <- scale * r + bias (antmaze: bias -1)
    reward_bias: float = 0.0


# Per-dataset settings from CORL's configs/offline/iql/* (matched against the dataset name, first match wins,
# so the more specific names come first). Every other Gym config there (halfcheetah-*, walker2d-*,
# hopper-expert/-random) is the defaults: normalize_reward false, beta 3, iql_tau 0.7, tau 0.005.
PRESETS: dict[str, dict] = {
    "hopper-medium-expert": {"beta": 6.0, "expectile": 0.5},  # hopper/medium_expert_v2.yaml
    "hopper-medium-replay": {"normalize_reward": True, "deterministic_actor": True, "tau": 0.001},
    "hopper-medium": {"normalize_reward": True, "deterministic_actor": True, "tau": 0.001},  # medium_v2.yaml
    "antmaze": {"beta": 10.0, "expectile": 0.9, "reward_bias": -1.0},
}


class IQL(Agent):
    name = "iql"

    def __init__(
        self,
        config: IQLConfig,
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
        sd = self.seed_list
        self.qf = StackedMLP(mlp_generators(sd, "iql.q", 2), [obs_dim + act_dim, *config.hidden, 1],
                             arithmetic=arithmetic)
        self.qf_target = freeze(copy.deepcopy(self.qf))
        self.vf = StackedMLP(mlp_generators(sd, "iql.v"), [obs_dim, *config.hidden, 1], arithmetic=arithmetic)
        self.actor = StackedMLP(mlp_generators(sd, "iql.actor"), [obs_dim, *config.hidden, act_dim],
                                arithmetic=arithmetic)
        # CORL's GaussianPolicy: state-independent log std initialised at 0.
        self.log_std = nn.Parameter(torch.zeros(len(sd), 1, act_dim))  # [S, 1, act]
        self.to(self.device_)
        actor_params = list(self.actor.parameters())
        if not config.deterministic_actor:
            actor_params.append(self.log_std)
        self.optimizers = {
            "q": Adam(list(self.qf.parameters()), config.qf_lr),
            "v": Adam(list(self.vf.parameters()), config.vf_lr),
            "actor": Adam(
                actor_params, config.actor_lr,
                schedule=cosine_schedule(total_steps) if config.cosine_actor_lr else None,
            ),
        }

    def q_twin(self, net: StackedMLP, obs: Tensor, act: Tensor) -> Tensor:
        s, b, _ = obs.shape
        return net(torch.cat([obs, act], -1), shared=2).view(s, 2, b)  # [S, 2, B]

    def mean_action(self, obs: Tensor) -> Tensor:
        return self.max_action * torch.tanh(self.actor(obs))  # [S, B, act]

    def update(self, batch: Batch, *, actor_step: bool = True) -> dict[str, Tensor]:
        cfg = self.config
        with torch.no_grad():
            target_q = self.q_twin(self.qf_target, batch.observations, batch.actions).amin(1)  # [S, B]
            next_v = self.vf(batch.next_observations).squeeze(-1)  # [S, B]
        # Value: expectile regression towards the target Q.
        v = self.vf(batch.observations).squeeze(-1)  # [S, B]
        adv = target_q - v
        weight = torch.abs(cfg.expectile - (adv < 0).float())
        v_loss = (weight * adv.square()).mean(-1)  # [S]
        # Q: regression towards r + gamma (1 - d) V(s').
        y = batch.rewards + (1.0 - batch.dones) * cfg.discount * next_v
        q = self.q_twin(self.qf, batch.observations, batch.actions)  # [S, 2, B]
        q_loss = (q - y[:, None]).square().mean(-1).mean(1)  # [S]: (MSE(Q1) + MSE(Q2)) / 2
        # Actor: advantage-weighted regression with the advantage of the value step.
        exp_adv = torch.exp(cfg.beta * adv.detach()).clamp(max=cfg.exp_adv_max)  # [S, B]
        mean = self.mean_action(batch.observations)
        if cfg.deterministic_actor:
            bc = (mean - batch.actions).square().sum(-1)  # [S, B]
        else:
            log_std = self.log_std.clamp(cfg.log_std_min, cfg.log_std_max)  # [S, 1, act]
            z = (batch.actions - mean) * torch.exp(-log_std)
            log_prob = -0.5 * z.square() - log_std - 0.5 * math.log(2 * math.pi)
            bc = -log_prob.sum(-1)  # [S, B]
        actor_loss = (exp_adv * bc).mean(-1)  # [S]
        # The three losses touch disjoint parameters (targets and advantages are detached).
        opt = self.optimizers
        step_jointly([(v_loss, opt["v"]), (q_loss, opt["q"]), (actor_loss, opt["actor"])])
        soft_update_(self.qf_target, self.qf, cfg.tau)
        return {
            "v_loss": v_loss.detach(),
            "q_loss": q_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "adv_mean": adv.detach().mean(-1),
        }

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        return self.mean_action(obs)
