"""Replay files: D4RL's medium-replay data kept as actions and initial simulator states, re-simulated.

D4RL's ``medium-replay`` is every transition the SAC agent saw until its policy reached "medium"
(docs/datasets.md). Storing those transitions verbatim costs ~100 bytes each (tens of MB per env); but
a MuJoCo locomotion episode is a deterministic function of its initial state (qpos, qvel) and its
actions. A replay file therefore keeps, per episode, the full initial state (float64, as the simulator
held it) and the exact float32 actions the agent sent, plus what is needed to check the re-simulation
(each episode's recorded return, last observation, and whether it ended by termination). Re-simulating
on another machine gives the original transitions as long as MuJoCo computes bit-identically there; the
recipe measures and records any deviation (:class:`ReplayCheck`), so a dataset never silently differs
from the run it comes from.

File layout (``save_replay_file`` / ``load_replay_file``; one ``.npz``, no pickle)::

    __meta__      0-d str   JSON: format, version, env_id, obs_dim, act_dim, state_dim, episodes,
                            transitions, provenance
    starts        float64   [E, nq + nv]  initial (qpos, qvel) of each episode
    lengths       int64     [E]           transitions of each episode
    terminal      bool      [E]           the episode's last transition terminated (else timeout or cut)
    actions       float32   [N, act]      every action, episodes concatenated in order
    returns       float64   [E]           recorded sum of rewards of each episode
    last_obs      float32   [E, obs]      recorded next-observation of each episode's last transition
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gta_data.npzfile import read_npz, write_npz
from gta_data.store import Transitions

FORMAT = "gta-replay-actions"
VERSION = 1
_ARRAYS = ("starts", "lengths", "terminal", "actions", "returns", "last_obs")


class ReplayError(ValueError):
    """A malformed replay file, or one that does not fit its environment (one-line message)."""


@dataclass
class ReplayFile:
    env_id: str
    starts: np.ndarray  # [E, state] float64
    lengths: np.ndarray  # [E] int64
    terminal: np.ndarray  # [E] bool
    actions: np.ndarray  # [N, act] float32
    returns: np.ndarray  # [E] float64
    last_obs: np.ndarray  # [E, obs] float32
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_transitions(self) -> int:
        return int(self.lengths.sum())

    def check(self) -> None:
        e = self.lengths.shape[0]
        if e == 0 or self.lengths.ndim != 1 or (self.lengths < 1).any():
            raise ReplayError("a replay file needs at least one episode and positive episode lengths")
        if self.starts.ndim != 2 or self.starts.shape[0] != e or self.terminal.shape != (e,) \
                or self.returns.shape != (e,) or self.last_obs.ndim != 2 or self.last_obs.shape[0] != e:
            raise ReplayError(f"per-episode arrays disagree with {e} episodes")
        if self.actions.ndim != 2 or self.actions.shape[0] != int(self.lengths.sum()):
            raise ReplayError(f"{self.actions.shape[0]} actions for {int(self.lengths.sum())} transitions")


def save_replay_file(path: str | os.PathLike, replay: ReplayFile) -> Path:
    """Write ``replay`` atomically (a hidden temporary sibling renamed into place)."""
    replay.check()
    arrays = {
        "starts": np.ascontiguousarray(replay.starts, dtype=np.float64),
        "lengths": np.ascontiguousarray(replay.lengths, dtype=np.int64),
        "terminal": np.ascontiguousarray(replay.terminal, dtype=bool),
        "actions": np.ascontiguousarray(replay.actions, dtype=np.float32),
        "returns": np.ascontiguousarray(replay.returns, dtype=np.float64),
        "last_obs": np.ascontiguousarray(replay.last_obs, dtype=np.float32),
    }
    meta = {"format": FORMAT, "version": VERSION, "env_id": replay.env_id,
            "obs_dim": int(replay.last_obs.shape[1]), "act_dim": int(replay.actions.shape[1]),
            "state_dim": int(replay.starts.shape[1]), "episodes": replay.num_episodes,
            "transitions": replay.num_transitions, "provenance": replay.provenance}
    return write_npz(path, arrays, meta)


def load_replay_file(path: str | os.PathLike) -> ReplayFile:
    path = Path(path)
    arrays, meta = read_npz(path, name="replay file", kind="replay file", fmt=FORMAT, version=VERSION,
                            error=ReplayError)
    missing = [k for k in _ARRAYS if k not in arrays] + [k for k in ("env_id",) if not isinstance(meta.get(k), str)]
    if missing:
        raise ReplayError(f"{path} lacks {', '.join(missing)}")
    replay = ReplayFile(meta["env_id"], *(arrays[k] for k in _ARRAYS), provenance=meta.get("provenance", {}))
    try:
        replay.check()
    except ReplayError as exc:
        raise ReplayError(f"{path}: {exc}") from None
    return replay


@dataclass
class ReplayCheck:
    """How far the re-simulation is from the recorded run (all zero when MuJoCo is bit-identical)."""

    episodes: int = 0
    transitions: int = 0
    max_return_error: float = 0.0  # max |re-simulated - recorded| episode return
    max_last_obs_error: float = 0.0  # max abs difference of the episodes' last observations
    ending_mismatches: int = 0  # episodes whose termination was not reproduced at the same step


def resimulate(env, replay: ReplayFile, size: int | None = None,
               check: ReplayCheck | None = None) -> Iterator[Transitions]:
    """Replay the recorded actions from the recorded initial states in ``env`` (a gymnasium MuJoCo env of
    ``replay.env_id``); yields one Transitions per episode, at most ``size`` transitions in all (an
    episode cut by ``size`` ends in a timeout). An episode ends where the recording ended it; should the
    simulator terminate earlier, the episode ends there (a terminal) and ``check`` counts the mismatch.
    The env is closed when the episodes are exhausted."""
    check_fits(env, replay)
    return _resimulate(env, replay, size, check if check is not None else ReplayCheck())


def check_fits(env, replay: ReplayFile) -> None:
    """Raise ReplayError unless ``env`` is a MuJoCo env with the replay's state and action sizes."""
    base = env.unwrapped
    if not hasattr(base, "set_state") or not hasattr(base, "model"):
        raise ReplayError(f"{replay.env_id} is not a MuJoCo environment: replay files need set_state")
    nq, nv = int(base.model.nq), int(base.model.nv)
    if replay.starts.shape[1] != nq + nv:
        raise ReplayError(f"replay states have {replay.starts.shape[1]} numbers, {replay.env_id} needs {nq + nv}")
    if replay.actions.shape[1] != int(np.prod(env.action_space.shape)):
        raise ReplayError(f"replay actions have {replay.actions.shape[1]} dims, {replay.env_id} needs "
                          f"{int(np.prod(env.action_space.shape))}")


def _resimulate(env, replay: ReplayFile, size: int | None, check: ReplayCheck) -> Iterator[Transitions]:
    try:
        yield from _episodes(env, replay, size, check)
    finally:
        env.close()


def _episodes(env, replay: ReplayFile, size: int | None, check: ReplayCheck) -> Iterator[Transitions]:
    base = env.unwrapped
    nq = int(base.model.nq)
    left = replay.num_transitions if size is None else int(size)
    offsets = np.concatenate([[0], np.cumsum(replay.lengths)])
    for e in range(replay.num_episodes):
        if left <= 0:
            return
        env.reset(seed=e)  # resets the wrappers (time limit, order checks); the state is then replaced
        base.set_state(replay.starts[e, :nq], replay.starts[e, nq:])
        obs = np.asarray(base._get_obs(), dtype=np.float32).reshape(-1)
        length = min(int(replay.lengths[e]), left)
        rows: dict[str, list] = {k: [] for k in ("o", "a", "r", "no", "term", "trunc")}
        for t in range(length):
            action = replay.actions[offsets[e] + t]
            next_obs, reward, terminated, truncated, _ = env.step(action)
            next_obs = np.asarray(next_obs, dtype=np.float32).reshape(-1)
            last = t == length - 1
            recorded_end = last and length == replay.lengths[e]
            end_here = bool(terminated) or last
            if bool(terminated) != (recorded_end and bool(replay.terminal[e])):
                check.ending_mismatches += 1
            for key, value in zip(rows, (obs, action, reward, next_obs, bool(terminated),  # noqa: B905
                                         end_here and not bool(terminated))):
                rows[key].append(value)
            obs = next_obs
            if end_here:
                break
        n = len(rows["r"])
        # Summed as the exporter summed the run's buffer (float32 rewards, numpy's float64 sum).
        total = float(np.asarray(rows["r"], dtype=np.float32).astype(np.float64).sum())
        check.episodes += 1
        check.transitions += n
        if n == replay.lengths[e]:
            check.max_return_error = max(check.max_return_error, abs(total - float(replay.returns[e])))
            check.max_last_obs_error = max(check.max_last_obs_error,
                                           float(np.abs(obs - replay.last_obs[e]).max()))
        left -= n
        yield Transitions(observations=np.stack(rows["o"]), actions=np.stack(rows["a"]).astype(np.float32),
                          rewards=np.asarray(rows["r"], dtype=np.float32), next_observations=np.stack(rows["no"]),
                          terminals=np.asarray(rows["term"], dtype=bool), timeouts=np.asarray(rows["trunc"], dtype=bool))
