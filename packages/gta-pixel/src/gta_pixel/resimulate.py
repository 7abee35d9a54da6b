"""Medium-replay pixel data: a SAC run's replay buffer, re-simulated from its actions and re-rendered.

V-D4RL's ``medium_replay`` (D4RL's ``medium-replay``) is every transition the behaviour agent saw until it
reached the medium checkpoint. Storing those frames is hundreds of MB; but an episode of a deterministic
simulator is a function of its start state and its actions. gta-data's replay file (:mod:`gta_data.replay`,
written from a ``gta-rl sac`` run by :func:`gta_rl.behaviour.export_replay_file`) keeps exactly that: per
episode the simulator state it started from, the float32 actions the agent sent, and, to check the
re-simulation, the recorded return and last observation. Here each episode restarts the pixel task from
its recorded state (``task.reset_to_state``: the dm_control tasks restore MuJoCo's whole integration state,
gymnasium's MuJoCo tasks qpos and qvel, as gta-data does), replays the actions and renders every frame.

The recorded actions are in the action box of the run's environment; they are passed to the pixel task
unchanged, which is right for the state environments of :mod:`gta_pixel.gym_envs` and gymnasium's
locomotion tasks (both [-1, 1], the pixel tasks' own range) and refused for any other box.

An episode ends where the recording ended it (a time limit, or the run's row K for the episode still running
then); should the simulator terminate or truncate it earlier, it ends there and :class:`ResimCheck` counts
the mismatch. The check's figures (all zero when the simulator reproduces the run bit for bit) go to the
store's provenance, so a dataset never silently differs from the run it comes from.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gta_pixel.behaviour import default_replay_file, file_sha256, load_behaviour_file, task_name
from gta_pixel.errors import GenerateError


@dataclass
class ResimCheck:
    """How far the re-simulation is from the recorded run (gta-data's ``ReplayCheck`` figures)."""

    episodes: int = 0
    transitions: int = 0
    max_return_error: float = 0.0  # max |re-simulated - recorded| return of the episodes replayed in full
    max_last_obs_error: float = 0.0  # max abs difference of those episodes' last observations
    ending_mismatches: int = 0  # episodes that did not end as recorded (earlier, or terminated differently)

    def add(self, rewards: np.ndarray, last_state: np.ndarray, length: int, terminated: bool,
            recorded_return: float, recorded_last_obs: np.ndarray, recorded_length: int,
            recorded_terminal: bool) -> None:
        """Account for one re-simulated episode of ``length`` steps."""
        self.episodes += 1
        self.transitions += int(length)
        if length != recorded_length or bool(terminated) != bool(recorded_terminal):
            self.ending_mismatches += 1
        if length == recorded_length:
            # Summed as the exporter summed the run's buffer: float32 rewards, a float64 sum.
            total = float(np.asarray(rewards, dtype=np.float32).astype(np.float64).sum())
            self.max_return_error = max(self.max_return_error, abs(total - float(recorded_return)))
            diff = np.abs(np.asarray(last_state, np.float32) - np.asarray(recorded_last_obs, np.float32))
            self.max_last_obs_error = max(self.max_last_obs_error, float(diff.max()) if diff.size else 0.0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_replay(spec: dict[str, Any], replay_file: str | os.PathLike | None, task) -> tuple[Any, dict[str, Any]]:
    """The replay file of ``spec`` (gta-data's ReplayFile) checked against the pixel ``task``, and the
    provenance it gives the store; one-line errors for what is missing or does not fit."""
    from gta_data.replay import ReplayError, load_replay_file

    name = task_name(spec)
    path = Path(replay_file) if replay_file is not None else default_replay_file(spec)
    how = (f"export one from a `gta-rl sac --env gta_pixel.gym_envs:gta_pixel/{name}-v0` run with "
           "tools/train_pixel_behaviour.py" if spec.get("kind") == "dmc"
           else "make it as gta-data's behaviour policies are made")
    replay = load_behaviour_file(path, load_replay_file, ReplayError, spec, needed_by="medium-replay", kind="replay",
                                 holds="data of", how=how, option="--replay-file")
    if not hasattr(task, "reset_to_state"):
        raise GenerateError(f"{name} cannot restart from a recorded state: no medium-replay data for it")
    state_size = int(np.asarray(task.simulator_state()).size)
    if replay.starts.shape[1] != state_size:
        raise GenerateError(f"{path}: its start states have {replay.starts.shape[1]} numbers, {name} has "
                            f"{state_size} (another simulator version or task?)")
    if replay.actions.shape[1] != task.act_dim:
        raise GenerateError(f"{path}: its actions have {replay.actions.shape[1]} dims, {name} has {task.act_dim}")
    if replay.last_obs.shape[1] != task.state_dim:
        raise GenerateError(f"{path}: its observations have {replay.last_obs.shape[1]} dims, {name} has "
                            f"{task.state_dim}")
    if not np.isfinite(replay.actions).all() or np.abs(replay.actions).max() > 1.0:
        raise GenerateError(f"{path}: its actions leave [-1, 1] (only runs in a [-1, 1] action box re-simulate)")
    return replay, {"policy": "SAC replay buffer up to the medium checkpoint (re-simulated)",
                    "replay_file": str(path), "replay_sha256": file_sha256(path),
                    "replay_provenance": replay.provenance}


def replay_episode(task, start: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray, bool]:
    """Restart ``task`` from ``start`` and apply ``actions`` [L, A] in order, rendering every frame; stops early
    where the task terminates or truncates. Returns frames [n + 1, 3, H, W], states [n + 1, state_dim], the n
    actions applied, their rewards, and whether the last step terminated."""
    state, frame = task.reset_to_state(start)
    frames, states, rewards = [frame], [state], []
    terminated = truncated = False
    for action in actions:
        state, frame, reward, terminated, truncated = task.step(np.asarray(action, dtype=np.float32))
        frames.append(frame)
        states.append(state)
        rewards.append(reward)
        if terminated or truncated:
            break
    n = len(rewards)
    return (np.stack(frames), np.stack(states).astype(np.float32), np.asarray(actions[:n], dtype=np.float32),
            np.asarray(rewards, dtype=np.float32), bool(terminated))
