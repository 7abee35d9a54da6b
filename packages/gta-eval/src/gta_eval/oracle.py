"""The true dynamics f*(s, a) and reward of the simulator (GTA section 5.1, appendix D.1 and D.3).

Dynamic MSE (Eq. 11/14) and the oracle reward (D.3) query the environment with a stored state and
action. Gymnasium's MuJoCo envs have no "set state from observation", so the oracle rebuilds the
simulator state from the observation vector, steps the *unwrapped* env (no TimeLimit, no checker) and
returns the true next observation, reward and termination.

Facts of the gymnasium v5 environments this relies on (checked against gymnasium 1.x source):

* HalfCheetah/Hopper/Walker2d: observation = qpos[1:] ++ qvel (qpos[0], the x position, is excluded
  by default). The reward uses the x *displacement* over the step, so the physics and the reward are
  invariant to x and we set qpos[0] = 0. Ant: qpos[2:] ++ qvel (++ clipped cfrc_ext[1:] by default,
  105 dims; 27 without contact forces); x, y set to 0, its reward uses the torso xy displacement.
  The contact forces in an observation are outputs of the step, not state, so they are ignored on input.
  Which variant a store holds is inferred from its obs_dim (positions excluded or not, Ant contact forces
  in or out).
* Hopper and Walker2d clip qvel to +-10 *in the observation only*, so a state with a velocity at the clip
  bound cannot be reconstructed exactly (20-60% of the rows of medium datasets). The oracle steps it from
  the clipped velocity, as the authors' code does (their env clips qvel to +-10 when setting the state), and
  the paper's metrics average over every generated row (D.1, D.3), so these rows count (``valid``); they
  are flagged (``CLIPPED_STATE``) and :attr:`OracleBatch.exact` leaves them out, for metrics over the rows
  whose true next state and reward are known (leaving them out of one side only biases a comparison: the
  clipped rows are the fast ones, with higher rewards).
* Actions: v5 does not clip in Python. MuJoCo clamps ``ctrl`` to ``ctrlrange`` (all actuators are
  ctrllimited), while the control cost is computed on the raw action. The oracle passes the raw action,
  as the env would; out-of-range actions are counted (``ACTION_OUT_OF_RANGE``) but not excluded.
  HalfCheetah, Hopper and Walker2d rewards are reproduced to ~1e-6; Ant's forward reward differs by up
  to ~0.06 per step, because the live env measures the torso position from body positions one MuJoCo
  substep old, which a stored observation does not carry.
* MuJoCo warm-starts its constraint solver with the previous step's accelerations, which a stored
  transition does not carry; the oracle zeroes the warm start before every row so results do not depend
  on row order or chunking (the difference to a live episode is at the solver tolerance).
* PointMaze v3 (gymnasium-robotics): the point's qpos/qvel are ``observation``, the goal is
  ``desired_goal``; the flat store vector is split with the store's ``observation_layout``
  (``[{key, start, stop}, ...]``). The env clips the action to [-1, 1] and the velocity to +-5 itself.
  If the step resamples the goal (continuing task with reset_target), the next desired goal is random and
  the row is flagged ``GOAL_RESAMPLED``.

Parallelism: a pool of worker processes, each with its own env, fed contiguous chunks of rows
(``run_oracle``). Workers use the spawn context: MuJoCo and torch state is never forked.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gta_eval.errors import EvalError

# Per-row flag bits.
CLIPPED_STATE = 1  # a velocity sits at the observation clip bound: stepped from the clipped state
ACTION_OUT_OF_RANGE = 2  # informational: the env would have been stepped with it as given
NONFINITE = 4  # the simulation returned NaN/inf (e.g. a physically impossible state)
GOAL_RESAMPLED = 8  # PointMaze changed its goal during the step: next desired_goal is random
# Rows with any of these bits have no usable outcome: left out of every metric (OracleBatch.valid).
EXCLUDE_MASK = NONFINITE | GOAL_RESAMPLED
# ... and with these, no exactly known one (OracleBatch.exact).
INEXACT_MASK = EXCLUDE_MASK | CLIPPED_STATE
FLAG_NAMES = {
    CLIPPED_STATE: "clipped_state",
    ACTION_OUT_OF_RANGE: "action_out_of_range",
    NONFINITE: "nonfinite",
    GOAL_RESAMPLED: "goal_resampled",
}

# family -> (canonical v5 id, leading qpos entries the default observation excludes, qvel clip in obs)
_LOCOMOTION = {
    "halfcheetah": ("HalfCheetah-v5", 1, None),
    "hopper": ("Hopper-v5", 1, 10.0),
    "walker2d": ("Walker2d-v5", 1, 10.0),
    "ant": ("Ant-v5", 2, None),
}
_LOCOMOTION_ID = re.compile(r"^(HalfCheetah|Hopper|Walker2d|Ant)-v5$")
_POINTMAZE_ID = re.compile(r"^PointMaze_[A-Za-z_]+-v3$")


def supported_env(env_id: str) -> bool:
    return bool(_LOCOMOTION_ID.match(env_id) or _POINTMAZE_ID.match(env_id))


@dataclass(frozen=True)
class OracleSpec:
    """Everything a worker needs to build its oracle (picklable)."""

    env_id: str
    obs_dim: int
    act_dim: int
    layout: tuple[tuple[str, int, int], ...] | None = None  # PointMaze: (key, start, stop)
    env_kwargs: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def create(
        env_id: str,
        obs_dim: int,
        act_dim: int,
        layout: Sequence[Mapping[str, Any]] | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
    ) -> OracleSpec:
        if not supported_env(env_id):
            raise EvalError(
                f"no oracle for env {env_id!r} (supported: HalfCheetah-v5, Hopper-v5, Walker2d-v5, Ant-v5, "
                "PointMaze_*-v3)"
            )
        parsed = None
        if layout:
            parsed = []
            for entry in layout:
                key = entry.get("key", entry.get("name"))
                if key is None or "start" not in entry or "stop" not in entry:
                    raise EvalError(f"observation_layout entry {dict(entry)} lacks key/start/stop")
                parsed.append((str(key), int(entry["start"]), int(entry["stop"])))
            parsed = tuple(parsed)
        return OracleSpec(env_id, int(obs_dim), int(act_dim), parsed, tuple(sorted(dict(env_kwargs or {}).items())))


@dataclass
class OracleBatch:
    next_observations: np.ndarray  # [N, obs_dim] float64, what env.step returns
    rewards: np.ndarray  # [N] float64
    terminated: np.ndarray  # [N] bool
    flags: np.ndarray  # [N] uint8, bits above

    @property
    def valid(self) -> np.ndarray:
        """Rows with a usable outcome (clipped states included, stepped from the clipped velocity)."""
        return (self.flags & EXCLUDE_MASK) == 0

    @property
    def exact(self) -> np.ndarray:
        """Rows whose state the observation determines exactly (no velocity at the clip bound)."""
        return (self.flags & INEXACT_MASK) == 0

    @staticmethod
    def concatenate(parts: list[OracleBatch]) -> OracleBatch:
        return OracleBatch(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                             ("next_observations", "rewards", "terminated", "flags")))

    def flag_counts(self) -> dict[str, int]:
        return {name: int(np.count_nonzero(self.flags & bit)) for bit, name in FLAG_NAMES.items()}


def _make_env(env_id: str, **kwargs: Any):
    import gymnasium as gym

    from gta_data.simulators import quiet_mujoco, register_robotics_envs

    quiet_mujoco()  # no engine warnings on stderr, no MUJOCO_LOG.TXT in the working directory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if env_id.startswith("PointMaze"):
            register_robotics_envs()  # without the AdroitHand notice it prints on import
        try:
            return gym.make(env_id, **kwargs)
        except Exception as exc:  # gymnasium raises many types for bad ids/kwargs
            raise EvalError(f"cannot create {env_id} with {kwargs}: {exc}".splitlines()[0]) from None


class _LocomotionOracle:
    def __init__(self, spec: OracleSpec) -> None:
        family = spec.env_id.split("-")[0].lower()
        _, skip, self.qvel_clip = _LOCOMOTION[family]
        kwargs = dict(spec.env_kwargs)
        # Infer the observation variant from obs_dim unless the caller fixed it.
        variants = [{}]
        if "exclude_current_positions_from_observation" not in kwargs:
            variants = [{}, {"exclude_current_positions_from_observation": False}]
        if family == "ant" and "include_cfrc_ext_in_observation" not in kwargs:
            variants = [{**v, "include_cfrc_ext_in_observation": c} for v in variants for c in (True, False)]
        self.env = None
        for variant in variants:
            env = _make_env(spec.env_id, **kwargs, **variant)
            if env.observation_space.shape == (spec.obs_dim,):
                self.env = env
                break
            env.close()
        if self.env is None:
            raise EvalError(f"no variant of {spec.env_id} has {spec.obs_dim}-dim observations")
        if self.env.action_space.shape != (spec.act_dim,):
            raise EvalError(f"{spec.env_id} has {self.env.action_space.shape[0]} actions, store has {spec.act_dim}")
        self.env.reset(seed=0)
        self.u = self.env.unwrapped
        self.nq, self.nv = self.u.model.nq, self.u.model.nv
        self.skip = skip if self.u._exclude_current_positions_from_observation else 0
        self.low, self.high = self.env.action_space.low, self.env.action_space.high

    def clipped(self, obs: np.ndarray) -> np.ndarray:
        """[N] bool: rows with a velocity at the observation's clip bound (float32 holds 10.0 exactly, so a
        clipped entry reads back as exactly +-10)."""
        if self.qvel_clip is None:
            return np.zeros(len(obs), dtype=bool)
        npos = self.nq - self.skip
        return np.any(np.abs(obs[:, npos : npos + self.nv]) >= self.qvel_clip, axis=1)

    def step(self, obs: np.ndarray, act: np.ndarray) -> OracleBatch:
        n = len(obs)
        out = np.zeros((n, obs.shape[1]), dtype=np.float64)
        rew = np.zeros(n, dtype=np.float64)
        term = np.zeros(n, dtype=bool)
        flags = np.zeros(n, dtype=np.uint8)
        npos = self.nq - self.skip
        qvel_obs = obs[:, npos : npos + self.nv]
        flags[self.clipped(obs)] |= CLIPPED_STATE
        flags[np.any((act < self.low) | (act > self.high), axis=1)] |= ACTION_OUT_OF_RANGE
        qpos = np.zeros(self.nq, dtype=np.float64)
        data = self.u.data
        for i in range(n):
            qpos[self.skip :] = obs[i, :npos]
            data.qacc_warmstart[:] = 0.0
            self.u.set_state(qpos, qvel_obs[i].astype(np.float64))
            with np.errstate(all="ignore"):
                nobs, r, terminated, _, _ = self.u.step(act[i].astype(np.float64))
            out[i], rew[i], term[i] = nobs, r, terminated
        flags[~(np.isfinite(out).all(axis=1) & np.isfinite(rew))] |= NONFINITE
        return OracleBatch(out, rew, term, flags)


class _PointMazeOracle:
    def __init__(self, spec: OracleSpec) -> None:
        layout = spec.layout
        if layout is None and spec.obs_dim == 6:
            # gta-data's Minari import default: observation ++ desired_goal.
            layout = (("observation", 0, 4), ("desired_goal", 4, 6))
        if layout is None:
            raise EvalError(
                f"{spec.env_id} store of obs_dim {spec.obs_dim} has no observation_layout "
                "(need the slices of 'observation' and 'desired_goal')"
            )
        self.slices = {key: slice(a, b) for key, a, b in layout}
        for key, width in (("observation", 4), ("desired_goal", 2)):
            if key not in self.slices:
                raise EvalError(f"observation_layout lacks {key!r}: the oracle needs the point state and the goal")
            s = self.slices[key]
            if s.stop - s.start != width:
                raise EvalError(f"observation_layout {key!r} has width {s.stop - s.start}, expected {width}")
        if max(s.stop for s in self.slices.values()) != spec.obs_dim:
            raise EvalError(f"observation_layout does not cover obs_dim {spec.obs_dim}")
        self.env = _make_env(spec.env_id, **dict(spec.env_kwargs))
        if self.env.action_space.shape != (spec.act_dim,):
            raise EvalError(f"{spec.env_id} has {self.env.action_space.shape[0]} actions, store has {spec.act_dim}")
        self.env.reset(seed=0)
        self.u = self.env.unwrapped
        self.low, self.high = self.env.action_space.low, self.env.action_space.high

    def clipped(self, obs: np.ndarray) -> np.ndarray:
        """PointMaze observations are not clipped (the env clips the velocity in the state itself)."""
        return np.zeros(len(obs), dtype=bool)

    def step(self, obs: np.ndarray, act: np.ndarray) -> OracleBatch:
        n = len(obs)
        out = np.zeros((n, obs.shape[1]), dtype=np.float64)
        rew = np.zeros(n, dtype=np.float64)
        term = np.zeros(n, dtype=bool)
        flags = np.zeros(n, dtype=np.uint8)
        flags[np.any((act < self.low) | (act > self.high), axis=1)] |= ACTION_OUT_OF_RANGE
        point = self.u.point_env
        for i in range(n):
            state = obs[i, self.slices["observation"]].astype(np.float64)
            goal = obs[i, self.slices["desired_goal"]].astype(np.float64)
            point.data.qacc_warmstart[:] = 0.0
            point.set_state(state[:2], state[2:])
            self.u.goal = goal.copy()
            nobs, r, terminated, _, _ = self.u.step(act[i].astype(np.float64))
            if not np.array_equal(self.u.goal, goal):
                flags[i] |= GOAL_RESAMPLED
            for key, s in self.slices.items():
                if key in nobs:
                    out[i, s] = nobs[key]
            rew[i], term[i] = r, terminated
        flags[~(np.isfinite(out).all(axis=1) & np.isfinite(rew))] |= NONFINITE
        return OracleBatch(out, rew, term, flags)


def make_oracle(spec: OracleSpec):
    """An in-process oracle with ``.step(obs [N, obs_dim], act [N, act_dim]) -> OracleBatch``."""
    if _POINTMAZE_ID.match(spec.env_id):
        return _PointMazeOracle(spec)
    return _LocomotionOracle(spec)


def clipped_states(spec: OracleSpec, observations: np.ndarray) -> np.ndarray:
    """[N] bool: the rows of ``observations`` whose state the oracle cannot reconstruct exactly (a velocity at
    the observation clip bound), e.g. to take a baseline over the same kind of rows as ``OracleBatch.exact``."""
    oracle = make_oracle(spec)
    try:
        return oracle.clipped(np.asarray(observations, dtype=np.float32))
    finally:
        oracle.env.close()


_WORKER: Any = None


def _init_worker(spec: OracleSpec) -> None:
    global _WORKER
    _WORKER = make_oracle(spec)


def _work(args: tuple[np.ndarray, np.ndarray]) -> OracleBatch:
    return _WORKER.step(*args)


def run_oracle(
    spec: OracleSpec,
    observations: np.ndarray,
    actions: np.ndarray,
    *,
    workers: int = 1,
    chunk_size: int = 2048,
    progress: Callable[[int], None] | None = None,
) -> OracleBatch:
    """Step the true environment from every (s, a) row; ``workers`` processes each hold one env.
    ``progress(n_rows_done)`` is called after every chunk."""
    observations = np.asarray(observations, dtype=np.float32)
    actions = np.asarray(actions, dtype=np.float32)
    if observations.ndim != 2 or observations.shape[1] != spec.obs_dim:
        raise EvalError(f"observations have shape {observations.shape}, oracle expects [N, {spec.obs_dim}]")
    if actions.shape != (len(observations), spec.act_dim):
        raise EvalError(f"actions have shape {actions.shape}, oracle expects [{len(observations)}, {spec.act_dim}]")
    if workers < 1 or chunk_size < 1:
        raise EvalError("workers and chunk_size must be >= 1")
    n = len(observations)
    if n == 0:
        return OracleBatch(np.zeros((0, spec.obs_dim)), np.zeros(0), np.zeros(0, bool), np.zeros(0, np.uint8))
    chunks = [(observations[a : a + chunk_size], actions[a : a + chunk_size]) for a in range(0, n, chunk_size)]
    parts: list[OracleBatch] = []
    if workers == 1 or len(chunks) == 1:
        oracle = make_oracle(spec)
        for chunk in chunks:
            parts.append(oracle.step(*chunk))
            if progress:
                progress(len(parts[-1].rewards))
        oracle.env.close()
    else:
        import multiprocessing as mp

        make_oracle(spec).env.close()  # fail fast here with a clear error, not inside a worker
        with mp.get_context("spawn").Pool(min(workers, len(chunks)), _init_worker, (spec,)) as pool:
            for part in pool.imap(_work, chunks):
                parts.append(part)
                if progress:
                    progress(len(part.rewards))
    return OracleBatch.concatenate(parts)
