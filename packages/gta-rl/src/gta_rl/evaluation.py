"""Policy evaluation in gymnasium environments: normalized D4RL scores (GTA section 5.1, appendix F).

Every seed's deterministic policy runs ``episodes`` episodes in one vector env of S x E copies of the
store's environment (in this process, or sharded over worker processes that each step a share of the
copies), so one batched forward pass serves all seeds per environment step. Episode i of policy j starts
from env seed ``env_seeds[j][i]`` (default ``seed_base + i`` for every policy; a training run passes each
seed its own, see :mod:`gta_rl.run_eval`). PointMaze dict observations are flattened as the store's
``observation_layout`` says; the normalized score is 100 (R - R_min) / (R_max - R_min) from the store's
reference scores (``gta_data.normalized_score``).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections.abc import Callable, Sequence
from multiprocessing.reduction import ForkingPickler
from typing import Any

import numpy as np


def make_env(env_id: str, **env_kwargs: Any):
    """``gym.make(env_id, **env_kwargs)``; the kwargs come from the store's ``attrs["env_kwargs"]`` (e.g.
    PointMaze's continuing_task, reset_target, max_episode_steps). An id ``module:name`` (gymnasium's own
    form) first imports ``module``, which registers ``name`` (e.g. ``gta_pixel.gym_envs:gta_pixel/walker_walk-v0``)."""
    import importlib

    import gymnasium as gym

    import gta_rl.toy  # noqa: F401  (registers the toy task)
    from gta_data.simulators import quiet_mujoco, register_robotics_envs

    quiet_mujoco()
    module, _, name = env_id.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"environment {env_id!r}: cannot import {module} ({exc})") from None
    if name not in gym.registry:
        register_robotics_envs()
    if name not in gym.registry:
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


def check_env_matches(env_id: str, env_kwargs: dict | None, layout: Sequence[dict] | None, obs_dim: int) -> None:
    """Raise ValueError (one line) unless the store's environment can be made with its ``env_kwargs`` and one
    reset observation, flattened with the store's ``observation_layout``, has the store's ``obs_dim``: run
    before training, so that a store evaluation cannot use fails at once rather than at the first evaluation."""
    try:
        env = make_env(env_id, **(env_kwargs or {}))
    except TypeError as exc:  # an env_kwargs key the env does not take
        raise ValueError(f"cannot make {env_id} with the store's env_kwargs {env_kwargs}: {exc}") from None
    try:
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    if isinstance(obs, dict):
        if not layout:
            raise ValueError(f"{env_id} observes a dict ({', '.join(obs)}) but the store has no observation_layout "
                             "to flatten it with")
        missing = [item["key"] for item in layout if item["key"] not in obs]
        if missing:
            raise ValueError(f"the store's observation_layout names {missing}, which {env_id} does not observe "
                             f"(it has {', '.join(obs)})")
    width = flatten_observation({k: np.asarray(v)[None] for k, v in obs.items()} if isinstance(obs, dict)
                                else np.asarray(obs)[None], layout, 1).shape[1]
    if width != obs_dim:
        raise ValueError(f"{env_id} observations flatten to width {width} but the store's rows have obs_dim {obs_dim}")


def action_bound(env_id: str, env_kwargs: dict | None = None) -> float:
    """max |a| allowed by the environment's action space (TD3's max_action)."""
    env = make_env(env_id, **(env_kwargs or {}))
    try:
        return float(np.max(np.abs(np.concatenate([env.action_space.low, env.action_space.high]))))
    finally:
        env.close()


def play_episodes(envs, seeds: Sequence[int], act: Callable[[np.ndarray], np.ndarray], low: np.ndarray,
                  high: np.ndarray, layout: Sequence[dict] | None = None,
                  observe: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """One episode in every copy of a vector env with next-step autoreset (copy i from env seed
    ``seeds[i]``): ``act(obs [N, obs]) -> actions [N, act]`` (clipped to [low, high]), ``observe(rewards
    [N])`` after every step; the undiscounted returns [N]."""
    n = len(seeds)
    obs, _ = envs.reset(seed=list(seeds))
    done = np.zeros(n, dtype=bool)
    returns = np.zeros(n, dtype=np.float64)
    while not done.all():
        actions = act(flatten_observation(obs, layout, n))
        obs, reward, terminated, truncated, _ = envs.step(np.clip(actions, low, high))
        returns += np.where(done, 0.0, reward)  # copies that already finished are being auto-reset
        if observe is not None:
            observe(np.asarray(reward, dtype=np.float32))
        done |= np.asarray(terminated) | np.asarray(truncated)
    return returns


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(num_envs: int) -> int:
    """Worker processes for ``num_envs`` env copies: one per CPU, less two (the training loop and the
    evaluation's own thread), at most one per copy."""
    return max(1, min(num_envs, available_cpus() - 2))


def _shard_worker(conn, env_id: str, env_kwargs: dict, count: int, layout: Sequence[dict] | None,
                  policy_factory: Callable[[], Any] | None, inherited: Sequence[Any] = ()) -> None:
    """Worker process of :class:`ShardedVectorEnv`: steps ``count`` copies in a SyncVectorEnv and answers
    every command with ("ok", payload) or ("error", message). With a ``policy_factory`` it also runs whole
    episodes itself ("policy" loads the policies' state, "rollout" plays its copies to the end).
    ``inherited``: the parent's ends of earlier workers' pipes, which a forked child holds and closes (else
    those workers would not see their pipe close when the parent goes away)."""
    for other in inherited:
        other.close()
    envs = policies = None
    try:
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode

        envs = gym.vector.SyncVectorEnv([lambda: make_env(env_id, **env_kwargs) for _ in range(count)],
                                        autoreset_mode=AutoresetMode.NEXT_STEP)
        space = envs.single_action_space
        conn.send(("ok", (space.low, space.high)))
        while True:
            cmd, arg = conn.recv()
            if cmd == "reset":
                obs, _ = envs.reset(seed=arg)
                conn.send(("ok", flatten_observation(obs, layout, count)))
            elif cmd == "step":
                obs, reward, terminated, truncated, _ = envs.step(arg)
                conn.send(("ok", (flatten_observation(obs, layout, count), np.asarray(reward, dtype=np.float64),
                                  np.asarray(terminated, dtype=bool), np.asarray(truncated, dtype=bool))))
            elif cmd == "policy":
                if policies is None:
                    if policy_factory is None:
                        raise RuntimeError("this worker has no policy factory")
                    policies = policy_factory()
                policies.load(arg)
                conn.send(("ok", None))
            elif cmd == "rollout":
                seeds, rows = arg
                act = lambda obs, acting=policies, rows=rows: acting(obs, rows)  # noqa: E731
                returns = play_episodes(envs, seeds, act, space.low, space.high, layout)
                conn.send(("ok", returns))
            else:  # "close"
                return
    except (EOFError, KeyboardInterrupt, BrokenPipeError):  # the parent went away or was interrupted
        return
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except (BrokenPipeError, OSError):
            pass
    finally:
        if envs is not None:
            envs.close()
        conn.close()


class ShardedVectorEnv:
    """``num_envs`` copies of an environment stepped by ``workers`` processes, each holding a contiguous
    share of the copies in a SyncVectorEnv (next-step autoreset). One message per worker and step, where
    gymnasium's AsyncVectorEnv needs a process and a message per copy: 80 HalfCheetah copies (8 seeds x 10
    episodes) spend most of their time in inter-process messages there. Observations come back flattened
    (``layout`` for dict observations) as one float32 array [num_envs, obs_dim].

    With a ``policy_factory`` (a picklable callable, run in each worker, returning an object with
    ``load(state)`` and ``__call__(obs [N, obs], rows [N]) -> actions [N, act]``, ``rows`` saying whose
    policy acts in each copy), :meth:`rollout` plays whole episodes in the workers without a message per
    step: the evaluation of 8 seeds x 10 HalfCheetah episodes then costs the training process nothing but
    two messages per worker."""

    def __init__(self, env_id: str, num_envs: int, workers: int, *, env_kwargs: dict | None = None,
                 layout: Sequence[dict] | None = None, policy_factory: Callable[[], Any] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        counts = [len(c) for c in np.array_split(np.arange(num_envs), min(workers, num_envs))]
        self.num_envs = num_envs
        self.bounds = np.cumsum([0, *counts])
        self.broken = False
        # fork where there is one (as gymnasium's AsyncVectorEnv on Linux): spawn would re-import the caller's
        # main module, which breaks scripts without a __main__ guard. The workers never touch CUDA; CPU
        # policies (policy_factory) run torch on one thread there.
        fork = "fork" in mp.get_all_start_methods()
        ctx = mp.get_context("fork" if fork else "spawn")
        self.conns, self.procs = [], []
        try:
            for count in counts:
                parent, child = ctx.Pipe()
                inherited = list(self.conns) if fork else []
                proc = ctx.Process(target=_shard_worker, daemon=True,
                                   args=(child, env_id, dict(env_kwargs or {}), count, layout, policy_factory,
                                         inherited))
                proc.start()
                child.close()
                self.conns.append(parent)
                self.procs.append(proc)
            self.low, self.high = self._gather()[0]
        except BaseException:
            self.close()
            raise

    def _gather(self) -> list[Any]:
        out, errors = [], []
        for conn in self.conns:
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):
                status, payload = "error", "the worker process died"
            (out if status == "ok" else errors).append(payload)
        if errors:
            self.broken = True  # replies of this exchange may be left unread: no further commands
            raise RuntimeError(f"evaluation env worker failed: {errors[0]}")
        return out

    def _send(self, conn, message: Any = None, raw: bytes | None = None) -> None:
        if self.broken:
            raise RuntimeError("evaluation env worker failed earlier; these envs cannot be used any more")
        try:
            if raw is not None:
                conn.send_bytes(raw)
            else:
                conn.send(message)
        except OSError:  # BrokenPipeError, ConnectionResetError: the worker is gone
            self.broken = True
            raise RuntimeError("evaluation env worker failed: the worker process died") from None

    def _scatter(self, cmd: str, values) -> None:
        for i, conn in enumerate(self.conns):
            self._send(conn, (cmd, values[self.bounds[i]:self.bounds[i + 1]]))

    def reset(self, seed: Sequence[int]) -> tuple[np.ndarray, dict]:
        self._scatter("reset", list(seed))
        return np.concatenate(self._gather()), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        self._scatter("step", np.asarray(actions))
        parts = self._gather()
        obs, reward, terminated, truncated = (np.concatenate([p[k] for p in parts]) for k in range(4))
        return obs, reward, terminated, truncated, {}

    def rollout(self, state: Any, seeds: Sequence[int], rows: Sequence[int]) -> np.ndarray:
        """Load ``state`` into every worker's policies, play one episode in every copy (copy i starts from
        env seed ``seeds[i]`` and is driven by policy row ``rows[i]``); the undiscounted returns [num_envs]."""
        message = ForkingPickler.dumps(("policy", state))  # pickled once, sent to every worker
        for conn in self.conns:
            self._send(conn, raw=message)
        self._gather()
        for i, conn in enumerate(self.conns):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            self._send(conn, ("rollout", (list(seeds[lo:hi]), np.asarray(rows[lo:hi]))))
        return np.concatenate(self._gather())

    def close(self, timeout: float = 5.0) -> None:
        """Ask every worker to stop; those still busy after ``timeout`` seconds (all together, e.g. in a
        rollout) are terminated."""
        for conn in self.conns:
            try:
                conn.send(("close", None))
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for conn in self.conns:
            conn.close()
        self.conns, self.procs = [], []


class Evaluator:
    """Runs ``num_policies`` policies for ``episodes`` episodes each, in one vector env."""

    def __init__(self, env_id: str, num_policies: int, episodes: int, *,
                 layout: Sequence[dict] | None = None, seed_base: int = 0,
                 env_seeds: Sequence[Sequence[int]] | None = None, env_kwargs: dict | None = None,
                 asynchronous: bool = False, workers: int | None = None,
                 policy_factory: Callable[[], Any] | None = None) -> None:
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode

        if policy_factory is not None and not asynchronous:
            raise ValueError("a policy_factory runs the policies in worker processes: it needs asynchronous=True")
        kwargs = dict(env_kwargs or {})
        make_env(env_id, **kwargs).close()  # clear error for an unknown env before spawning copies
        self.env_id = env_id
        self.num_policies, self.episodes = num_policies, episodes
        self.layout = layout
        if env_seeds is None:
            env_seeds = [[seed_base + i for i in range(episodes)] for _ in range(num_policies)]
        if len(env_seeds) != num_policies or any(len(row) != episodes for row in env_seeds):
            raise ValueError(f"env_seeds must be [{num_policies}][{episodes}]")
        self.env_seeds = [int(s) for row in env_seeds for s in row]  # copy j * E + i
        self.policy_factory = policy_factory
        n = num_policies * episodes
        # Async: the copies sharded over worker processes, for slow simulators (HalfCheetah with 8 seeds
        # x 10 episodes is 80k env steps per evaluation); in this process otherwise.
        if asynchronous:
            self.envs = ShardedVectorEnv(env_id, n, workers or default_workers(n), env_kwargs=kwargs, layout=layout,
                                         policy_factory=policy_factory)
            self.low, self.high = self.envs.low, self.envs.high
        else:
            self.envs = gym.vector.SyncVectorEnv([lambda: make_env(env_id, **kwargs) for _ in range(n)],
                                                 autoreset_mode=AutoresetMode.NEXT_STEP)
            space = self.envs.single_action_space
            self.low, self.high = space.low, space.high

    def run(self, policy: Callable[[np.ndarray], np.ndarray],
            observe: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
        """``policy(obs [P, E, obs]) -> actions [P, E, act]``; returns undiscounted returns [P, E].
        ``observe(rewards [P, E])`` is called after every step (the Decision Transformer's returns-to-go)."""
        p, e = self.num_policies, self.episodes

        def act(flat: np.ndarray) -> np.ndarray:
            return np.asarray(policy(flat.reshape(p, e, -1)), dtype=np.float32).reshape(p * e, -1)

        seen = None if observe is None else (lambda rewards: observe(rewards.reshape(p, e)))
        return play_episodes(self.envs, self._env_seeds(), act, self.low, self.high, self.layout, seen).reshape(p, e)

    def _env_seeds(self) -> list[int]:
        """Env seed of every copy (policy j's episode i is copy j * E + i)."""
        return self.env_seeds

    def rollout(self, state: Any) -> np.ndarray:
        """The policies of ``state`` (loaded into each worker's ``policy_factory()`` object) played in the
        worker processes, ``episodes`` episodes each, from the same env seeds as :meth:`run`; returns [P, E]."""
        if self.policy_factory is None:
            raise ValueError("this evaluator has no policy_factory")
        p, e = self.num_policies, self.episodes
        rows = [j for j in range(p) for _ in range(e)]
        return self.envs.rollout(state, self._env_seeds(), rows).reshape(p, e)

    def close(self) -> None:
        self.envs.close()
