"""What gta-data's locomotion recipes take from a SAC run: D4RL's choice of the "medium" and "expert" actors
(:func:`pick_checkpoints`), those actors as gta-data's numpy policy file (:func:`export_policy_file`), and the
first K transitions of the buffer (D4RL's medium-replay) as gta-data's replay file of initial states and actions
(:func:`export_replay_file`) or as a trajectory store (:func:`export_replay`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from gta_data.jsonl import read_jsonl
from gta_rl.behaviour.config import CHECKPOINTS, CONFIG, STATE, SACError
from gta_rl.behaviour.replay import BUFFER_KEYS
from gta_rl.checkpoint import load_checkpoint


def read_checkpoints(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's actor checkpoints: [{step, eval_return, eval_return_std, path}, ...] by step."""
    path = Path(run_dir) / CHECKPOINTS
    if not path.exists():
        raise SACError(f"{run_dir} is not a SAC run directory (no {CHECKPOINTS})")
    return read_jsonl(path)


def pick_checkpoints(checkpoints: list[dict[str, Any]], fraction: float = 1.0 / 3.0,
                     medium_return: float | None = None) -> dict[str, dict[str, Any]]:
    """D4RL's choice: "expert" = the best-evaluated checkpoint (the later one on ties); "medium" = the
    checkpoint before it whose return is closest to ``fraction`` of the expert's (the earlier on ties), or
    to ``medium_return`` when given (e.g. the mean return of D4RL's own medium dataset)."""
    if not checkpoints:
        raise SACError("the run has no checkpoints")
    expert = max(reversed(checkpoints), key=lambda c: c["eval_return"])
    target = fraction * expert["eval_return"] if medium_return is None else medium_return
    before = [c for c in checkpoints if c["step"] <= expert["step"]]
    medium = min(before, key=lambda c: abs(c["eval_return"] - target))
    return {"medium": medium, "expert": expert}


def export_policy_file(run_dir: str | Path, path: str | Path, picks: dict[str, dict[str, Any]]):
    """Write gta-data's numpy policy file with the actors of ``picks`` ({name: checkpoint record})."""
    from gta_data.policies import NumpyActor, save_policy_file

    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / CONFIG).read_text())
    state, _ = load_checkpoint(run_dir / STATE, keys=("model.scale", "model.bias"))  # not the buffer
    scale, bias = state["model.scale"].numpy(), state["model.bias"].numpy()
    low, high = bias - scale, bias + scale
    actors = {}
    for name, record in picks.items():
        tensors, meta = load_checkpoint(run_dir / record["path"])
        n = len(tensors) // 2
        weights = [(tensors[f"w{i}"].numpy(), tensors[f"b{i}"].numpy()) for i in range(n)]
        info = {k: meta[k] for k in ("step", "eval_return", "eval_return_std")}
        actors[name] = NumpyActor(weights, cfg["log_std_min"], cfg["log_std_max"], low, high, info)
    prov = {"algorithm": "SAC (gta_rl.sac)", "config": cfg}
    return save_policy_file(path, cfg["env_id"], actors, provenance=prov)


def _episode_rows(state: dict[str, Tensor], upto_step: int) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
    """Buffer columns up to ``upto_step`` and the row indices of each episode, in the order their first
    transition was collected. Rows of one env copy are consecutive episodes split at terminations and
    timeouts."""
    rows = {k: state[f"buffer.{k}"][:upto_step].numpy() for k in BUFFER_KEYS}
    ends = rows["term"].astype(bool) | rows["trunc"]
    episodes = []
    for env in np.unique(rows["env"]):
        idx = np.flatnonzero(rows["env"] == env)
        cuts = np.flatnonzero(ends[idx]) + 1
        episodes.extend(part for part in np.split(idx, cuts) if len(part))
    episodes.sort(key=lambda part: part[0])
    return rows, episodes


def _load_state_upto(run_dir: str | Path, upto_step: int) -> dict[str, Tensor]:
    state, _ = load_checkpoint(Path(run_dir) / STATE)
    size = int(state["buffer.rew"].shape[0])
    if not 0 < upto_step <= size:
        raise SACError(f"upto_step must be in [1, {size}] (transitions in the buffer), got {upto_step}")
    return state


def replay_episodes(run_dir: str | Path, upto_step: int):
    """The first ``upto_step`` transitions of the run's buffer as episodes (Transitions), in the order
    their first transition was collected; an episode still running at ``upto_step`` ends in a timeout."""
    from gta_data import Transitions

    rows, episodes = _episode_rows(_load_state_upto(run_dir, upto_step), upto_step)
    for part in episodes:
        terminals = rows["term"][part].astype(bool)
        timeouts = rows["trunc"][part].copy()
        timeouts[-1] = not terminals[-1]
        yield Transitions(observations=rows["obs"][part], actions=rows["act"][part], rewards=rows["rew"][part],
                          next_observations=rows["next_obs"][part], terminals=terminals, timeouts=timeouts)


def export_replay_file(run_dir: str | Path, out: str | Path, upto_step: int):
    """Write the first ``upto_step`` transitions of the run (D4RL's medium-replay) as gta-data's replay file:
    each episode's initial simulator state and its actions, from which gta-data re-simulates the
    transitions (``gta_data.replay``), plus each episode's recorded return and last observation to check
    that re-simulation."""
    from gta_data.replay import ReplayFile, save_replay_file

    cfg = json.loads((Path(run_dir) / CONFIG).read_text())
    state = _load_state_upto(run_dir, upto_step)
    if "episodes.start_rows" not in state:
        raise SACError(f"the run in {run_dir} recorded no initial states (not a MuJoCo env?): export_replay "
                       "writes its transitions as a store instead")
    start_of = {int(r): i for i, r in enumerate(state["episodes.start_rows"].tolist())}
    start_states = state["episodes.start_states"].double().numpy()
    rows, episodes = _episode_rows(state, upto_step)
    missing = [int(part[0]) for part in episodes if int(part[0]) not in start_of]
    if missing:
        raise SACError(f"no initial state recorded for the episodes starting at rows {missing[:5]}")
    order = np.concatenate(episodes)
    replay = ReplayFile(
        env_id=cfg["env_id"],
        starts=np.stack([start_states[start_of[int(part[0])]] for part in episodes]),
        lengths=np.asarray([len(part) for part in episodes], dtype=np.int64),
        terminal=np.asarray([bool(rows["term"][part[-1]]) for part in episodes]),
        actions=rows["act"][order],
        returns=np.asarray([rows["rew"][part].astype(np.float64).sum() for part in episodes]),
        last_obs=np.stack([rows["next_obs"][part[-1]] for part in episodes]),
        provenance={"source": "sac replay buffer", "upto_step": upto_step, "sac_config": cfg},
    )
    return save_replay_file(out, replay)


def export_replay(run_dir: str | Path, out: str | Path, upto_step: int, *, overwrite: bool = False):
    """Write the first ``upto_step`` transitions of the run (what the agent had seen when it reached the
    medium checkpoint: D4RL's medium-replay) as a trajectory store with D4RL reference scores."""
    from gta_data import StoreWriter, TrajectoryStore
    from gta_data.scores import D4RL_REFERENCE_SCORES, env_family

    cfg = json.loads((Path(run_dir) / CONFIG).read_text())
    family = env_family(cfg["env_id"])
    lo, hi = D4RL_REFERENCE_SCORES.get(family, (None, None)) if family else (None, None)
    episodes = replay_episodes(run_dir, upto_step)
    first = next(episodes)
    prov = {"source": "sac replay buffer", "upto_step": upto_step, "sac_config": cfg}
    with StoreWriter(out, env_id=cfg["env_id"], obs_dim=first.obs_dim, act_dim=first.act_dim,
                     ref_min_score=lo, ref_max_score=hi, provenance=prov, overwrite=overwrite) as writer:
        writer.add_episode(first)
        for episode in episodes:
            writer.add_episode(episode)
    return TrajectoryStore.open(out)
