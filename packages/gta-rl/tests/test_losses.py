"""Each algorithm's losses against a float64 transcription of its formulas on a fixed batch.

The references below are written from the papers' / reference implementations' equations, with plain
einsum MLPs over float64 copies of the parameters; the random draws of the step (noise, sampled
actions, dropout masks) are recorded and fed to both.
"""

from __future__ import annotations

import math

import pytest
import torch

from gta_rl import cql, iql, mcq, td3bc
from gta_rl.algorithms import build_config, get_spec
from gta_rl.buffer import Batch

S, B, OBS, ACT = 2, 16, 3, 2
GAMMA = 0.99


class Recorder:
    def __init__(self, inner):
        self.inner, self.draws = inner, {}

    def normal(self, stream, shape):
        self.draws[stream] = self.inner.normal(stream, shape)
        return self.draws[stream]

    def uniform(self, stream, shape):
        self.draws[stream] = self.inner.uniform(stream, shape)
        return self.draws[stream]


def make_batch() -> Batch:
    g = torch.Generator().manual_seed(7)
    return Batch(
        observations=torch.randn(S, B, OBS, generator=g),
        actions=torch.rand(S, B, ACT, generator=g) * 1.8 - 0.9,
        rewards=torch.randn(S, B, generator=g),
        next_observations=torch.randn(S, B, OBS, generator=g),
        dones=(torch.rand(S, B, generator=g) < 0.2).float(),
    )


def params64(agent) -> dict[str, torch.Tensor]:
    return {k: v.detach().double().clone() for k, v in agent.state_dict().items()}


def mlp(p, prefix, x, masks=None, member=None):
    """Float64 MLP: relu(x W + b) per layer, last layer linear. ``member`` picks critic j of each seed."""
    n = len([k for k in p if k.startswith(prefix + ".layers.") and k.endswith(".weight")])
    for i in range(n):
        w, b = p[f"{prefix}.layers.{i}.weight"], p[f"{prefix}.layers.{i}.bias"]
        if member is not None:
            w, b = w.view(S, 2, *w.shape[1:])[:, member], b.view(S, 2, *b.shape[1:])[:, member]
        x = torch.einsum("mbi,mio->mbo", x, w) + b
        if i < n - 1:
            x = torch.relu(x)
            if masks is not None:
                x = x * masks[i]
    return x


def q64(p, prefix, obs, act, j):
    return mlp(p, prefix, torch.cat([obs, act], -1), member=j)[..., 0]  # [S, N]


def run_update(name, overrides, actor_step=True):
    cfg = build_config(name, None, overrides)
    agent = get_spec(name).agent(cfg, OBS, ACT, [0, 3], max_action=1.0, total_steps=100)
    agent.step.fill_(5)
    rec = Recorder(agent.rng())
    agent.rng = lambda: rec
    before = params64(agent)
    batch = make_batch()
    metrics = agent.update(batch, actor_step=actor_step)
    after = params64(agent)
    d = {k: v.double() for k, v in vars(batch).items()}
    draws = {k: v.double() for k, v in rec.draws.items()}
    return cfg, metrics, before, after, d, draws


def close(metric, ref):
    torch.testing.assert_close(metric.double(), ref, rtol=2e-4, atol=2e-5)


def test_td3bc_losses():
    cfg, m, p0, p1, d, draws = run_update("td3bc", {"hidden": [8, 8]})
    o, a, o2 = d["observations"], d["actions"], d["next_observations"]
    eps = draws[td3bc._NOISE_STREAM]
    noise = torch.clamp(0.2 * eps, -0.5, 0.5)
    a2 = torch.clamp(torch.tanh(mlp(p0, "actor_target", o2)) + noise, -1, 1)
    target = torch.minimum(q64(p0, "critic_target", o2, a2, 0), q64(p0, "critic_target", o2, a2, 1))
    y = d["rewards"] + GAMMA * (1 - d["dones"]) * target
    critic = sum(((q64(p0, "critic", o, a, j) - y) ** 2).mean(1) for j in (0, 1))
    close(m["critic_loss"], critic)
    # The actor sees the critic after its update (CORL order).
    pi = torch.tanh(mlp(p0, "actor", o))
    q = q64(p1, "critic", o, pi, 0)
    lam = 2.5 / q.abs().mean(1)
    actor = -lam * q.mean(1) + ((pi - a) ** 2).mean((1, 2))
    close(m["actor_loss"], actor)
    # Targets moved by Polyak averaging with tau 0.005 on this actor step.
    key = "critic_target.layers.0.weight"
    torch.testing.assert_close(p1[key], 0.995 * p0[key] + 0.005 * p1["critic.layers.0.weight"])


def test_td3bc_delayed_step_leaves_actor_alone():
    _, m, p0, p1, _, _ = run_update("td3bc", {"hidden": [8, 8]}, actor_step=False)
    assert "actor_loss" not in m
    assert torch.equal(p0["actor.layers.0.weight"], p1["actor.layers.0.weight"])
    assert torch.equal(p0["critic_target.layers.0.weight"], p1["critic_target.layers.0.weight"])


@pytest.mark.parametrize("deterministic", [False, True])
def test_iql_losses(deterministic):
    cfg, m, p0, _, d, _ = run_update("iql", {"hidden": [8, 8], "deterministic_actor": deterministic})
    o, a, o2 = d["observations"], d["actions"], d["next_observations"]
    tq = torch.minimum(q64(p0, "qf_target", o, a, 0), q64(p0, "qf_target", o, a, 1))
    v = mlp(p0, "vf", o)[..., 0]
    u = tq - v
    v_loss = (torch.where(u < 0, 0.3, 0.7) * u**2).mean(1)
    close(m["v_loss"], v_loss)
    y = d["rewards"] + GAMMA * (1 - d["dones"]) * mlp(p0, "vf", o2)[..., 0]
    q_loss = sum(((q64(p0, "qf", o, a, j) - y) ** 2).mean(1) for j in (0, 1)) / 2
    close(m["q_loss"], q_loss)
    w = torch.clamp(torch.exp(3.0 * u), max=100.0)
    mu = torch.tanh(mlp(p0, "actor", o))
    if deterministic:
        nll = ((mu - a) ** 2).sum(-1)
    else:
        std = torch.exp(p0["log_std"].clamp(-20, 2))
        dist = torch.distributions.Normal(mu, std)
        nll = -dist.log_prob(a).sum(-1)
    close(m["actor_loss"], (w * nll).mean(1))


def _tanh_normal_logp(mean, log_std, eps):
    """log density of tanh(N) via change of variables with torch's own TanhTransform."""
    base = torch.distributions.Normal(mean, torch.exp(log_std))
    dist = torch.distributions.TransformedDistribution(base, [torch.distributions.TanhTransform()])
    x = mean + torch.exp(log_std) * eps
    act = torch.tanh(x)
    return act, base.log_prob(x).sum(-1) - torch.distributions.TanhTransform().log_abs_det_jacobian(x, act).sum(-1), dist


@pytest.mark.parametrize("lagrange", [False, True])
def test_cql_losses(lagrange):
    overrides = {"actor_hidden": [8, 8], "critic_hidden": [8, 8], "n_actions": 3, "lagrange": lagrange}
    cfg, m, p0, _, d, draws = run_update("cql", overrides)
    o, a, o2, n = d["observations"], d["actions"], d["next_observations"], 3

    def pi(obs, eps):
        mean, log_std = mlp(p0, "actor", obs).chunk(2, -1)
        log_std = (p0["log_std_mult"] * log_std + p0["log_std_off"]).clamp(-20, 2)
        act, logp, _ = _tanh_normal_logp(mean, log_std, eps)
        return act, logp

    new_a, log_pi = pi(o, draws[cql._PI_STREAM])
    alpha = torch.exp(p0["log_alpha"])
    close(m["alpha_loss"], -(p0["log_alpha"][:, None] * (log_pi - ACT)).mean(1))
    qmin = torch.minimum(q64(p0, "critic", o, new_a, 0), q64(p0, "critic", o, new_a, 1))
    close(m["policy_loss"], (alpha[:, None] * log_pi - qmin).mean(1))

    a2, _ = pi(o2, draws[cql._NEXT_PI_STREAM])
    y = d["rewards"] + GAMMA * (1 - d["dones"]) * torch.minimum(
        q64(p0, "critic_target", o2, a2, 0), q64(p0, "critic_target", o2, a2, 1))
    rep = lambda x: x.repeat_interleave(n, dim=1)  # noqa: E731
    cur_a, cur_lp = pi(rep(o), draws[cql._CUR_N_STREAM])
    nxt_a, nxt_lp = pi(rep(o2), draws[cql._NEXT_N_STREAM])
    rand_a = draws[cql._RANDOM_STREAM] * 2 - 1
    total = 0
    for j in (0, 1):
        qp = q64(p0, "critic", o, a, j)
        td = ((qp - y) ** 2).mean(1)
        parts = [q64(p0, "critic", rep(o), rand_a, j) - math.log(0.5**ACT),
                 q64(p0, "critic", rep(o), nxt_a, j) - nxt_lp,
                 q64(p0, "critic", rep(o), cur_a, j) - cur_lp]
        cat = torch.cat([x.view(S, B, n) for x in parts], -1)
        gap = (torch.logsumexp(cat, -1) - qp).mean(1)
        weight = 10.0 * (torch.exp(p0["log_alpha_prime"]) if lagrange else 1.0)
        total = total + td + weight * (gap - (5.0 if lagrange else 0.0))
    close(m["critic_loss"], total)


def test_mcq_losses():
    overrides = {"actor_hidden": [8, 8], "critic_hidden": [8, 8], "vae_hidden": [8, 8], "num_sampled_actions": 3}
    cfg, m, p0, p1, d, draws = run_update("mcq", overrides)
    o, a, o2, n, lat = d["observations"], d["actions"], d["next_observations"], 3, 2 * ACT
    # CVAE (BCQ-style): recon MSE + KL to N(0, I), log std clamped to [-4, 15].
    h = mlp(p0, "encoder", torch.cat([o, a], -1))
    mean, log_std = h[..., :lat], h[..., lat:].clamp(-4, 15)
    z = mean + torch.exp(log_std) * draws[mcq._VAE_STREAM]
    recon = torch.tanh(mlp(p0, "decoder", torch.cat([o, z], -1)))
    kl = -0.5 * (1 + 2 * log_std - mean**2 - torch.exp(2 * log_std)).mean((1, 2))
    close(m["vae_loss"], ((recon - a) ** 2).mean((1, 2)) + kl)

    def masks(site, rows):
        return [(draws[mcq._DROPOUT_STREAM + 3 * site + i] >= 0.1).double() / 0.9 for i in range(2)]

    def pi(params, obs, eps, mk):
        out = mlp(params, "actor", obs, masks=mk)
        mu, ls = out[..., :ACT], out[..., ACT:].clamp(-5, 2)
        x = mu + torch.exp(ls) * eps
        logp = torch.distributions.Normal(mu, torch.exp(ls)).log_prob(x).sum(-1)
        logp = logp - torch.log(1 - torch.tanh(x) ** 2 + 1e-6).sum(-1)
        return torch.tanh(x), logp

    alpha = 1.0
    a2, lp2 = pi(p0, o2, draws[mcq._NEXT_PI_STREAM], masks(0, B))
    nq = torch.minimum(q64(p0, "critic_target", o2, a2, 0), q64(p0, "critic_target", o2, a2, 1)) - alpha * lp2
    y = d["rewards"] + GAMMA * (1 - d["dones"]) * nq
    s_in = torch.cat([o, o2], 1)
    s_rep = s_in.repeat_interleave(n, dim=1)
    zp = draws[mcq._DECODE_STREAM].clamp(-0.5, 0.5)
    sampled = torch.tanh(mlp(p1, "decoder", torch.cat([s_rep, zp], -1)))  # decoder after its step
    y_ood = torch.minimum(*(q64(p0, "critic_target", s_rep, sampled, j).view(S, 2 * B, n).amax(-1) for j in (0, 1)))
    ood_a, _ = pi(p0, s_in, draws[mcq._OOD_PI_STREAM], masks(1, 2 * B))
    crit = sum(0.9 * ((q64(p0, "critic", o, a, j) - y) ** 2).mean(1)
               + 0.1 * ((q64(p0, "critic", s_in, ood_a, j) - y_ood) ** 2).mean(1) for j in (0, 1))
    close(m["critic_loss"], crit)
    new_a, lp = pi(p0, o, draws[mcq._PI_STREAM], masks(2, B))
    qn = torch.minimum(q64(p1, "critic", o, new_a, 0), q64(p1, "critic", o, new_a, 1))  # critic after its step
    close(m["actor_loss"], (-qn + alpha * lp).mean(1))
    close(m["alpha_loss"], -(p0["log_alpha"][:, None] * (lp - ACT)).mean(1))


@pytest.mark.parametrize(("name", "overrides"), [
    ("iql", {"hidden": [8, 8]}),
    ("cql", {"actor_hidden": [8, 8], "critic_hidden": [8, 8], "n_actions": 3, "lagrange": True}),
])
def test_joint_backward_keeps_losses_on_their_own_parameters(name, overrides, monkeypatch):
    """One backward pass of the summed losses is only right if no loss reaches another's parameters."""
    from gta_rl import base

    module = {"iql": iql, "cql": cql}[name]
    checked = []

    def checking(pairs):
        params = [p for _, opt in pairs for p in opt.params]
        for loss, opt in pairs:
            own = {id(p) for p in opt.params}
            gs = torch.autograd.grad(loss.sum(), params, retain_graph=True, allow_unused=True)
            for p, g in zip(params, gs, strict=True):
                if id(p) not in own:
                    assert g is None or not g.any(), f"a loss leaks into another optimizer's parameter {p.shape}"
            checked.append(len(own))
        base.step_jointly(pairs)

    monkeypatch.setattr(module, "step_jointly", checking)
    run_update(name, overrides)
    assert len(checked) >= 3
