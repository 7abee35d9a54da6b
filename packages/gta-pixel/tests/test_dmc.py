"""The real simulators: dm_control state envs (no rendering) and 10-step renders, skipped cleanly where
dm_control, gymnasium's MuJoCo or an OpenGL backend is unavailable."""

import os

import numpy as np
import pytest

pytest.importorskip("dm_control")
os.environ.setdefault("MUJOCO_GL", "egl")


def test_state_env_through_gta_rl_make_env():
    from gta_pixel.gym_envs import module_env_id
    from gta_pixel.tasks import DmcCore
    from gta_rl.evaluation import make_env

    env = make_env(module_env_id("walker_walk"))
    assert env.spec.max_episode_steps == 500
    obs, _ = env.reset(seed=5)
    core = DmcCore("walker", "walk")
    np.testing.assert_array_equal(obs, core.reset(5))
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)
    for a in actions:
        o1, r1, te1, tr1, _ = env.step(a)
        o2, r2, te2, tr2 = core.step(a)
        np.testing.assert_array_equal(o1, o2)
        assert (r1, te1, tr1) == (r2, te2, tr2)
    env.close()
    core.close()
    with pytest.raises(ValueError, match="cannot import"):
        make_env("gta_pixel.nothing_here:gta_pixel/walker_walk-v0")


def test_dmc_action_repeat_sums_rewards():
    from dm_control import suite

    from gta_pixel.tasks import DmcCore

    core = DmcCore("cheetah", "run", action_repeat=2)
    assert (core.act_dim, core.state_dim, core.max_steps) == (6, 17, 500)
    env = suite.load("cheetah", "run", task_kwargs={"random": 3}, visualize_reward=False)
    np.testing.assert_array_equal(core.reset(3), core.flatten(env.reset().observation))
    a = np.full(6, 0.5, np.float32)
    for _ in range(3):
        _, reward, _, _ = core.step(a)
        expected = sum(env.step(a.astype(np.float64)).reward for _ in range(2))
        assert reward == pytest.approx(expected, rel=1e-12)


def _render_or_skip(make):
    from gta_pixel.errors import TaskError

    try:
        task = make()
        task.reset(0)
    except TaskError as exc:
        pytest.skip(f"no offscreen rendering here: {exc}")
    return task


def test_dmc_task_renders_10_steps():
    from gta_pixel.tasks import DmcTask

    task = _render_or_skip(lambda: DmcTask("walker", "walk", size=32))
    state, frame = task.reset(1)
    frames = [frame]
    for _ in range(10):
        state, frame, reward, terminated, truncated = task.step(np.zeros(6, np.float32))
        frames.append(frame)
        assert 0.0 <= reward <= 2.0 and not terminated and not truncated
    assert frame.shape == (3, 32, 32) and frame.dtype == np.uint8 and state.shape == (24,)
    assert len({f.tobytes() for f in frames}) > 1  # the walker falls: the frames change
    info = task.renderer()
    assert info["shadowsize"] > 0 and "gl_renderer" in info
    task.close()


def test_gym_task_renders_10_steps():
    pytest.importorskip("gymnasium.envs.mujoco")
    from gta_pixel.tasks import GymTask

    task = _render_or_skip(lambda: GymTask("Hopper-v5", size=24))
    state, frame = task.reset(0)
    assert frame.shape == (3, 24, 24) and state.shape == (task.state_dim,) and task.max_steps == 1000
    for _ in range(10):
        state, frame, reward, terminated, truncated = task.step(np.zeros(task.act_dim, np.float32))
    assert frame.dtype == np.uint8
    task.close()
