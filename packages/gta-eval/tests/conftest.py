"""Fixtures: small datasets collected from the real environments with random actions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gta_data import Transitions, write_store


def collect(env_id: str, steps: int, *, seed: int = 0, action_scale: float = 1.2, flatten=None, **kwargs):
    """Random-action rollouts: (Transitions, episode_ends). Actions go 20% past the bounds on purpose."""
    import gymnasium as gym

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if env_id.startswith("PointMaze"):
            import gymnasium_robotics

            gym.register_envs(gymnasium_robotics)
        env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = {k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")}
    ends = []
    flat = flatten or (lambda o: o)
    for t in range(steps):
        act = rng.uniform(-action_scale, action_scale, env.action_space.shape).astype(np.float32)
        nxt, rew, term, trunc, _ = env.step(act)
        last = t == steps - 1
        for k, v in zip(rows, (flat(obs), act, rew, flat(nxt), term, trunc or (last and not term)), strict=True):
            rows[k].append(v)
        obs = nxt
        if term or trunc or last:
            ends.append(t + 1)
            obs, _ = env.reset()
    env.close()
    return Transitions(**{k: np.asarray(v) for k, v in rows.items()}), np.asarray(ends)


def pointmaze_flat(o):
    return np.concatenate([o["observation"], o["desired_goal"]])


POINTMAZE_LAYOUT = [{"key": "observation", "start": 0, "stop": 4}, {"key": "desired_goal", "start": 4, "stop": 6}]


@pytest.fixture(scope="session")
def cheetah(tmp_path_factory):
    """A 400-step HalfCheetah-v5 store."""
    tr, ends = collect("HalfCheetah-v5", 400, max_episode_steps=100)
    path = tmp_path_factory.mktemp("stores") / "cheetah.zarr"
    return write_store(path, tr, ends, env_id="HalfCheetah-v5")


class EnvData:
    collect = staticmethod(collect)
    pointmaze_flat = staticmethod(pointmaze_flat)
    POINTMAZE_LAYOUT = POINTMAZE_LAYOUT


@pytest.fixture(scope="session")
def envdata():
    """Helpers of this conftest (test modules cannot import conftest under --import-mode=importlib)."""
    return EnvData
