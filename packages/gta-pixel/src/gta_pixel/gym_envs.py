"""Gymnasium environments of the dm_control suite's *state* observations, for training behaviour policies.

V-D4RL's datasets were collected by state-based SAC policies acting at the pixel task's rate (action repeat
2). ``gta-rl sac`` trains on gymnasium ids, so this module registers ``gta_pixel/<domain>_<task>-v0``: the
flattened suite observation (float32, the dict's keys in order), actions in [-1, 1], the same action repeat and
reward sum as :class:`gta_pixel.tasks.DmcTask` (both use :class:`gta_pixel.tasks.DmcCore`), 500 agent steps
per episode, ``terminated`` only where the suite ends an episode with discount 0. A policy trained here acts
on ``state`` of the matching pixel task, which is the same vector, so ``gta-pixel make`` can run it.

Importing this module registers the ids. gymnasium imports it by itself for ids written
``gta_pixel.gym_envs:gta_pixel/walker_walk-v0`` (the ``module:id`` form of ``gymnasium.make``), which is how
``gta-rl sac --env`` reaches them without importing gta-pixel. ``state_vector()`` returns the simulator state
that a SAC run records at the start of each episode, so the run's replay buffer can be exported as a replay file
(actions and start states) and re-rendered as medium-replay pixel data.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from gta_pixel.tasks import DmcCore

# V-D4RL's three tasks and a few more locomotion tasks of the suite (1000 control steps each).
TASKS = ("walker_walk", "walker_run", "walker_stand", "cheetah_run", "humanoid_walk", "humanoid_run",
         "quadruped_walk", "quadruped_run")
ACTION_REPEAT = 2


def env_id(name: str) -> str:
    """The registered id of a suite task name (``walker_walk`` -> ``gta_pixel/walker_walk-v0``)."""
    return f"gta_pixel/{name}-v0"


def module_env_id(name: str) -> str:
    """The id in ``module:id`` form, which gymnasium resolves by importing this module first."""
    return f"{__name__}:{env_id(name)}"


class DmcStateEnv(gym.Env):
    """One dm_control suite task with flat state observations (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, domain: str, task: str, action_repeat: int = ACTION_REPEAT) -> None:
        self.core = DmcCore(domain, task, action_repeat)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.core.state_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.core.act_dim,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is None:  # gymnasium's convention: an unseeded reset continues the seeded stream
            seed = int(self.np_random.integers(2**31))
        return self.core.reset(seed), {}

    def step(self, action):
        state, reward, terminated, truncated = self.core.step(np.asarray(action, dtype=np.float32))
        return state, reward, terminated, truncated, {}

    def state_vector(self) -> np.ndarray:
        """The simulator's whole integration state (:meth:`DmcCore.simulator_state`). ``gta-rl sac`` records it
        at the start of every training episode (as it records MuJoCo envs' qpos and qvel), which is what lets
        the run's replay buffer be exported as a replay file and re-rendered as medium-replay data."""
        return self.core.simulator_state()

    def close(self) -> None:
        self.core.close()


def register_envs() -> None:
    """Register ``gta_pixel/<task>-v0`` for every task of :data:`TASKS` (idempotent)."""
    for name in TASKS:
        if env_id(name) in gym.registry:
            continue
        domain, task = name.split("_", 1)
        gym.register(env_id(name), entry_point=f"{__name__}:DmcStateEnv", max_episode_steps=500,
                     kwargs={"domain": domain, "task": task})


register_envs()
