"""A tiny offline RL task that learns in seconds on a CPU, for tests and smoke runs.

PointGoal: a point in [-1, 1]^2 moves by 0.2 a (a in [-1, 1]^2) and is paid -||s'|| per step for 15
steps; the expert heads for the origin at full speed. The behaviour data mixes expert actions with
uniform random ones (probability ``expert_prob`` per step), so behaviour cloning of it learns only
``expert_prob`` times the expert action (the mean), while an offline RL method that weighs actions by
their value can recover the expert. Reference scores are the random and expert policies' returns.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np

from gta_data import StoreWriter, Transitions

ENV_ID = "GtaPoint-v0"
HORIZON = 15
STEP = 0.2


class PointGoalEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.pos = np.zeros(2, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)
        return self.pos.copy(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self.pos = np.clip(self.pos + STEP * a, -1.0, 1.0).astype(np.float32)
        return self.pos.copy(), float(-np.linalg.norm(self.pos)), False, False, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="gta_rl.toy:PointGoalEnv", max_episode_steps=HORIZON)


def expert_action(obs: np.ndarray) -> np.ndarray:
    return np.clip(-obs / STEP, -1.0, 1.0).astype(np.float32)


def rollout_returns(policy, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``policy(obs [N, 2], rng) -> actions [N, 2]`` over ``episodes`` episodes."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-1.0, 1.0, (episodes, 2)).astype(np.float32)
    ret = np.zeros(episodes)
    for _ in range(HORIZON):
        pos = np.clip(pos + STEP * np.clip(policy(pos, rng), -1, 1), -1.0, 1.0)
        ret -= np.linalg.norm(pos, axis=1)
    return ret


def random_policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, obs.shape).astype(np.float32)


def expert_policy(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return expert_action(obs)


def write_point_dataset(
    path: str | os.PathLike, *, episodes: int = 200, expert_prob: float = 0.3, seed: int = 0,
    env_id: str = ENV_ID, overwrite: bool = False,
):
    """Write a behaviour dataset of PointGoal to a store; returns the opened store."""
    rng = np.random.default_rng(seed)
    ref_min = float(rollout_returns(random_policy, 2000, seed=12345).mean())
    ref_max = float(rollout_returns(expert_policy, 2000, seed=12345).mean())
    with StoreWriter(path, env_id=env_id, obs_dim=2, act_dim=2, ref_min_score=ref_min, ref_max_score=ref_max,
                     provenance={"source": "gta_rl.toy", "expert_prob": expert_prob, "seed": seed},
                     overwrite=overwrite) as writer:
        for _ in range(episodes):
            pos = rng.uniform(-1.0, 1.0, 2).astype(np.float32)
            obs, act, rew, nxt = [], [], [], []
            for _ in range(HORIZON):
                a = expert_action(pos) if rng.random() < expert_prob else rng.uniform(-1, 1, 2).astype(np.float32)
                new = np.clip(pos + STEP * a, -1.0, 1.0).astype(np.float32)
                obs.append(pos)
                act.append(a)
                rew.append(-np.linalg.norm(new))
                nxt.append(new)
                pos = new
            timeouts = np.zeros(HORIZON, bool)
            timeouts[-1] = True
            writer.add_episode(Transitions(np.array(obs), np.array(act), np.array(rew), np.array(nxt),
                                           np.zeros(HORIZON, bool), timeouts))
    from gta_data import TrajectoryStore

    return TrajectoryStore.open(path)
