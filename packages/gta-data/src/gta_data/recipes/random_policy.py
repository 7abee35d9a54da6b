"""Uniformly random policy in any gymnasium environment (D4RL's "random" datasets)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from gta_data.errors import RecipeError
from gta_data.recipes.recipe import Recipe
from gta_data.scores import D4RL_REFERENCE_SCORES, env_family
from gta_data.simulators import make_env
from gta_data.store import Transitions


def rollout_episodes(env, policy, size: int, seed: int, obs_keys=None, on_reset=None,
                     on_step_start=None) -> Iterator[Transitions]:
    """Step ``policy(obs_flat, obs_raw) -> action`` for ``size`` transitions; yield one Transitions per
    episode. The last episode, cut by ``size``, is marked as a timeout. ``on_reset()`` runs after each
    reset; ``on_step_start(obs_raw) -> obs_raw`` may change the task (e.g. a new goal) before a step, and
    the observation it returns is the one recorded."""
    from gta_data.minari_bridge import flatten_observations

    def flat(o):
        if isinstance(o, dict):
            return flatten_observations({k: np.asarray(v)[None] for k, v in o.items()}, obs_keys)[0][0]
        return np.asarray(o, dtype=np.float32).reshape(-1)

    done_steps, episode = 0, 0
    while done_steps < size:
        obs, _ = env.reset(seed=seed + episode)
        if on_reset is not None:
            on_reset()
        rows: dict[str, list] = {k: [] for k in ("o", "a", "r", "no", "term", "trunc")}
        while True:
            if on_step_start is not None:
                obs = on_step_start(obs)
            action = policy(flat(obs), obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            done_steps += 1
            cut = done_steps >= size
            for key, value in zip(rows, (flat(obs), action, reward, flat(next_obs), terminated,
                                         (truncated or cut) and not terminated), strict=True):
                rows[key].append(value)
            obs = next_obs
            if terminated or truncated or cut:
                break
        episode += 1
        yield Transitions(
            observations=np.stack(rows["o"]), actions=np.stack(rows["a"]), rewards=np.asarray(rows["r"]),
            next_observations=np.stack(rows["no"]), terminals=np.asarray(rows["term"]),
            timeouts=np.asarray(rows["trunc"]),
        )


def _build(size: int, seed: int, options: dict[str, Any]):
    env_id = options.get("env_id")
    if not env_id:
        raise RecipeError("the random recipe needs an environment id (--env)")
    env = make_env(env_id)
    env.action_space.seed(seed)
    from gta_data.minari_bridge import flatten_observations

    obs, _ = env.reset(seed=seed)
    if isinstance(obs, dict):
        flat, layout = flatten_observations({k: np.asarray(v)[None] for k, v in obs.items()})
    else:
        flat, layout = np.asarray(obs).reshape(1, -1), None
    family = env_family(env_id)
    lo, hi = D4RL_REFERENCE_SCORES.get(family, (None, None)) if family else (None, None)
    meta = {
        "env_id": env_id,
        "obs_dim": int(flat.shape[1]),
        "act_dim": int(np.prod(env.action_space.shape)),
        "ref_min_score": lo,
        "ref_max_score": hi,
        "observation_layout": layout,
        "provenance": {"policy": "uniform random"},
    }
    return rollout_episodes(env, lambda o, raw: env.action_space.sample(), size, seed), meta


RECIPE = Recipe("random", "uniformly random actions in any gymnasium environment (--env ID)", 100_000, _build,
                options=("env_id",))
