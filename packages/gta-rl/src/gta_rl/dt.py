"""Decision Transformer (Chen et al., 2021) as GTA trains it in appendix E.4 (Tables 13-14), CORL settings.

A GPT over interleaved tokens (R_1, s_1, a_1, R_2, s_2, a_2, ...) of K steps, each token embedded linearly
plus a learned timestep embedding; the action a_t is predicted (tanh * max_action) from the output at
the s_t token and trained with a masked MSE. Attention is ``scaled_dot_product_attention`` with a causal
mask, so step t never sees tokens after s_t's own prefix. Returns-to-go come from
:mod:`gta_rl.sequences` (Eq. 16-17 for generated segments).

Seeds are stacked like the other algorithms: every weight has a leading seed dimension, each seed is
initialised from its own generator and takes its dropout masks from its own counter-based stream, so a
seed trained in a stack equals the seed trained alone and resume is exact. AdamW (decoupled weight
decay), the linear warm-up and the gradient-norm clipping are applied per seed.

Deliberate difference from CORL's dt.py: attention-probability dropout is 0 by default (SDPA draws it
from the global generator, which would break exact resume and seed independence; embedding and
residual dropout are kept). During evaluation the reward is multiplied by the return scale before it is
subtracted from the (scaled) return-to-go, as in CORL, whose evaluation env wrapper scales the rewards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from gta_rl.base import Agent
from gta_rl.nets import FP32, Arithmetic, member_generator
from gta_rl.optim import Adam
from gta_rl.rng import SeedStreams
from gta_rl.sequences import SequenceBatch


@dataclass(frozen=True)
class DTConfig:
    embedding_dim: int = 128  # CORL embedding_dim
    num_layers: int = 3  # transformer blocks
    num_heads: int = 1
    context: int = 20  # K, CORL seq_len
    episode_len: int = 1000  # timestep embedding covers [0, episode_len + context)
    embedding_dropout: float = 0.1
    residual_dropout: float = 0.1
    attention_dropout: float = 0.0  # CORL 0.1; >0 uses SDPA's global-generator dropout (not resumable exactly)
    lr: float = 8e-4  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW decoupled weight decay, on every parameter as CORL
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 10_000  # linear warm-up: update k uses min((k + 1) / warmup, 1) of lr
    clip_grad: float = 0.25  # max gradient norm per seed (0: off)
    return_scale: float = 0.001  # CORL reward_scale: returns-to-go are multiplied by it
    target_returns: tuple[float, ...] = ()  # evaluation targets (raw return); empty: the env's preset
    bf16: bool = False  # bf16 autocast of the forward pass (CUDA fast path)


# CORL's evaluation targets; matched against the dataset name / env id as the other presets are.
DT_PRESETS: dict[str, dict] = {
    "halfcheetah": {"target_returns": (12000.0, 6000.0)},
    "hopper": {"target_returns": (3600.0, 1800.0)},
    "walker2d": {"target_returns": (5000.0, 2500.0)},
}

_DROP_STREAM = 200  # rng streams of the dropout masks: 200 + site


def _normal(seeds: Sequence[int], name: str, shape: tuple[int, ...], std: float = 0.02) -> Tensor:
    """CORL's _init_weights: N(0, 0.02) for Linear and Embedding weights, one generator per seed."""
    return torch.stack([torch.randn(shape, generator=member_generator(s, name)) * std for s in seeds])


class StackedTransformer(nn.Module):
    """The DT network for S seeds; parameters [S, ...]."""

    def __init__(self, cfg: DTConfig, obs_dim: int, act_dim: int, seeds: Sequence[int], max_action: float) -> None:
        super().__init__()
        d, s = cfg.embedding_dim, len(seeds)
        if d % cfg.num_heads:
            raise ValueError(f"embedding_dim {d} is not divisible by num_heads {cfg.num_heads}")
        self.cfg, self.max_action = cfg, max_action
        p = nn.ParameterDict()

        def linear(name: str, fan_in: int, fan_out: int) -> None:
            p[f"{name}_w"] = nn.Parameter(_normal(seeds, name, (fan_in, fan_out)))  # [S, in, out]
            p[f"{name}_b"] = nn.Parameter(torch.zeros(s, 1, fan_out))  # [S, 1, out]

        def norm(name: str) -> None:
            p[f"{name}_g"] = nn.Parameter(torch.ones(s, 1, d))
            p[f"{name}_b"] = nn.Parameter(torch.zeros(s, 1, d))

        p["time_emb"] = nn.Parameter(_normal(seeds, "time_emb", (cfg.episode_len + cfg.context, d)))  # [S, T, D]
        linear("state_emb", obs_dim, d)
        linear("action_emb", act_dim, d)
        linear("return_emb", 1, d)
        norm("emb_norm")
        for i in range(cfg.num_layers):
            norm(f"b{i}_ln1")
            linear(f"b{i}_qkv", d, 3 * d)
            linear(f"b{i}_proj", d, d)
            norm(f"b{i}_ln2")
            linear(f"b{i}_fc1", d, 4 * d)
            linear(f"b{i}_fc2", 4 * d, d)
        norm("out_norm")
        linear("head", d, act_dim)
        self.p = p

    def _lin(self, name: str, x: Tensor) -> Tensor:
        """[S, N, in] -> [S, N, out]. bmm + add rather than baddbmm, which copies the broadcast bias into its
        output first (as in ``nets.stacked_affine``; the compiled DT step was faster for it); the bias joins in the matmul's dtype (bf16 under autocast, as baddbmm had it)."""
        y = torch.bmm(x, self.p[f"{name}_w"])
        return y + self.p[f"{name}_b"].to(y.dtype)

    def _ln(self, name: str, x: Tensor) -> Tensor:
        g, b = self.p[f"{name}_g"], self.p[f"{name}_b"]  # [S, 1, D]
        if g.shape[0] == 1:
            # One seed: the affine goes inside layer_norm (the same values). With the broadcast form below, the
            # compiled one-seed DT's backward returned the gradient of emb_norm_g ([1, 1, D]) as [D] (torch
            # 2.11, CUDA: "invalid gradient at index 13"); with this form it compiles and runs.
            return F.layer_norm(x, x.shape[-1:], g.view(-1), b.view(-1))
        return F.layer_norm(x, x.shape[-1:]) * g + b

    def forward(self, states: Tensor, actions: Tensor, rtg: Tensor, timesteps: Tensor,
                seeds: Tensor | None = None, step: Tensor | None = None) -> Tensor:
        """states [S, B, K, obs], actions [S, B, K, act], rtg [S, B, K], timesteps [S, B, K] -> actions
        predicted at the state tokens [S, B, K, act]. With ``seeds`` [S] and ``step`` [] (training),
        dropout masks come from the counter-based streams; tensors only, so torch.compile can trace it."""
        cfg = self.cfg
        s, b, k = rtg.shape
        rng = SeedStreams(seeds, step) if seeds is not None else None

        def drop(x: Tensor, site: int, p: float) -> Tensor:
            if rng is None or p <= 0:
                return x
            keep = rng.uniform(_DROP_STREAM + site, tuple(x.shape[1:])) >= p  # [S, ...] per-seed masks
            return x * keep.to(x.dtype) * (1.0 / (1.0 - p))

        flat = lambda x: rearrange(x, "s b k f -> s (b k) f")  # noqa: E731
        seed_idx = torch.arange(s, device=rtg.device)[:, None, None]  # [S, 1, 1]
        time = self.p["time_emb"][seed_idx, timesteps.clamp(0, self.p["time_emb"].shape[1] - 1)]  # [S, B, K, D]
        time = flat(time)
        tokens = torch.stack([  # (R_t, s_t, a_t) per step
            self._lin("return_emb", flat(rtg[..., None])) + time,
            self._lin("state_emb", flat(states)) + time,
            self._lin("action_emb", flat(actions)) + time,
        ], dim=2)  # [S, B*K, 3, D]
        x = rearrange(tokens, "s (b k) three d -> s (b k three) d", b=b)  # [S, B*3K, D]
        x = drop(self._ln("emb_norm", x), 0, cfg.embedding_dropout)
        h = cfg.num_heads
        attn_p = cfg.attention_dropout if rng is not None else 0.0
        for i in range(cfg.num_layers):
            qkv = self._lin(f"b{i}_qkv", self._ln(f"b{i}_ln1", x))  # [S, B*3K, 3D]
            q, kk, v = rearrange(qkv, "s (b t) (three h e) -> three (s b) h t e", b=b, three=3, h=h)
            a = F.scaled_dot_product_attention(q, kk, v, is_causal=True, dropout_p=attn_p)  # [S*B, H, 3K, E]
            a = rearrange(a, "(s b) h t e -> s (b t) (h e)", s=s)
            x = x + drop(self._lin(f"b{i}_proj", a), 1 + 2 * i, cfg.residual_dropout)
            m = self._lin(f"b{i}_fc2", F.gelu(self._lin(f"b{i}_fc1", self._ln(f"b{i}_ln2", x))))
            x = x + drop(m, 2 + 2 * i, cfg.residual_dropout)
        x = self._ln("out_norm", x)
        x = rearrange(x, "s (b k three) d -> s b k three d", b=b, three=3)[:, :, :, 1]  # state tokens
        out = self._lin("head", rearrange(x, "s b k d -> s (b k) d"))
        return rearrange(torch.tanh(out) * self.max_action, "s (b k) a -> s b k a", b=b)


class DT(Agent):
    name = "dt"

    def __init__(self, cfg: DTConfig, obs_dim: int, act_dim: int, seeds: Sequence[int], *,
                 max_action: float = 1.0, device: torch.device | str = "cpu", total_steps: int = 100_000,
                 arithmetic: Arithmetic = FP32) -> None:
        super().__init__(seeds, max_action, device, arithmetic)
        self.cfg = cfg
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.net = StackedTransformer(cfg, obs_dim, act_dim, self.seed_list, max_action)
        self.to(self.device_)
        warm = max(1, int(cfg.warmup_steps))
        self.optimizers["net"] = Adam(list(self.net.parameters()), cfg.lr, betas=tuple(cfg.betas),
                                      schedule=lambda t: torch.clamp((t + 1.0) / warm, max=1.0))
        self.forward_fn = self.net.forward

    def compile_forward(self, backend: str = "inductor") -> None:
        """torch.compile of the network's forward only (the fast path kept simple: no graph breaks in
        the optimizer or the sampler can hurt it)."""
        self.forward_fn = torch.compile(self.net.forward, backend=backend)

    def _predict(self, states, actions, rtg, timesteps, training: bool) -> Tensor:
        extra = (self.seeds, self.step) if training else ()
        if (self.cfg.bf16 or self.matmul_dtype == torch.bfloat16) and states.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.forward_fn(states, actions, rtg, timesteps, *extra).float()
        return self.forward_fn(states, actions, rtg, timesteps, *extra)

    def update(self, batch: SequenceBatch, *, actor_step: bool = True) -> dict[str, Tensor]:
        pred = self._predict(batch.states, batch.actions, batch.returns_to_go, batch.timesteps, True)
        # CORL: the mean over every element, padding included (its error is multiplied by 0)
        err = (pred - batch.actions) ** 2 * batch.mask[..., None]  # [S, B, K, act]
        loss = err.flatten(1).mean(1)  # [S]
        opt = self.optimizers["net"]
        g = list(torch.autograd.grad(loss.sum(), opt.params))
        norm = torch.sqrt(sum(x.pow(2).flatten(1).sum(1) for x in g))  # [S] per-seed gradient norm
        if self.cfg.clip_grad > 0:
            factor = torch.clamp(self.cfg.clip_grad / (norm + 1e-6), max=1.0)  # torch's clip_grad_norm_
            g = [x * factor.view(-1, *([1] * (x.dim() - 1))) for x in g]
        with torch.no_grad():
            # AdamW: p <- p (1 - lr_t wd) before the Adam step, lr_t the warmed-up rate of this update
            lr = (self.cfg.lr * opt.schedule(opt.t)).to(opt.params[0].dtype).reshape(())
            torch._foreach_mul_(opt.params, 1.0 - lr * self.cfg.weight_decay)
        opt.step(g)
        return {"loss": loss.detach(), "grad_norm": norm.detach()}

    @torch.no_grad()
    def predict_last(self, states: Tensor, actions: Tensor, rtg: Tensor, timesteps: Tensor) -> Tensor:
        """Deterministic action at the last step of [S, N, k, ...] histories (k <= context)."""
        return self._predict(states, actions, rtg, timesteps, False)[:, :, -1]

    def rollout(self, target_return: float, num_envs: int) -> DTRollout:
        return DTRollout(self, target_return, num_envs)


class DTRollout:
    """Autoregressive evaluation policy: keeps each env's (R, s, a, t) history on the device. All envs of
    a vector env step together, so every history has the same length and no padding is needed."""

    def __init__(self, agent: DT, target_return: float, num_envs: int) -> None:
        self.agent = agent
        self.scale = agent.cfg.return_scale
        self.k = agent.cfg.context
        self.dev = agent.step.device
        self.s, self.e = agent.num_seeds, num_envs
        self.states = torch.zeros(self.s, self.e, 0, agent.obs_dim, device=self.dev)
        self.actions = torch.zeros(self.s, self.e, 0, agent.act_dim, device=self.dev)
        self.rtg = torch.full((self.s, self.e, 1), float(target_return) * self.scale, device=self.dev)
        self.t = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """obs [S, E, obs] raw -> actions [S, E, act]."""
        a = self.agent
        x = (torch.as_tensor(obs, device=self.dev, dtype=torch.float32) - a.obs_mean) / a.obs_std
        self.states = torch.cat([self.states, x[:, :, None]], 2)[:, :, -self.k:]
        pad = torch.zeros(self.s, self.e, 1, a.act_dim, device=self.dev)  # a_t is unknown: a zero token
        acts = torch.cat([self.actions, pad], 2)[:, :, -self.k:]
        n = self.states.shape[2]
        steps = torch.arange(self.t + 1 - n, self.t + 1, device=self.dev).expand(self.s, self.e, n)
        action = a.predict_last(self.states, acts, self.rtg[:, :, -n:], steps)  # [S, E, act]
        self.actions = torch.cat([self.actions, action[:, :, None]], 2)[:, :, -(self.k - 1) or None:]
        self.t += 1
        return action.cpu().numpy()

    def observe(self, rewards: np.ndarray) -> None:
        """R_{t+1} = R_t - scale * r_t (the reward in the scaled units of the returns-to-go)."""
        r = torch.as_tensor(rewards, device=self.dev, dtype=torch.float32).reshape(self.s, self.e)
        nxt = self.rtg[:, :, -1] - self.scale * r
        self.rtg = torch.cat([self.rtg, nxt[:, :, None]], 2)[:, :, -self.k:]


def resolve_targets(cfg: DTConfig) -> tuple[float, ...]:
    if not cfg.target_returns:
        raise ValueError("no target return for this environment: pass --target-return (repeatable)")
    if any(not math.isfinite(float(t)) for t in cfg.target_returns):
        raise ValueError(f"target returns must be finite numbers, got {list(cfg.target_returns)}")
    return tuple(float(t) for t in cfg.target_returns)
