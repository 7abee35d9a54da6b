"""The oracle reproduces real environment transitions (GTA D.1/D.3 need f*(s, a) and the true reward)."""

from __future__ import annotations

import numpy as np
import pytest

from gta_eval.errors import EvalError
from gta_eval.oracle import (
    ACTION_OUT_OF_RANGE,
    CLIPPED_STATE,
    OracleSpec,
    clipped_states,
    make_oracle,
    run_oracle,
)


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"])
def test_locomotion_oracle_reproduces_env(env_id, envdata):
    tr, _ = envdata.collect(env_id, 300)
    spec = OracleSpec.create(env_id, tr.obs_dim, tr.act_dim)
    out = run_oracle(spec, tr.observations, tr.actions)
    assert out.valid.all()
    ok = out.exact
    assert ok.sum() >= 40  # Walker2d random play hits the +-10 velocity clip often; enough rows remain
    # Stored observations are float32: the reconstruction error is at float32 rounding, not physics.
    np.testing.assert_allclose(out.next_observations[ok], tr.next_observations[ok], atol=2e-4, rtol=0)
    np.testing.assert_allclose(out.rewards[ok], tr.rewards[ok], atol=2e-5, rtol=0)
    np.testing.assert_array_equal(out.terminated[ok], tr.terminals[ok])
    assert np.count_nonzero(out.flags & ACTION_OUT_OF_RANGE) > 0  # actions go 20% past the bounds


def test_clipped_velocities_are_flagged(envdata):
    tr, _ = envdata.collect("Walker2d-v5", 300)
    vel = tr.observations[:, 8:]
    out = run_oracle(OracleSpec.create("Walker2d-v5", 17, 6), tr.observations, tr.actions)
    clipped = np.any(np.abs(vel) >= 10.0, axis=1)
    assert clipped.any()
    np.testing.assert_array_equal((out.flags & CLIPPED_STATE) != 0, clipped)
    np.testing.assert_array_equal(clipped_states(OracleSpec.create("Walker2d-v5", 17, 6), tr.observations), clipped)
    # Stepped from the clipped velocity and counted (the paper's metrics average over every row), but not exact.
    assert out.valid[clipped].all() and not out.exact[clipped].any() and out.exact[~clipped].all()
    assert np.isfinite(out.next_observations[clipped]).all()
    # A clipped state is a different state: its outcome is not the recorded one.
    assert np.abs(out.next_observations[clipped] - tr.next_observations[clipped]).max() > 1e-2


def test_ant_dynamics_exact_reward_close(envdata):
    # Ant-v5's forward reward reads the torso xpos, which MuJoCo leaves one substep stale after a step;
    # a stored state does not determine it, so only the reward is approximate (documented in oracle.py).
    tr, _ = envdata.collect("Ant-v5", 150)
    out = run_oracle(OracleSpec.create("Ant-v5", tr.obs_dim, tr.act_dim), tr.observations, tr.actions)
    assert tr.obs_dim == 105 and out.valid.all()
    np.testing.assert_allclose(out.next_observations, tr.next_observations, atol=2e-4, rtol=0)
    assert np.abs(out.rewards - tr.rewards).mean() < 0.02


def test_ant_without_contact_forces_is_inferred_from_obs_dim(envdata):
    tr, _ = envdata.collect("Ant-v5", 50, include_cfrc_ext_in_observation=False)
    out = run_oracle(OracleSpec.create("Ant-v5", 27, 8), tr.observations, tr.actions)
    np.testing.assert_allclose(out.next_observations, tr.next_observations, atol=2e-4, rtol=0)


@pytest.mark.parametrize("env_id", ["PointMaze_UMaze-v3", "PointMaze_MediumDense-v3"])
def test_pointmaze_oracle(env_id, envdata):
    tr, _ = envdata.collect(env_id, 300, flatten=envdata.pointmaze_flat, continuing_task=True, reset_target=False)
    spec = OracleSpec.create(env_id, 6, 2, envdata.POINTMAZE_LAYOUT, {"continuing_task": True, "reset_target": False})
    out = run_oracle(spec, tr.observations, tr.actions)
    assert out.valid.all()
    np.testing.assert_allclose(out.next_observations, tr.next_observations, atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.rewards, tr.rewards, atol=1e-5, rtol=0)


def test_out_of_range_action_is_stepped_as_the_env_does(envdata):
    tr, _ = envdata.collect("HalfCheetah-v5", 5)
    oracle = make_oracle(OracleSpec.create("HalfCheetah-v5", 17, 6))
    s = tr.observations[:1]
    a_in = oracle.step(s, np.ones((1, 6), np.float32))
    a_out = oracle.step(s, np.full((1, 6), 2.0, np.float32))
    # MuJoCo clamps ctrl to ctrlrange (same physics); v5 charges the control cost on the raw action.
    np.testing.assert_allclose(a_out.next_observations, a_in.next_observations, atol=1e-12)
    np.testing.assert_allclose(a_in.rewards - a_out.rewards, 0.1 * (4.0 - 1.0) * 6, rtol=1e-9)
    assert a_out.flags[0] & ACTION_OUT_OF_RANGE and a_out.valid[0]


def test_parallel_equals_serial(envdata):
    tr, _ = envdata.collect("Hopper-v5", 200)
    spec = OracleSpec.create("Hopper-v5", 11, 3)
    one = run_oracle(spec, tr.observations, tr.actions, workers=1, chunk_size=64)
    two = run_oracle(spec, tr.observations, tr.actions, workers=2, chunk_size=64)
    np.testing.assert_array_equal(one.next_observations, two.next_observations)
    np.testing.assert_array_equal(one.rewards, two.rewards)
    np.testing.assert_array_equal(one.flags, two.flags)


def test_bad_input_is_a_clear_error():
    with pytest.raises(EvalError, match="no oracle for env 'CartPole-v1'"):
        OracleSpec.create("CartPole-v1", 4, 1)
    with pytest.raises(EvalError, match="no variant of HalfCheetah-v5 has 19-dim"):
        make_oracle(OracleSpec.create("HalfCheetah-v5", 19, 6))
    with pytest.raises(EvalError, match="lacks 'desired_goal'"):
        make_oracle(OracleSpec.create("PointMaze_UMaze-v3", 4, 2, [{"key": "observation", "start": 0, "stop": 4}]))
    with pytest.raises(EvalError, match="observations have shape"):
        run_oracle(OracleSpec.create("Hopper-v5", 11, 3), np.zeros((3, 12)), np.zeros((3, 3)))


@pytest.mark.parametrize("env_id", ["PointMaze_UMaze-v3", "HalfCheetah-v5"])
def test_oracle_envs_are_quiet(env_id, tmp_path):
    # gymnasium-robotics' AdroitHand notice (printed on import), MuJoCo's settotalmass deprecation and its
    # MUJOCO_LOG.TXT: none of them on any gta-eval command.
    import subprocess
    import sys

    code = (f"from gta_eval.oracle import _make_env; env = _make_env({env_id!r}); env.reset(seed=0); "
            "env.step(env.action_space.sample()); env.close()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == "", proc.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
