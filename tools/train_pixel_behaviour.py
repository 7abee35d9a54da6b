"""Train the SAC behaviour policies of the dm_control pixel datasets (packages/gta-pixel/README.md).

V-D4RL's walker_walk / cheetah_run / humanoid_walk data were collected by state-based SAC agents acting at the
pixel task's rate (action repeat 2). For each ``--task`` this trains online SAC (``gta_rl.behaviour``, the
trainer of gta-data's locomotion policies) on the state environment ``gta_pixel/<task>-v0``
(:mod:`gta_pixel.gym_envs`: the suite's flat observation, action repeat 2, 500 agent steps), with an evaluated
actor checkpoint every ``--checkpoint-every`` steps, then exports (:func:`gta_pixel.behaviour.export_behaviour`):

- ``<policy dir>/<task>.npz``: "medium" = the checkpoint up to the best one whose return is closest to
  ``--medium-return`` (V-D4RL's "medium-level" policy; the return of its stochastic actor over
  ``--pick-episodes`` episodes, i.e. the return its dataset will have, scored for the ``--pick-candidates``
  checkpoints whose run evaluation is closest to the target), "expert" = the best-evaluated one
  (``--no-expert`` leaves it out, for a run stopped before it converged);
- ``<policy dir>/<task>-medium-replay.npz``: the run's first K transitions, K = the medium checkpoint's step
  (V-D4RL's medium_replay), as each episode's start state and actions.

and checks the chain without rendering: every replay episode is re-simulated in the task from its start state
and compared with the recorded return and last observation, and the medium actor is rolled out (stochastic) in
the state env. ``gta-pixel make <task> medium|expert|medium-expert|medium-replay`` then renders the datasets.

``--minutes`` bounds each run's training time (it stops with a checkpoint and is exported from what it has);
``--export-only`` exports an existing run directory (e.g. one trained with ``gta-rl sac``) without training.

    # GPU, one task per command (check first that the CUDA-graph update equals the eager one there)
    python tools/train_pixel_behaviour.py --task walker_walk --num-envs 4 --env-async --compile --cuda-graph \
        --minutes 7 --out b.json
    # CPU, one core, in the background
    OMP_NUM_THREADS=1 nice -n 19 python tools/train_pixel_behaviour.py --device cpu --no-expert --minutes 75 \\
        --out b.json
    # export a finished run; a CPU smoke run (tiny networks, files under the run directory)
    python tools/train_pixel_behaviour.py --export-only runs/pixel-behaviour/walker_walk --no-expert --out b.json
    python tools/train_pixel_behaviour.py --quick --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MUJOCO_GL", "disable")  # states only: no OpenGL backend in this process


def check_chain(task: str, exported: dict[str, Any], episodes: int = 2) -> dict[str, Any]:
    """Re-simulate the whole replay file in the task (states only) and roll the medium actor out."""
    import numpy as np

    from gta_data.policies import load_policy_file
    from gta_pixel.resimulate import ResimCheck, load_replay
    from gta_pixel.tasks import DmcCore

    domain, name = task.split("_", 1)
    core = DmcCore(domain, name)
    out: dict[str, Any] = {}
    if "replay_file" in exported:
        replay, _ = load_replay({"kind": "dmc", "domain": domain, "task": name}, exported["replay_file"], core)
        check, offset = ResimCheck(), 0
        for e, length in enumerate(replay.lengths):
            state, rewards, terminated = core.reset_to_state(replay.starts[e]), [], False
            for action in replay.actions[offset:offset + length]:
                state, reward, terminated, truncated = core.step(action)
                rewards.append(reward)
                if terminated or truncated:
                    break
            offset += int(length)
            check.add(np.asarray(rewards), state, len(rewards), terminated, replay.returns[e], replay.last_obs[e],
                      int(length), bool(replay.terminal[e]))
        out.update(replay_transitions=replay.num_transitions, replay_episodes=replay.num_episodes,
                   replay_file_bytes=Path(exported["replay_file"]).stat().st_size,
                   replay_mean_return=float(replay.returns[replay.lengths == core.max_steps].mean())
                   if (replay.lengths == core.max_steps).any() else None,
                   replay_check=check.as_dict())
    actor = load_policy_file(exported["policy_file"]).actors["medium"]
    rng, returns = np.random.default_rng([0, 0]), []
    for e in range(episodes):
        state, total, done = core.reset(e), 0.0, False
        while not done:
            state, reward, terminated, truncated = core.step(actor.sample(state[None], rng)[0])
            total += reward
            done = terminated or truncated
        returns.append(total)
    core.close()
    out.update(policy_file_bytes=Path(exported["policy_file"]).stat().st_size,
               medium_stochastic_returns=[round(r, 1) for r in returns])
    return out


def run_one(task: str, a: argparse.Namespace, sac: dict[str, Any], run_dir: Path, policy_dir: Path) -> dict[str, Any]:
    import torch

    from gta_pixel.behaviour import export_behaviour
    from gta_pixel.gym_envs import module_env_id
    from gta_rl.behaviour import SACConfig, train_sac

    torch.set_num_threads(a.threads)
    row: dict[str, Any] = {"task": task}
    if a.export_only:
        run = Path(a.export_only)
    else:
        run = run_dir / task
        cfg = SACConfig(env_id=module_env_id(task), **sac)
        resume = a.resume and any((run / n).exists() for n in ("state.safetensors", "resume.safetensors"))
        t0 = time.time()
        result = train_sac(cfg, run, resume=resume, deadline=t0 + 60.0 * a.minutes if a.minutes else None)
        wall = time.time() - t0
        row.update(steps=result["step"], updates=result["updates"], wall_s=round(wall, 1),
                   steps_per_s=None if resume else round(result["step"] / max(wall, 1e-9), 1))
    exported = export_behaviour(run, task, policy_dir, medium_return=a.medium_return, expert=not a.no_expert,
                                pick_episodes=a.pick_episodes, pick_candidates=a.pick_candidates)
    row.update(run_dir=str(run), medium=exported["picks"]["medium"], expert=exported["picks"].get("expert"),
               checkpoints=[{k: c[k] for k in ("step", "eval_return", "eval_return_std")}
                            for c in exported["checkpoints"]],
               data_returns=[{k: round(c[k], 1) for k in ("step", "data_return", "data_return_std")}
                             for c in exported.get("data_returns", [])],
               policy_file=exported["policy_file"], replay_file=exported.get("replay_file"))
    row.update(check_chain(task, exported))
    return row


def main() -> None:
    from gta_pixel.gym_envs import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", action="append", choices=TASKS, help="repeatable; default walker_walk")
    parser.add_argument("--steps", type=int, default=1_000_000, help="environment (agent) steps per task")
    parser.add_argument("--minutes", type=float, default=None, help="training wall-clock limit per task")
    parser.add_argument("--medium-return", type=float, default=500.0,
                        help="evaluation return the medium checkpoint is picked closest to (half the maximum)")
    parser.add_argument("--pick-episodes", type=int, default=10,
                        help="pick the medium on each checkpoint's stochastic return over this many episodes "
                             "(the data's return; 0: on the run's deterministic evaluations)")
    parser.add_argument("--pick-candidates", type=int, default=8,
                        help="checkpoints scored so: those whose run evaluation is closest to --medium-return")
    parser.add_argument("--no-expert", action="store_true", help="export the medium actor only")
    parser.add_argument("--export-only", default=None, help="a finished run directory to export (no training)")
    parser.add_argument("--num-envs", type=int, default=1, help="vector env copies per run")
    parser.add_argument("--env-async", action="store_true", help="training env copies in worker processes")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--state-every", type=int, default=0, help="steps between resumable-state saves")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cuda-graph", action="store_true", help="replay the SAC update as a CUDA graph")
    parser.add_argument("--compile", action="store_true", help="torch.compile the SAC update")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--run-dir", default="runs/pixel-behaviour", help="SAC run directories (one per task)")
    parser.add_argument("--policy-dir", default=None, help="default packages/gta-pixel/policies")
    parser.add_argument("--resume", action="store_true", help="continue runs that have a checkpoint")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: tiny networks, a few thousand steps")
    parser.add_argument("--out", required=True, help="JSON file of results")
    a = parser.parse_args()

    tasks = a.task or ["walker_walk"]
    if a.export_only and len(tasks) != 1:
        parser.error("--export-only exports one run: name its --task")
    sac = {"total_steps": a.steps, "num_envs": a.num_envs, "checkpoint_every": a.checkpoint_every,
           "eval_episodes": a.eval_episodes, "seed": a.seed, "device": a.device, "cuda_graph": a.cuda_graph,
           "compile": a.compile, "env_async": a.env_async, "state_every": a.state_every}
    run_dir = Path(a.run_dir)
    policy_dir = Path(a.policy_dir) if a.policy_dir else REPO / "packages/gta-pixel/policies"
    if a.quick:
        sac.update(total_steps=1500, hidden=(32, 32), batch_size=64, learning_starts=500, checkpoint_every=500,
                   eval_episodes=1, device="cpu", cuda_graph=False, compile=False)
        a.pick_episodes = min(a.pick_episodes, 1)
        if a.run_dir == parser.get_default("run_dir"):
            run_dir = Path(tempfile.mkdtemp(prefix="pixel-behaviour-quick-"))
        if a.policy_dir is None:
            policy_dir = run_dir / "policies"
    t0 = time.time()
    rows = [run_one(task, a, sac, run_dir, policy_dir) for task in tasks]
    import torch

    report = {"config": {**vars(a), "sac": sac, "policy_dir": str(policy_dir)},
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and sac["device"] != "cpu"
              else platform.processor() or "cpu", "wall_s": round(time.time() - t0, 1), "results": rows}
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")

    print(f"\nSAC behaviour policies of the pixel tasks ({report['device']}, {report['wall_s']} s); files in {policy_dir}")
    print(f"{'task':<14}{'steps':>9}{'steps/s':>9}{'medium step':>12}{'eval':>8}{'data':>8}{'expert step':>12}"
          f"{'eval':>8}{'replay':>9}{'resim err':>10}")
    for r in rows:
        expert = r["expert"] or {"step": "-", "eval_return": float("nan")}
        resim = r.get("replay_check", {}).get("max_last_obs_error", float("nan"))
        medium = r["medium"]
        print(f"{r['task']:<14}{r.get('steps', '-'):>9}{r.get('steps_per_s') or '-':>9}{medium['step']:>12}"
              f"{medium['eval_return']:>8.1f}{medium.get('data_return', float('nan')):>8.1f}{expert['step']:>12}"
              f"{expert['eval_return']:>8.1f}{r.get('replay_transitions', '-'):>9}{resim:>10.2g}")


if __name__ == "__main__":
    main()
