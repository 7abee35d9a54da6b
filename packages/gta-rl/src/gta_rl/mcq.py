"""Mildly Conservative Q-Learning (Lyu et al., 2022), as OfflineRL-Kit's ``mcq.py`` implements it.

A CVAE models the behaviour policy. Critic j minimises lambda MSE(Q_j(s, a), y) + (1 - lambda)
MSE(Q_j(s~, pi(s~)), y_ood) with the SAC target y = r + gamma (1 - d) (min_k Q'_k(s', a') - alpha log pi(a'|s'))
and the pseudo target y_ood = min_k max_{i<=n} Q'_k(s~, a_i), a_i ~ CVAE(s~), for s~ in {s, s'}. The
actor and temperature are SAC's and see the critics after their step (sequential, as the reference).
GTA's version (the authors' code) z-scores states.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gta_rl.base import Agent, freeze, grads, repeat_rows
from gta_rl.buffer import Batch
from gta_rl.nets import FP32, Arithmetic, StackedMLP, mlp_generators, soft_update_
from gta_rl.optim import Adam

_VAE_STREAM, _DECODE_STREAM = 300, 301
_NEXT_PI_STREAM, _OOD_PI_STREAM, _PI_STREAM = 302, 303, 304
_DROPOUT_STREAM = 310  # + 3 * call site + layer


@dataclass(frozen=True)
class MCQConfig:
    actor_hidden: tuple[int, ...] = (400, 400)  # SAC actor backbone (OfflineRL-Kit run_mcq: 400-400)
    actor_dropout: float = 0.1  # dropout after each actor hidden layer (OfflineRL-Kit run_mcq)
    critic_hidden: tuple[int, ...] = (400, 400)  # twin critics
    vae_hidden: tuple[int, ...] = (750, 750)  # CVAE encoder and decoder widths; latent 2|A|
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    vae_lr: float = 1e-3  # behaviour-policy CVAE lr
    alpha_lr: float = 3e-4  # auto-alpha lr (target entropy -|A|)
    auto_alpha: bool = True
    init_alpha: float = 1.0  # alpha before tuning (log alpha starts at 0)
    discount: float = 0.99  # gamma
    tau: float = 0.005  # Polyak rate of the target critics
    lmbda: float = 0.9  # weight of the in-distribution TD loss
    num_sampled_actions: int = 10  # CVAE actions per state for the OOD pseudo target
    log_std_min: float = -5.0  # OfflineRL-Kit TanhDiagGaussian sigma_min / sigma_max (state-dependent std)
    log_std_max: float = 2.0
    normalize_reward: bool = False
    reward_scale: float = 1.0  # r <- scale * r + bias
    reward_bias: float = 0.0


PRESETS: dict[str, dict] = {}


class MCQ(Agent):
    name = "mcq"

    def __init__(
        self,
        config: MCQConfig,
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
        self.act_dim = act_dim
        self.latent = 2 * act_dim
        sd, s = self.seed_list, len(seeds)
        self.actor = StackedMLP(mlp_generators(sd, "mcq.actor"), [obs_dim, *config.actor_hidden, 2 * act_dim],
                                arithmetic=arithmetic)
        self.critic = StackedMLP(mlp_generators(sd, "mcq.critic", 2), [obs_dim + act_dim, *config.critic_hidden, 1],
                                 arithmetic=arithmetic)
        self.critic_target = freeze(copy.deepcopy(self.critic))
        self.encoder = StackedMLP(mlp_generators(sd, "mcq.enc"), [obs_dim + act_dim, *config.vae_hidden, 2 * self.latent],
                                  arithmetic=arithmetic)
        self.decoder = StackedMLP(mlp_generators(sd, "mcq.dec"), [obs_dim + self.latent, *config.vae_hidden, act_dim],
                                  arithmetic=arithmetic)
        self.log_alpha = nn.Parameter(torch.full((s,), math.log(config.init_alpha)))
        self.register_buffer("alpha", torch.full((s,), config.init_alpha))  # [S], clamped to [0, 1]
        self.to(self.device_)
        self.optimizers = {
            "actor": Adam(list(self.actor.parameters()), config.actor_lr),
            "critic": Adam(list(self.critic.parameters()), config.critic_lr),
            "vae": Adam([*self.encoder.parameters(), *self.decoder.parameters()], config.vae_lr),
            "alpha": Adam([self.log_alpha], config.alpha_lr),
        }

    # -- networks --------------------------------------------------------------------------------------

    def _dropout_masks(self, rng, site: int, rows: int) -> list[Tensor] | None:
        p = self.config.actor_dropout
        if p <= 0:
            return None
        return [
            (rng.uniform(_DROPOUT_STREAM + 3 * site + i, (rows, w)) >= p).float() / (1.0 - p)
            for i, w in enumerate(self.actor.hidden_widths())
        ]

    def policy(self, obs: Tensor, eps: Tensor | None, masks: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Tanh-Gaussian action (sampled with ``eps``; tanh(mean) when None) and log density with
        OfflineRL-Kit's correction log(m (1 - tanh(x)^2) + 1e-6), [S, B, act], [S, B]."""
        mu, raw_log_std = self.actor(obs, masks).chunk(2, -1)
        if eps is None:
            return self.max_action * torch.tanh(mu), torch.zeros_like(mu[..., 0])
        log_std = raw_log_std.clamp(self.config.log_std_min, self.config.log_std_max)
        x = mu + torch.exp(log_std) * eps
        log_prob = (-0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        squashed = torch.tanh(x)
        log_prob = log_prob - torch.log(self.max_action * (1 - squashed.square()) + 1e-6).sum(-1)
        return self.max_action * squashed, log_prob

    def q_twin(self, net: StackedMLP, obs: Tensor, act: Tensor, frozen: bool = False) -> Tensor:
        s, b, _ = obs.shape
        return net(torch.cat([obs, act], -1), shared=2, frozen=frozen).view(s, 2, b)  # [S, 2, B]

    def decode(self, obs: Tensor, z: Tensor) -> Tensor:
        return self.max_action * torch.tanh(self.decoder(torch.cat([obs, z], -1)))

    # -- update ----------------------------------------------------------------------------------------

    def update(self, batch: Batch, *, actor_step: bool = True) -> dict[str, Tensor]:
        cfg, n, a_dim = self.config, self.config.num_sampled_actions, self.act_dim
        rng = self.rng()
        s, b = batch.rewards.shape
        obs, act, next_obs = batch.observations, batch.actions, batch.next_observations
        opt = self.optimizers

        # Behaviour CVAE: reconstruction + KL(N(mean, std) || N(0, 1)).
        mean, log_std = self.encoder(torch.cat([obs, act], -1)).chunk(2, -1)
        std = torch.exp(log_std.clamp(-4.0, 15.0))
        z = mean + std * rng.normal(_VAE_STREAM, (b, self.latent))
        recon = self.decode(obs, z)
        recon_loss = (recon - act).square().mean((1, 2))
        kl = -0.5 * (1 + torch.log(std.square()) - mean.square() - std.square()).mean((1, 2))
        vae_loss = recon_loss + kl  # [S]
        opt["vae"].step(grads(vae_loss.sum(), opt["vae"].params))

        # Critics: in-distribution TD loss and OOD pseudo-target loss.
        alpha = self.alpha  # [S], value from the previous step
        with torch.no_grad():
            next_a, next_logp = self.policy(
                next_obs, rng.normal(_NEXT_PI_STREAM, (b, a_dim)), self._dropout_masks(rng, 0, b)
            )
            next_q = self.q_twin(self.critic_target, next_obs, next_a).amin(1) - alpha[:, None] * next_logp
            y = batch.rewards + cfg.discount * (1.0 - batch.dones) * next_q  # [S, B]
            s_in = torch.cat([obs, next_obs], 1)  # [S, 2B, obs]
            s_rep = repeat_rows(s_in, n)  # [S, 2B*n, obs]
            z_prior = rng.normal(_DECODE_STREAM, (2 * b * n, self.latent)).clamp(-0.5, 0.5)
            sampled = self.decode(s_rep, z_prior)
            q_sampled = self.q_twin(self.critic_target, s_rep, sampled).view(s, 2, 2 * b, n)
            y_ood = q_sampled.amax(-1).amin(1)  # [S, 2B]
            ood_a, _ = self.policy(
                s_in, rng.normal(_OOD_PI_STREAM, (2 * b, a_dim)), self._dropout_masks(rng, 1, 2 * b)
            )
        q_in = self.q_twin(self.critic, obs, act)  # [S, 2, B]
        q_ood = self.q_twin(self.critic, s_in, ood_a)  # [S, 2, 2B]
        in_loss = (q_in - y[:, None]).square().mean(-1)  # [S, 2]
        ood_loss = (q_ood - y_ood[:, None]).square().mean(-1)  # [S, 2]
        critic_loss = (cfg.lmbda * in_loss + (1.0 - cfg.lmbda) * ood_loss).sum(1)  # [S], critic 1 + critic 2
        opt["critic"].step(grads(critic_loss.sum(), self.critic.parameters()))

        # Actor (sees the updated critics) and temperature.
        new_a, logp = self.policy(obs, rng.normal(_PI_STREAM, (b, a_dim)), self._dropout_masks(rng, 2, b))
        q_new = self.q_twin(self.critic, obs, new_a, frozen=True).amin(1)  # no gradient to Q
        actor_loss = (-q_new + alpha[:, None] * logp).mean(-1)  # [S]
        opt["actor"].step(grads(actor_loss.sum(), self.actor.parameters()))
        metrics = {
            "vae_loss": vae_loss.detach(),
            "critic_loss": critic_loss.detach(),
            "ood_loss": ood_loss.detach().sum(1),
            "actor_loss": actor_loss.detach(),
            "alpha": alpha.clone(),
        }
        if cfg.auto_alpha:
            alpha_loss = -(self.log_alpha[:, None] * (logp.detach() - a_dim)).mean(-1)  # target entropy -|A|
            opt["alpha"].step(grads(alpha_loss.sum(), [self.log_alpha]))
            with torch.no_grad():
                self.alpha.copy_(torch.exp(self.log_alpha).clamp(0.0, 1.0))
            metrics["alpha_loss"] = alpha_loss.detach()
        soft_update_(self.critic_target, self.critic, cfg.tau)
        return metrics

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        return self.policy(obs, None)[0]
