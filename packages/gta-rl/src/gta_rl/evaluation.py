"""Policy evaluation in gymnasium environments: normalized D4RL scores (GTA section 5.1, appendix F).

Every seed's deterministic policy runs ``episodes`` episodes in one vector env (sync, or async worker
processes) of S x E copies of
the store's environment, so one batched forward pass serves all seeds per environment step. Episode i
of every evaluation starts from env seed ``base + i``, the same for every training seed, so seeds differ
only in their policies. PointMaze dict observations are flattened as the store's
``observation_layout`` says; the normalized score is 100 (R - R_min) / (R_max - R_min) from the store's
reference scores (``gta_data.normalized_score``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def make_env(env_id: str, **env_kwargs: Any):
    """``gym.make(env_id, **env_kwargs)``; the kwargs come from the store's ``attrs["env_kwargs"]`` (e.g.
    PointMaze's continuing_task, reset_target, max_episode_steps)."""
    import gymnasium as gym

    import gta_rl.toy  # noqa: F401  (registers the toy task)

    if env_id not in gym.registry:
        try:
            import gymnasium_robotics

            gym.register_envs(gymnasium_robotics)
        except ImportError:
            pass
    if env_id not in gym.registry:
        raise ValueError(f"environment {env_id!r} is not registered in gymnasium")
    return gym.make(env_id, **env_kwargs)


def flatten_observation(obs: Any, layout: Sequence[dict] | None, num_envs: int) -> np.ndarray:
    """[num_envs, obs_dim] float32 from a batched Box or Dict observation."""
    if not isinstance(obs, dict):
        return np.asarray(obs, dtype=np.float32).reshape(num_envs, -1)
    if not layout:
        raise ValueError("dict observations need the store's observation_layout to be flattened")
    dim = max(int(item["stop"]) for item in layout)
    out = np.zeros((num_envs, dim), dtype=np.float32)
    for item in layout:
        out[:, int(item["start"]):int(item["stop"])] = np.asarray(obs[item["key"]]).reshape(num_envs, -1)
    return out


def action_bound(env_id: str, env_kwargs: dict | None = None) -> float:
    """max |a| allowed by the environment's action space (TD3's max_action)."""
    env = make_env(env_id, **(env_kwargs or {}))
    try:
        return float(np.max(np.abs(np.concatenate([env.action_space.low, env.action_space.high]))))
    finally:
        env.close()


class Evaluator:
    """Runs ``num_policies`` policies for ``episodes`` episodes each, in one vector env."""

    def __init__(self, env_id: str, num_policies: int, episodes: int, *,
                 layout: Sequence[dict] | None = None, seed_base: int = 0,
                 env_kwargs: dict | None = None, asynchronous: bool = False) -> None:
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode

        kwargs = dict(env_kwargs or {})
        make_env(env_id, **kwargs).close()  # clear error for an unknown env before spawning copies
        self.env_id = env_id
        self.num_policies, self.episodes = num_policies, episodes
        self.layout = layout
        self.seed_base = seed_base
        n = num_policies * episodes
        # Async: one worker process per env copy, for slow simulators (HalfCheetah with 8 seeds x 10
        # episodes is 80k env steps per evaluation); sync otherwise.
        vector = gym.vector.AsyncVectorEnv if asynchronous else gym.vector.SyncVectorEnv
        self.envs = vector([lambda: make_env(env_id, **kwargs) for _ in range(n)],
                           autoreset_mode=AutoresetMode.NEXT_STEP)
        space = self.envs.single_action_space
        self.low, self.high = space.low, space.high

    def run(self, policy: Callable[[np.ndarray], np.ndarray],
            observe: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """``policy(obs [P, E, obs]) -> actions [P, E, act]``; returns undiscounted returns [P, E].
        ``observe(rewards [P, E])`` is called after every step (the Decision Transformer's returns-to-go)."""
        p, e = self.num_policies, self.episodes
        n = p * e
        seeds = [self.seed_base + i for _ in range(p) for i in range(e)]
        obs, _ = self.envs.reset(seed=seeds)
        done = np.zeros(n, dtype=bool)
        returns = np.zeros(n, dtype=np.float64)
        while not done.all():
            flat = flatten_observation(obs, self.layout, n)
            actions = np.asarray(policy(flat.reshape(p, e, -1)), dtype=np.float32).reshape(n, -1)
            obs, reward, terminated, truncated, _ = self.envs.step(np.clip(actions, self.low, self.high))
            # Envs that already finished are being auto-reset: ignore their rewards.
            returns += np.where(done, 0.0, reward)
            if observe is not None:
                observe(np.asarray(reward, dtype=np.float32).reshape(p, e))
            done |= np.asarray(terminated) | np.asarray(truncated)
        return returns.reshape(p, e)

    def close(self) -> None:
        self.envs.close()
