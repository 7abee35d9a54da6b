"""DrQ+BC: network sizes, random shift, frame stacking and n-step targets, the loss terms against a float64
recomputation, and the stacked fast path against the reference, draw for draw."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gta_pixel.drqbc import (
    DrQBC,
    DrQBCConfig,
    DrQBCNets,
    draw_noise,
    random_shift,
    repr_dim,
    sample_action,
)
from gta_pixel.drqbc_fast import DrQBCStack
from gta_pixel.replay import PixelReplay
from gta_rl.rng import SeedStreams

TINY = DrQBCConfig(hidden_dim=32, batch_size=8, std_duration=20)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny CPU updates: more threads only contend


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_parameter_counts_at_84px_match_vd4rl():
    nets = DrQBCNets((9, 84, 84), 6, DrQBCConfig(), seed=0)
    assert repr_dim(84) == 39_200
    assert _count(nets.encoder) == 30_368
    assert _count(nets.actor) == 3_068_124
    assert _count(nets.critic) == 4_178_136
    assert nets.encoder(torch.zeros(2, 9, 84, 84)).shape == (2, 39_200)


def test_init_is_orthogonal_and_depends_on_the_seed_only():
    a, b = DrQBCNets((9, 20, 20), 2, TINY, seed=3), DrQBCNets((9, 20, 20), 2, TINY, seed=3)
    c = DrQBCNets((9, 20, 20), 2, TINY, seed=4)
    w = a.actor.policy[2].weight
    torch.testing.assert_close(w @ w.T, torch.eye(32), atol=1e-5, rtol=0)
    conv = a.encoder.convnet[2].weight.reshape(32, -1)  # 32 x 288: orthogonal rows with ReLU gain sqrt(2)
    torch.testing.assert_close(conv @ conv.T, 2.0 * torch.eye(32), atol=1e-5, rtol=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.encoder.convnet[0].weight, c.encoder.convnet[0].weight)
    assert torch.equal(a.critic.Q1[0].weight, a.critic_target.Q1[0].weight)
    assert a.critic.trunk[0].bias.abs().sum() == 0


def test_random_shift_moves_whole_pixels_with_replicate_padding():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    shifts = torch.tensor([[0, 0], [4, 1]])  # sample 0: up-left by pad; sample 1: x +0, y -1 (pad 2)
    out = random_shift(x, shifts, pad=2)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for n, (sx, sy) in enumerate(shifts.tolist()):
        torch.testing.assert_close(out[n], padded[n, :, sy:sy + 6, sx:sx + 6], atol=1e-3, rtol=0)
    torch.testing.assert_close(random_shift(x, torch.full((2, 2), 2), pad=2), x, atol=1e-3, rtol=0)  # centre


def test_shift_gather_equals_the_grid_sample_formula():
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (11, 3, 10, 10), dtype=torch.uint8, generator=gen)
    replay = PixelReplay(frames, np.zeros((9, 2)), np.zeros(9), np.ones(9), np.array([4, 9]), nstep=1)
    rows = torch.randint(0, 11, (5, 3), generator=gen)
    shifts = torch.randint(0, 9, (5, 2), generator=gen)
    fast = replay.shifted(rows, shifts, pad=4)
    ref = random_shift(replay.stacked(rows).float(), shifts, pad=4)
    assert fast.dtype == torch.uint8 and fast.shape == (5, 9, 10, 10)
    torch.testing.assert_close(fast.float(), ref, atol=1e-3, rtol=0)


def test_nstep_rewards_and_discounts_by_hand():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0])
    discounts = np.array([1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 0.0])
    frames = np.zeros((9, 3, 16, 16), np.uint8)
    replay = PixelReplay(frames, np.arange(14).reshape(7, 2), rewards, discounts, np.array([4, 7]),
                         nstep=2, discount=0.9)
    np.testing.assert_allclose(replay.rewards.numpy(), [1 + 0.9 * 2, 2 + 0.9 * 3, 3 + 0.9 * 4, 10 + 0.9 * 20,
                                                        20 + 0.9 * 30], rtol=1e-6)
    np.testing.assert_allclose(replay.discounts.numpy(), [0.81, 0.81, 0.81 * 0.5, 0.81, 0.0], rtol=1e-6)
    assert replay.actions[:, 0].tolist() == [0, 2, 4, 8, 10]


def test_sample_action_clips_noise_and_clamps_straight_through():
    mean = torch.tensor([[0.0, 0.9, -0.5]], requires_grad=True)
    eps = torch.tensor([[0.5, 1.0, -10.0]])
    a = sample_action(mean, 0.4, eps, clip=0.3)
    torch.testing.assert_close(a, torch.tensor([[0.2, 1.0 - 1e-6, -0.8]]))
    a.sum().backward()
    torch.testing.assert_close(mean.grad, torch.ones(1, 3))  # the clamp passes gradients through


def test_std_schedule():
    cfg = DrQBCConfig()
    assert cfg.stddev(0) == 1.0
    assert cfg.stddev(62_500) == pytest.approx(0.55)  # loop step 125k of 250k
    assert cfg.stddev(125_000) == pytest.approx(0.1) and cfg.stddev(10**6) == pytest.approx(0.1)
    for k in (0, 1000, 62_500, 200_000):
        assert cfg.stddev_tensor(torch.tensor(k)).item() == pytest.approx(cfg.stddev(k), rel=1e-6)


def _replay(size=20, act_dim=2, lengths=(9, 7, 12), seed=0) -> PixelReplay:
    rng = np.random.default_rng(seed)
    n, e = sum(lengths), len(lengths)
    frames = rng.integers(0, 256, (n + e, 3, size, size), dtype=np.uint8)
    return PixelReplay(frames, rng.uniform(-1, 1, (n, act_dim)), rng.normal(size=n), np.ones(n),
                       np.cumsum(lengths), nstep=TINY.nstep, discount=TINY.discount)


def _assert_adam_close(a: dict, b: dict, steps: int) -> None:
    """Adam moves a parameter whose gradient is near its eps (1e-8) by up to lr either way, so a different fp32
    summation order flips a rare element by O(lr); all others agree to 1e-5."""
    for name, value in b.items():
        diff = (a[name] - value).abs()
        assert (diff > 1e-5).float().mean() < 1e-3 and diff.max() <= steps * TINY.lr, name


def test_loss_terms_against_a_float64_recomputation():
    replay = _replay()
    agent = DrQBC(replay.obs_shape, replay.act_dim, TINY, seed=1)
    before = copy.deepcopy(agent.nets).double()
    noise = draw_noise(SeedStreams(torch.tensor([1]), torch.tensor(0)), replay.num_rows, 8, 2, TINY.pad)
    batch = replay.batch(noise.rows[0])
    metrics = agent.update(batch, noise, update=5)

    std = 1.0 - 0.9 * (2 * 5 / 20)  # linear(1.0, 0.1, 20) at loop step 10
    obs = random_shift(batch.obs.double(), noise.obs_shifts[0], 4)
    nxt = random_shift(batch.next_obs.double(), noise.next_shifts[0], 4)
    with torch.no_grad():
        f, f_next = before.encoder(obs), before.encoder(nxt)
        eps = noise.target_eps[0].double()
        a_next = (before.actor(f_next) + (eps * std).clamp(-0.3, 0.3)).clamp(-1 + 1e-6, 1 - 1e-6)
        y = batch.rewards.double() + batch.discounts.double() * torch.min(*before.critic_target(f_next, a_next))[:, 0]
        q1, q2 = before.critic(f, batch.actions.double())
        critic_loss = ((q1[:, 0] - y) ** 2).mean() + ((q2[:, 0] - y) ** 2).mean()
        # The actor loss sees the critic after its step (agent.critic now) and the actor before its step.
        critic_after = copy.deepcopy(agent.critic).double()
        a = (before.actor(f) + (noise.actor_eps[0].double() * std).clamp(-0.3, 0.3)).clamp(-1 + 1e-6, 1 - 1e-6)
        q = torch.min(*critic_after(f, a))
        lam = 2.5 / q.abs().mean()
        bc = ((a - batch.actions.double()) ** 2).mean()
    assert metrics["critic_loss"] == pytest.approx(critic_loss.item(), rel=1e-4)
    assert metrics["lambda"] == pytest.approx(lam.item(), rel=1e-4)
    assert metrics["bc_mse"] == pytest.approx(bc.item(), rel=1e-4)
    assert metrics["actor_loss"] == pytest.approx((-q.mean() * lam + bc).item(), rel=1e-4, abs=1e-5)
    # The target critic moved by tau towards the updated critic; the encoder moved (critic loss), trunks too.
    for p, t0, t1 in zip(agent.critic.parameters(), before.critic_target.parameters(),
                         agent.critic_target.parameters(), strict=True):
        torch.testing.assert_close(t1.double(), 0.99 * t0 + 0.01 * p.detach().double(), atol=1e-6, rtol=1e-5)
    assert not torch.equal(agent.encoder.convnet[0].weight.double(), before.encoder.convnet[0].weight)


def test_stacked_fp32_matches_the_reference_seed_for_seed():
    replay = _replay()
    seeds = [0, 7]
    stack = DrQBCStack(replay.obs_shape, replay.act_dim, seeds, TINY)
    refs = [DrQBC(replay.obs_shape, replay.act_dim, TINY, seed=s) for s in seeds]
    for k, ref in enumerate(refs):  # same initialisation
        for name, value in ref.nets.state_dict().items():
            assert torch.equal(stack.state_dict()[name][k], value), name
    for step in range(4):
        noise = draw_noise(stack.rng(), replay.num_rows, 8, replay.act_dim, TINY.pad)
        metrics = stack.train_step(replay, 8)
        # The critic loss and BC term of step 0 come from equal parameters; everything after the first Adam step
        # inherits Adam's O(lr) flips of near-zero gradients (see _assert_adam_close).
        for k, ref in enumerate(refs):
            ref_metrics = ref.update(replay.batch(noise.rows[k]), noise.seed(k), update=step)
            for name in ("critic_loss", "actor_loss", "bc_mse", "lambda"):
                exact = step == 0 and name in ("critic_loss", "bc_mse")
                tol = {"rel": 1e-5, "abs": 1e-6} if exact else {"rel": 1e-3, "abs": 1e-3}
                assert metrics[name][k].item() == pytest.approx(ref_metrics[name], **tol), (step, k, name)
    assert stack.step.item() == 4
    for k, ref in enumerate(refs):
        _assert_adam_close(stack.seed_state(k), ref.nets.state_dict(), steps=4)


def test_stacked_seed_is_independent_of_its_companions():
    replay = _replay()
    alone = DrQBCStack(replay.obs_shape, replay.act_dim, [7], TINY)
    pair = DrQBCStack(replay.obs_shape, replay.act_dim, [0, 7], TINY)
    for _ in range(2):
        alone.train_step(replay, 8)
        pair.train_step(replay, 8)
    _assert_adam_close(alone.seed_state(0), pair.seed_state(1), steps=2)


def test_per_seed_convolutions_equal_the_grouped_one():
    replay = _replay()
    grouped = DrQBCStack(replay.obs_shape, replay.act_dim, [0, 1, 2], TINY)
    looped = DrQBCStack(replay.obs_shape, replay.act_dim, [0, 1, 2], TINY, grouped_convs=False)
    obs = replay.stacked(replay.obs_rows[:5])[None].expand(3, 5, 9, 20, 20)
    torch.testing.assert_close(looped.encode(obs.transpose(0, 1)), grouped.encode(obs.transpose(0, 1)),
                               atol=1e-6, rtol=1e-5)


def test_bf16_and_channels_last_stay_close_to_fp32():
    replay = _replay()
    fp32 = DrQBCStack(replay.obs_shape, replay.act_dim, [0, 1], TINY)
    fast = DrQBCStack(replay.obs_shape, replay.act_dim, [0, 1], TINY, bf16=True, channels_last=True)
    m32, mbf = fp32.train_step(replay, 8), fast.train_step(replay, 8)
    torch.testing.assert_close(mbf["critic_loss"], m32["critic_loss"], rtol=5e-2, atol=1e-2)
    obs = replay.stacked(replay.obs_rows[:4])[None].expand(2, 4, 9, 20, 20)
    torch.testing.assert_close(fast.act(obs), fp32.act(obs), atol=5e-2, rtol=0)


def test_traced_step_equals_eager():
    """Dynamo traces the whole stacked step (gradients, Adam, Polyak included) into graphs that compute what
    eager does (aot_eager: the tracing without inductor's code generation, which the GPU tests cover)."""
    from gta_rl.fast import StepRunner

    replay = _replay()
    eager = DrQBCStack(replay.obs_shape, replay.act_dim, [0, 1], TINY)
    traced = DrQBCStack(replay.obs_shape, replay.act_dim, [0, 1], TINY)
    runner = StepRunner(traced, replay, 8, compile=True, compile_backend="aot_eager")
    for step in range(2):
        torch.testing.assert_close(runner(step)["critic_loss"], eager.train_step(replay, 8)["critic_loss"])
    torch.testing.assert_close(traced.seed_state(1)["encoder.convnet.0.weight"],
                               eager.seed_state(1)["encoder.convnet.0.weight"])
