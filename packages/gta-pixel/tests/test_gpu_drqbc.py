"""GPU-only checks of DrQ+BC's fast path (skipped without CUDA): the stacked step never synchronises with the
host, the compiled whole-step CUDA graph replays what eager computes, bf16 + channels_last stays close to fp32,
and the stacked fp32 step matches the reference on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gta_data.accel.devices import strict_fp32
from gta_pixel.bench import synthetic_replay
from gta_pixel.drqbc import DrQBC, DrQBCConfig, draw_noise
from gta_pixel.drqbc_fast import DrQBCStack
from gta_rl.fast import StepRunner

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CFG = DrQBCConfig(hidden_dim=256, batch_size=64)


@pytest.fixture(scope="module")
def replay():
    return synthetic_replay(84, 6, episodes=3, length=50, config=CFG, device=torch.device("cuda"))


@pytest.fixture
def fp32():
    """Strict fp32 (no TF32 convolutions, deterministic cuDNN) for the comparisons of two fp32 executions."""
    with strict_fp32():
        yield


def _agent(replay, **kw):
    return DrQBCStack(replay.obs_shape, replay.act_dim, [0, 1, 2], CFG, "cuda", **kw)


def test_step_does_not_sync(replay):
    agent = _agent(replay, bf16=True, channels_last=True)
    agent.train_step(replay, CFG.batch_size)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            agent.train_step(replay, CFG.batch_size)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("compile,grouped", [(False, True), (True, True), (True, False)])
def test_cuda_graph_replays_the_eager_step(replay, compile, grouped, fp32):
    eager, graphed = _agent(replay), _agent(replay, grouped_convs=grouped)
    runner = StepRunner(graphed, replay, CFG.batch_size, compile=compile, cuda_graph=True, warmup=2)
    for step in range(6):
        m_eager = eager.train_step(replay, CFG.batch_size)
        m_graph = runner(step)
        torch.testing.assert_close(m_graph["critic_loss"], m_eager["critic_loss"], rtol=2e-3, atol=1e-4)
    assert int(graphed.step) == 6
    for k in range(3):
        a, b = eager.seed_state(k), graphed.seed_state(k)
        for name in a:
            diff = (a[name] - b[name]).abs()
            assert (diff > 1e-4).float().mean() < 1e-3 and diff.max() <= 6 * CFG.lr, name


def test_bf16_channels_last_close_to_fp32(replay):
    fp32, fast = _agent(replay), _agent(replay, bf16=True, channels_last=True)
    for _ in range(3):
        m32, mbf = fp32.train_step(replay, CFG.batch_size), fast.train_step(replay, CFG.batch_size)
    torch.testing.assert_close(mbf["critic_loss"], m32["critic_loss"], rtol=5e-2, atol=1e-2)
    obs = replay.stacked(replay.obs_rows[:16])[None].expand(3, 16, *replay.obs_shape)
    torch.testing.assert_close(fast.act(obs), fp32.act(obs), atol=5e-2, rtol=0)


def test_stacked_matches_reference_on_device(replay, fp32):
    stack = _agent(replay)
    refs = [DrQBC(replay.obs_shape, replay.act_dim, CFG, seed=s, device="cuda") for s in (0, 1, 2)]
    for step in range(3):
        noise = draw_noise(stack.rng(), replay.num_rows, CFG.batch_size, replay.act_dim, CFG.pad)
        metrics = stack.train_step(replay, CFG.batch_size)
        for k, ref in enumerate(refs):
            r = ref.update(replay.batch(noise.rows[k]), noise.seed(k), update=step)
            assert np.isclose(metrics["critic_loss"][k].item(), r["critic_loss"], rtol=1e-3)
            assert np.isclose(metrics["lambda"][k].item(), r["lambda"], rtol=1e-3)
