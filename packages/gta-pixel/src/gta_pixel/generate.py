"""Generate V-D4RL-style pixel datasets: behaviour rollouts in a pixel task, every frame recorded.

V-D4RL's datasets were collected by state-based SAC policies (random, medium, expert, medium-expert; README
of github.com/conglu1997/v-d4rl) while the pixels were rendered. Here the behaviour policies are gta-data
policy files (:mod:`gta_data.policies`: tanh-Gaussian SAC actors run with numpy) acting on the task's
``state``, with stochastic actions as D4RL's:

- ``random``: uniform actions in [-1, 1];
- ``medium`` / ``expert``: the file's actor of that name;
- ``medium-expert``: the first ``episodes // 2`` episodes medium, the rest expert;
- ``medium-replay``: the behaviour agent's replay buffer up to its medium checkpoint, re-simulated from the
  recorded start states and actions of a replay file and re-rendered (:mod:`gta_pixel.resimulate`).

Policy files: dm_control tasks read ``<pixel policy dir>/<domain>_<task>.npz`` (``$GTA_PIXEL_POLICY_DIR``,
else ``packages/gta-pixel/policies``), trained with ``gta-rl sac`` on the state environments of
:mod:`gta_pixel.gym_envs`; gymnasium tasks read gta-data's locomotion files (``walker2d.npz`` for
``Walker2d-v5``). ``--policy-file`` overrides both. Replay files sit beside them (``<name>-medium-replay.npz``;
``--replay-file``).

Episode i resets the task with seed ``seed + i`` and draws its action noise from
``numpy.random.default_rng([seed, i])``, so the data is a function of the seed and the simulator and renderer
versions only: the same for any number of worker processes (medium-replay episode i is the replay file's
episode i: the seed plays no part). Workers are spawned (not forked: an OpenGL
context does not survive a fork) and each makes its own task, hence its own renderer; episodes come back in
order and are streamed into the store.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gta_pixel.behaviour import default_policy_file, file_sha256, load_behaviour_file, task_name
from gta_pixel.errors import GenerateError
from gta_pixel.pixelstore import PixelStore, PixelStoreWriter, check_replaceable
from gta_pixel.tasks import PixelTask, make_task, simulator_versions

QUALITIES = ("random", "medium", "expert", "medium-expert", "medium-replay")


def load_behaviour(spec: dict[str, Any], quality: str, policy_file: str | os.PathLike | None,
                   state_dim: int, act_dim: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The actors ``quality`` needs ({name: NumpyActor}) and their provenance; one-line errors naming what is
    missing."""
    from gta_data.policies import PolicyError, load_policy_file

    if quality not in QUALITIES:
        raise GenerateError(f"unknown quality {quality!r} (known: {', '.join(QUALITIES)})")
    if quality == "random":
        return {}, {"policy": "uniform random in [-1, 1]"}
    if quality == "medium-replay":
        raise GenerateError("medium-replay data comes from a replay file, not from policies")
    path = Path(policy_file) if policy_file is not None else default_policy_file(spec)
    names = ["medium", "expert"] if quality == "medium-expert" else [quality]
    how = (f"train one with `gta-rl sac --env gta_pixel.gym_envs:gta_pixel/{task_name(spec)}-v0` and export its "
           "actors (gta_rl.sac.export_policy_file)" if spec.get("kind") == "dmc"
           else "make it as gta-data's behaviour policies are made")
    policies = load_behaviour_file(path, load_policy_file, PolicyError, spec, needed_by=quality,
                                   kind="behaviour policy", holds="policies for", how=how, option="--policy-file")
    missing = [n for n in names if n not in policies.actors]
    if missing:
        raise GenerateError(f"{path} has no {' and no '.join(repr(n) for n in missing)} policy "
                            f"(has {', '.join(policies.actors)})")
    actors = {n: policies.actors[n] for n in names}
    for n, actor in actors.items():
        if (actor.obs_dim, actor.act_dim) != (state_dim, act_dim):
            raise GenerateError(f"{path}: policy {n!r} acts on {actor.obs_dim}-d states with {actor.act_dim}-d "
                                f"actions; {task_name(spec)} has {state_dim} and {act_dim}")
    return actors, {"policy": f"SAC {' then '.join(names)} (stochastic)", "policy_file": str(path),
                    "policy_sha256": file_sha256(path), "policy_info": {n: a.info for n, a in actors.items()}}


@dataclass
class EpisodeData:
    frames: np.ndarray  # [L + 1, 3, H, W] uint8
    states: np.ndarray  # [L + 1, state_dim] float32
    actions: np.ndarray  # [L, A] float32 in [-1, 1]
    rewards: np.ndarray  # [L] float32
    terminal: bool


def rollout(task: PixelTask, act: Callable[[np.ndarray, np.random.Generator], np.ndarray], env_seed: int,
            rng: np.random.Generator) -> EpisodeData:
    """One episode from ``task.reset(env_seed)`` until it terminates or is truncated (at most max_steps)."""
    state, frame = task.reset(env_seed)
    frames, states, actions, rewards = [frame], [state], [], []
    terminated = truncated = False
    while not (terminated or truncated) and len(actions) < task.max_steps:
        action = np.clip(np.asarray(act(state, rng), dtype=np.float32).reshape(-1), -1.0, 1.0)
        state, frame, reward, terminated, truncated = task.step(action)
        frames.append(frame)
        states.append(state)
        actions.append(action)
        rewards.append(reward)
    return EpisodeData(np.stack(frames), np.stack(states).astype(np.float32), np.stack(actions),
                       np.asarray(rewards, dtype=np.float32), bool(terminated))


def _policy_act(actor) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    low, high = np.asarray(actor.action_low, np.float64), np.asarray(actor.action_high, np.float64)

    def act(state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        a = actor.sample(np.asarray(state, np.float32)[None], rng)[0].astype(np.float64)
        return 2.0 * (a - low) / (high - low) - 1.0  # the file's action bounds -> the task's [-1, 1]

    return act


def _random_act(act_dim: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    return lambda state, rng: rng.uniform(-1.0, 1.0, act_dim)


# -- worker side ---------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _init_worker(spec: dict[str, Any], actors: dict[str, Any], quality: str, episodes: int, seed: int,
                 replay: Any = None) -> None:
    task = make_task(spec)
    _WORKER.update(task=task, actors=actors, quality=quality, episodes=episodes, seed=seed, replay=replay,
                   renderer=None)


def _behaviour_of(index: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    quality, actors, task = _WORKER["quality"], _WORKER["actors"], _WORKER["task"]
    if quality == "random":
        return _random_act(task.act_dim)
    if quality == "medium-expert":
        return _policy_act(actors["medium" if index < _WORKER["episodes"] // 2 else "expert"])
    return _policy_act(actors[quality])


def _replayed(index: int) -> EpisodeData:
    """Episode ``index`` of the replay file, re-simulated (:func:`gta_pixel.resimulate.replay_episode`)."""
    from gta_pixel.resimulate import replay_episode

    replay = _WORKER["replay"]
    start = int(replay.lengths[:index].sum())
    return EpisodeData(*replay_episode(_WORKER["task"], replay.starts[index],
                                       replay.actions[start:start + int(replay.lengths[index])]))


def _run_episode(index: int) -> tuple[EpisodeData, dict[str, Any] | None]:
    """Episode ``index`` (seeded by it alone), and the renderer of this worker with its first episode."""
    seed = _WORKER["seed"]
    if _WORKER["quality"] == "medium-replay":
        data = _replayed(index)
    else:
        data = rollout(_WORKER["task"], _behaviour_of(index), seed + index, np.random.default_rng([seed, index]))
    renderer = None
    if _WORKER["renderer"] is None:
        renderer = _WORKER["renderer"] = _WORKER["task"].renderer()
    return data, renderer


def _close_worker() -> None:
    task = _WORKER.pop("task", None)
    if task is not None:
        task.close()


def iter_episodes(spec: dict[str, Any], actors: dict[str, Any], quality: str, episodes: int, seed: int,
                  workers: int = 1, replay: Any = None) -> Iterator[tuple[EpisodeData, dict[str, Any] | None]]:
    """Episodes 0..episodes-1 in order, made in this process (``workers`` 1) or by spawned worker processes
    (``replay``: the replay file medium-replay episodes come from)."""
    if workers <= 1:
        _init_worker(spec, actors, quality, episodes, seed, replay)
        try:
            for i in range(episodes):
                yield _run_episode(i)
        finally:
            _close_worker()
        return
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, episodes), initializer=_init_worker,
                  initargs=(spec, actors, quality, episodes, seed, replay)) as pool:
        yield from pool.imap(_run_episode, range(episodes), chunksize=1)


# -- the whole dataset ---------------------------------------------------------------------------------------


def make_dataset(spec: dict[str, Any], quality: str, out: str | os.PathLike, *, episodes: int | None,
                 seed: int = 0, workers: int = 1, policy_file: str | os.PathLike | None = None,
                 replay_file: str | os.PathLike | None = None, frame_stack: int = 3, states: bool = True,
                 overwrite: bool = False, progress: Callable[[int], None] | None = None) -> PixelStore:
    """Roll out ``episodes`` episodes of ``quality`` behaviour in the task ``spec`` (medium-replay: re-simulate
    the first ``episodes`` episodes of the replay file, all of them for None) and write them to a pixel store
    at ``out`` (atomically; renderer and simulator versions in its attributes)."""
    if episodes is None and quality != "medium-replay":
        raise GenerateError(f"{quality} data needs a number of episodes")
    if episodes is not None and episodes < 1:
        raise GenerateError(f"--episodes must be at least 1, got {episodes}")
    if workers < 1:
        raise GenerateError(f"--workers must be at least 1, got {workers}")
    if quality not in QUALITIES:
        raise GenerateError(f"unknown quality {quality!r} (known: {', '.join(QUALITIES)})")
    check_replaceable(out, overwrite)
    probe = make_task(spec)  # a clear error for a bad task before any worker starts; no rendering here
    state_dim, act_dim, frame_shape, spec = probe.state_dim, probe.act_dim, probe.frame_shape, dict(probe.spec)
    replay, check = None, None
    try:
        if quality == "medium-replay":
            from gta_pixel.resimulate import ResimCheck, load_replay

            replay, behaviour = load_replay(spec, replay_file, probe)
            if episodes is None:
                episodes = replay.num_episodes
            elif episodes > replay.num_episodes:
                raise GenerateError(f"--episodes {episodes}, but the replay file holds {replay.num_episodes}")
            actors, check = {}, ResimCheck()
    finally:
        probe.close()
    if replay is None:
        actors, behaviour = load_behaviour(spec, quality, policy_file, state_dim, act_dim)
    if quality == "medium-expert" and episodes < 2:
        raise GenerateError("medium-expert needs at least 2 episodes")
    writer = PixelStoreWriter(out, task=spec, frame_shape=frame_shape, act_dim=act_dim,
                              state_dim=state_dim if states and state_dim > 0 else None, frame_stack=frame_stack,
                              overwrite=overwrite)
    renderers: list[dict[str, Any]] = []
    with writer:
        for index, (data, renderer) in enumerate(iter_episodes(spec, actors, quality, episodes, seed, workers,
                                                               replay)):
            if renderer is not None and renderer not in renderers:
                renderers.append(renderer)
            if check is not None:
                check.add(data.rewards, data.states[-1], len(data.actions), data.terminal,
                          replay.returns[index], replay.last_obs[index], int(replay.lengths[index]),
                          bool(replay.terminal[index]))
            terminals = np.zeros(len(data.actions), bool)
            terminals[-1] = data.terminal
            writer.add_episode(data.frames, data.actions, data.rewards, terminals=terminals,
                               states=data.states if writer.state_dim is not None else None)
            if progress is not None:
                progress(len(data.actions))
        writer.set_renderer(renderers[0] if len(renderers) == 1 else {"workers": renderers})
        if check is not None:
            behaviour.update(replay_check=check.as_dict(), episode_seeds="episode i = the replay file's episode i, "
                             "from its recorded start state")
        else:
            behaviour.update(seed=seed, episode_seeds="env seed = seed + i, action noise "
                             "numpy.random.default_rng([seed, i])")
        writer.update_provenance(source="generate", task_name=task_name(spec), quality=quality,
                                 episodes=episodes, **behaviour, simulators=simulator_versions())
    return PixelStore.open(out)
