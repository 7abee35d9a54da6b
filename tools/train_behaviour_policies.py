"""Train the SAC behaviour policies of the D4RL-style locomotion datasets (docs/datasets.md).

For each of halfcheetah (HalfCheetah-v5), hopper (Hopper-v5) and walker2d (Walker2d-v5) this trains online
SAC (``gta_rl.behaviour``: 1M environment steps, one update per step, an evaluated actor checkpoint every 10k
steps), then, as D4RL did:

- expert = the best-evaluated checkpoint; medium = the checkpoint before it whose evaluation return is
  closest to the mean return of D4RL's own ``<env>-medium-v2`` data (``--medium d4rl``, the default) or to
  1/3 of the expert's (``--medium third``, D4RL's stated rule) (``gta_rl.behaviour.pick_checkpoints``);
- writes ``<policy dir>/<env>.npz`` (gta-data's numpy policy file with the "medium" and "expert" actors,
  their steps and evaluation returns) and ``<policy dir>/<env>-medium-replay.npz`` (the first K
  transitions of the run, K = the medium checkpoint's step: D4RL's medium-replay, kept as each episode's
  initial simulator state and actions, which gta-data re-simulates: ``gta_data.replay``);
- checks the chain by making 1000 steps of ``<env>-medium`` and the first 20k of ``<env>-medium-replay``
  with the gta-data recipes (the latter reports how exactly the re-simulation reproduced the run).

``--minutes`` bounds each run's training wall-clock time: a run that reaches it stops, checkpoints there and
is exported from what it has (its step count is in the table). The final evaluation, state save, exports
and checks come after it: budget a few minutes more (on a shared H100, 3 envs: more than 75 s).

After that, ``gta-data`` recipes ``<env>-{random,medium,medium-replay,expert,medium-expert}`` make the
datasets on any CPU. Prints a table last and writes the results to ``--out`` (JSON). Runs resume from
their last checkpoint when ``--resume`` is given.

    # GPU, full size: the three envs in parallel processes on one GPU (1M steps and 1M updates each);
    # check first that the CUDA-graph update equals the eager one on this GPU (else drop --cuda-graph)
    python -m pytest -m gpu packages/gta-rl/tests/test_sac.py
    python tools/train_behaviour_policies.py --jobs 3 --cuda-graph --out behaviour.json
    python tools/train_behaviour_policies.py --env hopper --steps 1000000 --num-envs 1 --out hopper.json
    # CPU smoke run (seconds per env; tiny networks; files go to the run directory, not the repository)
    python tools/train_behaviour_policies.py --quick --env hopper --out /tmp/behaviour.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ENVS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
REPO = Path(__file__).resolve().parents[1]


def run_one(family: str, args: dict[str, Any]) -> dict[str, Any]:
    import torch

    from gta_data.recipes import make_dataset
    from gta_data.replay import load_replay_file
    from gta_data.scores import D4RL_DATASET_STATS
    from gta_rl.behaviour import (
        SACConfig,
        export_policy_file,
        export_replay_file,
        pick_checkpoints,
        train_sac,
    )

    torch.set_num_threads(args["threads"])
    run_dir = Path(args["run_dir"]) / family
    cfg = SACConfig(env_id=ENVS[family], **args["sac"])
    resume = args["resume"] and any((run_dir / n).exists() for n in ("state.safetensors", "resume.safetensors"))
    t0 = time.time()
    deadline = t0 + 60.0 * args["minutes"] if args["minutes"] else None
    result = train_sac(cfg, run_dir, resume=resume, deadline=deadline)
    wall = time.time() - t0
    medium_return = None
    if args["medium"] == "d4rl" and f"{family}-medium" in D4RL_DATASET_STATS:
        medium_return = D4RL_DATASET_STATS[f"{family}-medium"]["mean_return"]
    picks = pick_checkpoints(result["checkpoints"], medium_return=medium_return)
    policy_dir = Path(args["policy_dir"])
    policy_dir.mkdir(parents=True, exist_ok=True)
    policy_file = export_policy_file(run_dir, policy_dir / f"{family}.npz", picks)
    replay_file = export_replay_file(run_dir, policy_dir / f"{family}-medium-replay.npz", picks["medium"]["step"])
    # The chain works: gta-data recipes roll the exported medium policy out and re-simulate the replay.
    with tempfile.TemporaryDirectory() as tmp:
        smoke = make_dataset(f"{family}-medium", Path(tmp) / "m.zarr", size=1000, seed=0,
                             policy_file=policy_file)
        # The first 20k transitions are enough to check the re-simulation here (the recipe checks all of
        # them wherever the dataset is made).
        replay = make_dataset(f"{family}-medium-replay", Path(tmp) / "r.zarr", replay_file=replay_file,
                              size=20_000)
        smoke_return = float(smoke.episode_returns()[0])
        replay_check = replay.provenance["replay_check"]
    recorded = load_replay_file(replay_file)
    return {
        "env": family, "env_id": cfg.env_id, "steps": result["step"], "wall_s": round(wall, 1),
        "steps_per_s": round(result["step"] / max(wall, 1e-9), 1) if not resume else None,
        "updates": result.get("updates"), "medium_rule": args["medium"], "medium_target_return": medium_return,
        "expert": picks["expert"], "medium": picks["medium"],
        "medium_ratio": picks["medium"]["eval_return"] / picks["expert"]["eval_return"]
        if picks["expert"]["eval_return"] else None,
        "replay_transitions": recorded.num_transitions, "replay_episodes": recorded.num_episodes,
        "replay_check": replay_check, "replay_file_bytes": Path(replay_file).stat().st_size,
        "policy_file": str(policy_file), "replay_file": str(replay_file),
        "recipe_smoke_return_1000_steps": smoke_return, "checkpoints": len(result["checkpoints"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", action="append", choices=sorted(ENVS), help="repeatable; default all three")
    parser.add_argument("--steps", type=int, default=1_000_000, help="environment steps per env")
    parser.add_argument("--num-envs", type=int, default=1, help="vector env copies per run")
    parser.add_argument("--checkpoint-every", type=int, default=10_000)
    parser.add_argument("--state-every", type=int, default=0,
                        help="steps between saves of the resumable state (0: every checkpoint)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock limit per run (stops early)")
    parser.add_argument("--medium", choices=("d4rl", "third"), default="d4rl",
                        help="medium = closest to D4RL medium's mean return, or to 1/3 of the expert's")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--cuda-graph", action="store_true", help="replay the SAC update as a CUDA graph")
    parser.add_argument("--compile", action="store_true", help="torch.compile the SAC update")
    parser.add_argument("--env-async", action="store_true", help="training env copies in worker processes")
    parser.add_argument("--overlap", action="store_true",
                        help="step the envs while the GPU runs the updates (acting one env step stale)")
    parser.add_argument("--transfer-every", type=int, default=1, help="transitions copied to the device together")
    parser.add_argument("--jobs", type=int, default=1, help="envs trained at once, in separate processes")
    parser.add_argument("--run-dir", default="runs/behaviour", help="SAC run directories (one per env)")
    parser.add_argument("--policy-dir", default=None,
                        help="where policy files and replay files go (default packages/gta-data/policies)")
    parser.add_argument("--resume", action="store_true", help="continue runs that have a checkpoint")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: tiny networks, a few thousand steps")
    parser.add_argument("--out", required=True, help="JSON file of results")
    a = parser.parse_args()

    families = a.env or list(ENVS)
    sac = {"total_steps": a.steps, "num_envs": a.num_envs, "checkpoint_every": a.checkpoint_every,
           "eval_episodes": a.eval_episodes, "seed": a.seed, "device": a.device, "cuda_graph": a.cuda_graph,
           "compile": a.compile, "env_async": a.env_async, "state_every": a.state_every, "overlap": a.overlap,
           "transfer_every": a.transfer_every}
    run_dir, policy_dir = Path(a.run_dir), Path(a.policy_dir) if a.policy_dir else REPO / "packages/gta-data/policies"
    if a.quick:
        sac.update(total_steps=1500, hidden=(32, 32), batch_size=64, learning_starts=500, checkpoint_every=500,
                   eval_episodes=1, device="cpu", cuda_graph=False, compile=False)
        if a.run_dir == parser.get_default("run_dir"):
            run_dir = Path(tempfile.mkdtemp(prefix="behaviour-quick-"))
        if a.policy_dir is None:
            policy_dir = run_dir / "policies"
    args = {"run_dir": str(run_dir), "policy_dir": str(policy_dir), "resume": a.resume, "sac": sac,
            "minutes": a.minutes, "medium": a.medium,
            "threads": 1 if a.jobs > 1 or a.quick else 4}
    t0 = time.time()
    if a.jobs > 1:
        # spawn: CUDA cannot be used in forked children.
        with ProcessPoolExecutor(a.jobs, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(run_one, families, [args] * len(families)))
    else:
        rows = [run_one(f, args) for f in families]
    import torch

    report = {
        "config": {**args, "families": families, "jobs": a.jobs, "quick": a.quick},
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() and sac["device"] != "cpu"
        else platform.processor() or "cpu",
        "wall_s": round(time.time() - t0, 1), "results": rows,
    }
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")

    print(f"\nSAC behaviour policies ({report['device']}, {report['wall_s']} s); files in {policy_dir}")
    print(f"{'env':<12}{'steps':>9}{'steps/s':>9}{'expert step':>12}{'return':>9}{'medium step':>12}"
          f"{'return':>9}{'ratio':>7}{'replay':>9}{'resim err':>10}")
    for r in rows:
        ratio = f"{r['medium_ratio']:.2f}" if r["medium_ratio"] is not None else "-"
        print(f"{r['env']:<12}{r['steps']:>9}{r['steps_per_s'] or '-':>9}{r['expert']['step']:>12}"
              f"{r['expert']['eval_return']:>9.1f}{r['medium']['step']:>12}{r['medium']['eval_return']:>9.1f}"
              f"{ratio:>7}{r['replay_transitions']:>9}{r['replay_check']['max_last_obs_error']:>10.2g}")


if __name__ == "__main__":
    main()
