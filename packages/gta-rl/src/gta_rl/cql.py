"""Conservative Q-Learning (Kumar et al., 2020), CQL(H) with importance sampling, as in CORL's ``cql.py``.

Critic loss per twin j: MSE(Q_j(s, a), r + gamma (1 - d) min_k Q'_k(s', a'~pi(s')))
+ alpha_cql (T log sum_i exp(Q_j(s, a_i) / T) - Q_j(s, a)) over 3n proposal actions (uniform, pi(s), pi(s')
at s), each corrected by its log density. The tanh-Gaussian actor minimises alpha log pi(a|s) -
min_j Q_j(s, a), with alpha tuned towards the target entropy -|A|. With ``lagrange`` (maze2d in
CORL), alpha_cql is scaled by a learned alpha' that keeps the gap near ``target_action_gap``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gta_rl.base import Agent, freeze, repeat_rows, step_jointly
from gta_rl.buffer import Batch
from gta_rl.nets import FP32, Arithmetic, StackedMLP, mlp_generators, soft_update_
from gta_rl.optim import Adam

_PI_STREAM, _NEXT_PI_STREAM, _CUR_N_STREAM, _NEXT_N_STREAM, _RANDOM_STREAM = 200, 201, 202, 203, 204


@dataclass(frozen=True)
class CQLConfig:
    actor_hidden: tuple[int, ...] = (256, 256, 256)  # tanh-Gaussian policy (CORL: 3x256)
    critic_hidden: tuple[int, ...] = (256, 256, 256)  # Q networks (CORL: q_n_hidden_layers=3)
    orthogonal_init: bool = True  # CORL: orthogonal (gain sqrt 2) hidden layers, last layer gain 1e-2
    policy_lr: float = 3e-5  # CORL policy_lr (also the entropy temperature's lr)
    qf_lr: float = 3e-4  # CORL qf_lr
    discount: float = 0.99  # gamma
    tau: float = 5e-3  # CORL soft_target_update_rate, every step
    log_std_multiplier: float = 1.0  # initial learned scale of the policy's log std
    log_std_offset: float = -1.0  # initial learned offset of the policy's log std
    alpha_multiplier: float = 1.0  # entropy temperature multiplier
    auto_entropy: bool = True  # tune alpha towards target entropy -|A|
    n_actions: int = 10  # sampled actions per proposal (uniform, pi(s), pi(s'))
    cql_alpha: float = 10.0  # weight of the conservative term
    temperature: float = 1.0  # T of the log-sum-exp
    importance_sample: bool = True  # subtract the log density of each proposal
    lagrange: bool = False  # learn alpha' (CORL maze2d: on)
    target_action_gap: float = 5.0  # gap the Lagrange multiplier aims for
    clip_diff_min: float = -math.inf  # clamp of the conservative gap
    clip_diff_max: float = math.inf
    normalize_reward: bool = False  # CORL CQL: off for Gym
    reward_scale: float = 1.0  # r <- scale * r + bias (CORL antmaze: 10, -5)
    reward_bias: float = 0.0


PRESETS: dict[str, dict] = {
    # CORL configs/offline/cql/hopper/*_v2.yaml: reward normalisation on hopper-medium only (the longer keys
    # come first, as match_preset takes the first key found in the dataset name).
    "hopper-medium-expert": {},
    "hopper-medium-replay": {},
    "hopper-medium": {"normalize_reward": True},
    "maze2d": {"lagrange": True, "target_action_gap": 5.0},
    "pointmaze": {"lagrange": True, "target_action_gap": 5.0},
    # CORL configs/offline/cql/antmaze/*.yaml, less two settings gta-rl's CQL lacks: its max-target backup
    # (cql_max_target_backup) and training on raw states (normalize: false; gta-rl z-scores states).
    "antmaze": {"reward_scale": 10.0, "reward_bias": -5.0, "lagrange": True, "target_action_gap": 0.8,
                "cql_alpha": 5.0, "clip_diff_min": -200.0, "critic_hidden": (256,) * 5, "policy_lr": 1e-4},
}


def tanh_gaussian(mean: Tensor, log_std: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Reparameterised tanh(N(mean, std)) sample and its log density (exact tanh Jacobian, as torch's
    TanhTransform: log|d tanh(x)/dx| = 2 (log 2 - x - softplus(-2x)))."""
    std = torch.exp(log_std)
    x = mean + std * eps
    log_prob = -0.5 * eps.square() - log_std - 0.5 * math.log(2 * math.pi)
    log_prob = log_prob - 2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))
    return torch.tanh(x), log_prob.sum(-1)


class CQL(Agent):
    name = "cql"

    def __init__(
        self,
        config: CQLConfig,
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
        sd, s = self.seed_list, len(seeds)
        init = dict(init="orthogonal", last_init="orthogonal", last_gain=1e-2) if config.orthogonal_init else {
            "last_init": "xavier", "last_gain": 1e-2}
        self.actor = StackedMLP(mlp_generators(sd, "cql.actor"), [obs_dim, *config.actor_hidden, 2 * act_dim], **init,
                                arithmetic=arithmetic)
        self.log_std_mult = nn.Parameter(torch.full((s, 1, 1), config.log_std_multiplier))
        self.log_std_off = nn.Parameter(torch.full((s, 1, 1), config.log_std_offset))
        self.critic = StackedMLP(
            mlp_generators(sd, "cql.critic", 2), [obs_dim + act_dim, *config.critic_hidden, 1], **init,
            arithmetic=arithmetic,
        )
        self.critic_target = freeze(copy.deepcopy(self.critic))
        self.log_alpha = nn.Parameter(torch.zeros(s))  # [S]
        self.log_alpha_prime = nn.Parameter(torch.ones(s))  # [S] (CORL Scalar(1.0))
        self.to(self.device_)
        self.optimizers = {
            "actor": Adam([*self.actor.parameters(), self.log_std_mult, self.log_std_off], config.policy_lr),
            "critic": Adam(list(self.critic.parameters()), config.qf_lr),
            "alpha": Adam([self.log_alpha], config.policy_lr),
            "alpha_prime": Adam([self.log_alpha_prime], config.qf_lr),
        }

    def policy(self, obs: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor]:
        """Action (sampled with ``eps``, or tanh(mean) when None) and its log density, [S, B, act], [S, B]."""
        mean, log_std = self.actor(obs).chunk(2, -1)
        log_std = (self.log_std_mult * log_std + self.log_std_off).clamp(-20.0, 2.0)
        if eps is None:
            return self.max_action * torch.tanh(mean), torch.zeros_like(mean[..., 0])
        action, log_prob = tanh_gaussian(mean, log_std, eps)
        return self.max_action * action, log_prob

    def q_twin(self, net: StackedMLP, obs: Tensor, act: Tensor, frozen: bool = False) -> Tensor:
        s, b, _ = obs.shape
        return net(torch.cat([obs, act], -1), shared=2, frozen=frozen).view(s, 2, b)  # [S, 2, B]

    def update(self, batch: Batch, *, actor_step: bool = True) -> dict[str, Tensor]:
        cfg, m, n, a_dim = self.config, self.max_action, self.config.n_actions, self.act_dim
        rng = self.rng()
        s, b = batch.rewards.shape
        obs, next_obs = batch.observations, batch.next_observations

        # Policy and temperature (all losses use the parameters before this step, as CORL).
        new_a, log_pi = self.policy(obs, rng.normal(_PI_STREAM, (b, a_dim)))
        if cfg.auto_entropy:
            alpha_loss = -(self.log_alpha[:, None] * (log_pi.detach() - a_dim)).mean(-1)  # target entropy -|A|
            alpha = torch.exp(self.log_alpha.detach()) * cfg.alpha_multiplier  # [S]
        else:
            alpha_loss = torch.zeros(s, device=obs.device)
            alpha = torch.full((s,), cfg.alpha_multiplier, device=obs.device)
        q_new = self.q_twin(self.critic, obs, new_a, frozen=True).amin(1)  # [S, B], no gradient to Q
        policy_loss = (alpha[:, None] * log_pi - q_new).mean(-1)  # [S]

        # Bellman error.
        q_pred = self.q_twin(self.critic, obs, batch.actions)  # [S, 2, B]
        with torch.no_grad():
            next_a, _ = self.policy(next_obs, rng.normal(_NEXT_PI_STREAM, (b, a_dim)))
            target_q = self.q_twin(self.critic_target, next_obs, next_a).amin(1)
            y = batch.rewards + (1.0 - batch.dones) * cfg.discount * target_q  # [S, B]
        td_loss = (q_pred - y[:, None]).square().mean(-1)  # [S, 2]

        # Conservative term over 3n proposals evaluated at s.
        obs_n, next_obs_n = repeat_rows(obs, n), repeat_rows(next_obs, n)  # [S, B*n, obs]
        rand_a = (rng.uniform(_RANDOM_STREAM, (b * n, a_dim)) * 2.0 - 1.0) * m
        with torch.no_grad():
            cur_a, cur_logp = self.policy(obs_n, rng.normal(_CUR_N_STREAM, (b * n, a_dim)))
            nxt_a, nxt_logp = self.policy(next_obs_n, rng.normal(_NEXT_N_STREAM, (b * n, a_dim)))
        q_rand = self.q_twin(self.critic, obs_n, rand_a).view(s, 2, b, n)
        q_cur = self.q_twin(self.critic, obs_n, cur_a).view(s, 2, b, n)
        q_nxt = self.q_twin(self.critic, obs_n, nxt_a).view(s, 2, b, n)
        if cfg.importance_sample:
            random_density = -a_dim * math.log(2.0 * m)  # log of the uniform density on [-m, m]^|A|
            cat_q = torch.cat(
                [q_rand - random_density, q_nxt - nxt_logp.view(s, 1, b, n), q_cur - cur_logp.view(s, 1, b, n)], -1
            )
        else:
            cat_q = torch.cat([q_rand, q_pred[..., None], q_nxt, q_cur], -1)
        ood = torch.logsumexp(cat_q / cfg.temperature, -1) * cfg.temperature  # [S, 2, B]
        gap = (ood - q_pred).clamp(cfg.clip_diff_min, cfg.clip_diff_max).mean(-1)  # [S, 2]
        if cfg.lagrange:
            # alpha' rises while the gap exceeds the target; the critic sees alpha' as a constant.
            alpha_prime = torch.exp(self.log_alpha_prime).clamp(0.0, 1e6)  # [S]
            alpha_prime_loss = -0.5 * (alpha_prime[:, None] * cfg.cql_alpha * (gap.detach() - cfg.target_action_gap)).sum(1)
            cql_term = alpha_prime.detach()[:, None] * cfg.cql_alpha * (gap - cfg.target_action_gap)  # [S, 2]
        else:
            cql_term = cfg.cql_alpha * gap
            alpha_prime_loss = None
        critic_loss = (td_loss + cql_term).sum(1)  # [S]

        # Every loss reaches only its own parameters, so one backward pass serves all of them.
        opt = self.optimizers
        pairs = [(policy_loss, opt["actor"]), (critic_loss, opt["critic"])]
        if cfg.auto_entropy:
            pairs.append((alpha_loss, opt["alpha"]))
        if alpha_prime_loss is not None:
            pairs.append((alpha_prime_loss, opt["alpha_prime"]))
        step_jointly(pairs)
        soft_update_(self.critic_target, self.critic, cfg.tau)
        return {
            "critic_loss": critic_loss.detach(),
            "td_loss": td_loss.detach().sum(1),
            "cql_gap": gap.detach().mean(1),
            "policy_loss": policy_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "alpha": alpha,
            "log_pi": log_pi.detach().mean(-1),
        }

    @torch.no_grad()
    def act(self, obs: Tensor) -> Tensor:
        return self.policy(obs, None)[0]
