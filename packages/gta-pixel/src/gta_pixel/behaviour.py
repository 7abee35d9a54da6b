"""Where the behaviour files of the pixel datasets live, and what they are made from.

The medium and expert data of a dm_control task come from ``<pixel policy dir>/<domain>_<task>.npz``
(gta-data's numpy policy file: SAC actors named "medium" and "expert"), its medium-replay data from
``<domain>_<task>-medium-replay.npz`` beside it (gta-data's replay file: start states and actions). Both are
exported from a ``gta-rl sac`` run on the task's state environment (:mod:`gta_pixel.gym_envs`) by
:func:`export_behaviour`, as gta-data's locomotion files are exported from its runs: the expert is the
best-evaluated checkpoint, the medium the checkpoint up to it whose evaluation return is closest to a target
return (V-D4RL's "medium-level" policy), and medium-replay the first K transitions of the run, K = the medium
checkpoint's step (what the agent had seen when it got there). gymnasium tasks use gta-data's locomotion files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from gta_pixel.errors import GenerateError


def pixel_policy_dir() -> Path:
    """Where the dm_control behaviour policy files live: $GTA_PIXEL_POLICY_DIR, else ``packages/gta-pixel/
    policies`` of the source checkout (repository data, not package data)."""
    env = os.environ.get("GTA_PIXEL_POLICY_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "policies"


def task_name(spec: dict[str, Any]) -> str:
    """A short name of a task spec: ``walker_walk``, ``gym:Walker2d-v5`` or ``fake``."""
    if spec.get("kind") == "dmc":
        return f"{spec['domain']}_{spec['task']}"
    if spec.get("kind") == "gym":
        return f"gym:{spec['env_id']}"
    return str(spec.get("kind"))


def default_policy_file(spec: dict[str, Any]) -> Path:
    """The policy file a task's medium and expert data come from (see the module docstring)."""
    if spec.get("kind") == "dmc":
        return pixel_policy_dir() / f"{spec['domain']}_{spec['task']}.npz"
    if spec.get("kind") == "gym":
        from gta_data.policies import policy_dir
        from gta_data.recipes.locomotion import ENVS

        family = {env: fam for fam, env in ENVS.items()}.get(spec["env_id"])
        if family is not None:
            return policy_dir() / f"{family}.npz"
        return policy_dir() / f"{spec['env_id']}.npz"
    return pixel_policy_dir() / f"{task_name(spec)}.npz"


def env_matches(file_env: str, spec: dict[str, Any]) -> bool:
    """Whether a policy or replay file's env id (plain or gymnasium's ``module:id``) is the task of ``spec``."""
    if spec.get("kind") == "dmc":  # the state env's id, plain or in gymnasium's module:id form
        return file_env.rpartition(":")[2] == f"gta_pixel/{spec['domain']}_{spec['task']}-v0"
    if spec.get("kind") == "gym":
        return file_env.rpartition(":")[2] == spec["env_id"]
    return True  # fake tasks take any file of the right dimensions (tests)


def file_sha256(path: Path) -> str:
    """The sha256 of a file (stores record the behaviour files they were made from)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_replay_file(spec: dict[str, Any]) -> Path:
    """The replay file of a task's medium-replay data, beside its policy file: ``<domain>_<task>-medium-replay.npz``
    for dm_control, gta-data's ``<family>-medium-replay.npz`` for gymnasium's locomotion tasks."""
    policy = default_policy_file(spec)
    return policy.with_name(f"{policy.stem}-medium-replay.npz")


def export_behaviour(run_dir: str | os.PathLike, task: str, out_dir: str | os.PathLike, *,
                     medium_return: float | None = None, expert: bool = True,
                     medium_replay: bool = True) -> dict[str, Any]:
    """Export a ``gta-rl sac`` run of the state env ``gta_pixel/<task>-v0`` into ``out_dir``: the policy file
    ``<task>.npz`` ("medium": the checkpoint up to the best one whose evaluation return is closest to
    ``medium_return``, a third of the best's when None; "expert": the best, left out with ``expert=False``,
    e.g. for a run stopped before it converged) and the replay file ``<task>-medium-replay.npz`` of the run's
    first K transitions, K = the medium checkpoint's step. Returns what was picked and written."""
    from gta_rl.behaviour import (
        SACError,
        export_policy_file,
        export_replay_file,
        pick_checkpoints,
        read_checkpoints,
    )

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    try:
        checkpoints = read_checkpoints(run_dir)
        picks = pick_checkpoints(checkpoints, medium_return=medium_return)
    except SACError as exc:
        raise GenerateError(str(exc)) from None
    config = json.loads((run_dir / "config.json").read_text())
    if not env_matches(config["env_id"], {"kind": "dmc", "domain": task.split("_", 1)[0],
                                          "task": task.split("_", 1)[-1]}):
        raise GenerateError(f"{run_dir} is a run of {config['env_id']}, not of the state env of {task}")
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = picks if expert else {"medium": picks["medium"]}
    result: dict[str, Any] = {"picks": chosen, "checkpoints": checkpoints}
    try:
        result["policy_file"] = str(export_policy_file(run_dir, out_dir / f"{task}.npz", chosen))
        if medium_replay:
            result["replay_file"] = str(export_replay_file(run_dir, out_dir / f"{task}-medium-replay.npz",
                                                           picks["medium"]["step"]))
    except SACError as exc:
        raise GenerateError(str(exc)) from None
    return result
