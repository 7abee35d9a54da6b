"""The real simulators: dm_control state envs (no rendering) and 10-step renders, skipped cleanly where
dm_control, gymnasium's MuJoCo or an OpenGL backend is unavailable."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

# This process only steps states: no OpenGL backend in it (see gta_pixel.tasks.load_dmc); renders run in children.
os.environ.setdefault("MUJOCO_GL", "disable")
pytest.importorskip("dm_control")


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


def _render_in_subprocess(body: str) -> None:
    """Run a render check in a fresh interpreter. An OpenGL backend loads its own LLVM (Mesa's llvmpipe), which
    crashes a later import of Triton's LLVM in the same process (gta-rl's fused kernels): rendering must never
    happen in the test process itself. Exit 77 from the child means "no offscreen rendering here": a skip."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        from gta_pixel.errors import TaskError

        def render_or_skip(make):
            try:
                task = make()
                task.reset(0)
            except TaskError as exc:
                print(f"no offscreen rendering here: {exc}")
                sys.exit(77)
            return task
    """) + textwrap.dedent(body)
    gl = os.environ.get("MUJOCO_GL", "egl")
    env = {**os.environ, "MUJOCO_GL": "egl" if gl in ("disable", "off") else gl}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dmc_task_renders_10_steps():
    _render_in_subprocess("""
        from gta_pixel.tasks import DmcTask

        task = render_or_skip(lambda: DmcTask("walker", "walk", size=32))
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
    """)


def test_gym_task_renders_10_steps():
    pytest.importorskip("gymnasium.envs.mujoco")
    _render_in_subprocess("""
        from gta_pixel.tasks import GymTask

        task = render_or_skip(lambda: GymTask("Hopper-v5", size=24))
        state, frame = task.reset(0)
        assert frame.shape == (3, 24, 24) and state.shape == (task.state_dim,) and task.max_steps == 1000
        for _ in range(10):
            state, frame, reward, terminated, truncated = task.step(np.zeros(task.act_dim, np.float32))
        assert frame.dtype == np.uint8
        task.close()
    """)
