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
from collections.abc import Callable
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


def load_behaviour_file(path: Path, load: Callable[[Path], Any], error: type[Exception], spec: dict[str, Any], *,
                        needed_by: str, kind: str, holds: str, how: str, option: str) -> Any:
    """A behaviour file (policy or replay file) for the task of ``spec``, read by ``load`` (which raises ``error``):
    one-line GenerateErrors for a missing file (saying ``how`` to make it, or ``option`` to name another), an
    unreadable one, and one made for another env."""
    name = task_name(spec)
    if not path.is_file():
        raise GenerateError(f"{needed_by} data of {name} needs the {kind} file {path}, which is missing: {how}, "
                            f"or pass {option}")
    try:
        loaded = load(path)
    except error as exc:
        raise GenerateError(str(exc)) from None
    if not env_matches(loaded.env_id, spec):
        raise GenerateError(f"{path} holds {holds} {loaded.env_id}, not {name}")
    return loaded


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


def data_returns(run_dir: str | os.PathLike, task: str, checkpoints: list[dict[str, Any]], episodes: int,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Each checkpoint's return as ``make`` would collect data with it: the mean (and std) over ``episodes``
    episodes of its stochastic actor in the task's state physics (env seed ``2_000_000 + e``, noise
    ``numpy.random.default_rng([seed, e])``; disjoint from the run's training and evaluation seeds). A run's own
    evaluations use the deterministic actor on 5 episodes, which can sit far from the data's return."""
    import tempfile

    import numpy as np

    from gta_data.policies import load_policy_file
    from gta_pixel.tasks import DmcCore
    from gta_rl.behaviour import export_policy_file

    domain, name = task.split("_", 1)
    with tempfile.TemporaryDirectory() as tmp:
        picks = {f"step_{c['step']}": c for c in checkpoints}
        actors = load_policy_file(export_policy_file(run_dir, Path(tmp) / "all.npz", picks)).actors
    core = DmcCore(domain, name)
    out = []
    try:
        for c in checkpoints:
            actor = actors[f"step_{c['step']}"]
            low, high = np.asarray(actor.action_low, np.float64), np.asarray(actor.action_high, np.float64)
            returns = []
            for e in range(episodes):
                rng, state, total, done = np.random.default_rng([seed, e]), core.reset(2_000_000 + e), 0.0, False
                while not done:
                    a = actor.sample(state[None], rng)[0].astype(np.float64)
                    state, reward, terminated, truncated = core.step(2.0 * (a - low) / (high - low) - 1.0)
                    total, done = total + reward, terminated or truncated
                returns.append(total)
            out.append({**c, "data_return": float(np.mean(returns)), "data_return_std": float(np.std(returns))})
    finally:
        core.close()
    return out


def export_behaviour(run_dir: str | os.PathLike, task: str, out_dir: str | os.PathLike, *,
                     medium_return: float | None = None, expert: bool = True, medium_replay: bool = True,
                     pick_episodes: int = 0, pick_candidates: int = 8) -> dict[str, Any]:
    """Export a ``gta-rl sac`` run of the state env ``gta_pixel/<task>-v0`` into ``out_dir``: the policy file
    ``<task>.npz`` ("expert": the best-evaluated checkpoint, left out with ``expert=False``, e.g. for a run
    stopped before it converged; "medium": the checkpoint up to the best one whose return is closest to
    ``medium_return``, a third of the best's when None) and the replay file ``<task>-medium-replay.npz`` of the
    run's first K transitions, K = the medium checkpoint's step. The medium's return is the run's own
    evaluation, or with ``pick_episodes`` > 0 the data return of :func:`data_returns` over that many episodes
    (the return the medium dataset will have) of the ``pick_candidates`` checkpoints whose evaluation is
    closest to the target. Returns what was picked and written."""
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
    result: dict[str, Any] = {"checkpoints": checkpoints}
    if pick_episodes > 0:
        target = medium_return if medium_return is not None else picks["expert"]["eval_return"] / 3.0
        upto = [c for c in checkpoints if c["step"] <= picks["expert"]["step"]]
        nearest = sorted(upto, key=lambda c: abs(c["eval_return"] - target))[:max(1, pick_candidates)]
        scored = data_returns(run_dir, task, sorted(nearest, key=lambda c: c["step"]), pick_episodes)
        picks["medium"] = min(scored, key=lambda c: abs(c["data_return"] - target))
        result["data_returns"] = scored
    out_dir.mkdir(parents=True, exist_ok=True)
    chosen = picks if expert else {"medium": picks["medium"]}
    result["picks"] = chosen
    try:
        result["policy_file"] = str(export_policy_file(run_dir, out_dir / f"{task}.npz", chosen))
        if medium_replay:
            result["replay_file"] = str(export_replay_file(run_dir, out_dir / f"{task}-medium-replay.npz",
                                                           picks["medium"]["step"]))
    except SACError as exc:
        raise GenerateError(str(exc)) from None
    return result
