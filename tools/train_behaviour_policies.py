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
their last checkpoint when ``--resume`` is given. ``tools/behaviour_session.py`` runs the same training and
export (this module's :func:`train_run` and :func:`export_run`, with the same run options) across device
calls of a few minutes each.

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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gta_rl.behaviour import SACConfig

ENVS = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
REPO = Path(__file__).resolve().parents[1]
RESUMABLE = ("state.safetensors", "resume.safetensors")  # a run resumes from either (gta_rl.behaviour)
QUICK = {"total_steps": 1500, "hidden": (32, 32), "batch_size": 64, "learning_starts": 500, "checkpoint_every": 500,
         "eval_episodes": 1, "device": "cpu", "cuda_graph": False, "compile": False}


def place_options() -> argparse.ArgumentParser:
    """Which runs and where (a parent parser; tools/behaviour_session.py takes the same)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--env", action="append", choices=sorted(ENVS), help="repeatable; default all three")
    p.add_argument("--run-dir", default="runs/behaviour", help="one SAC run directory per env under it")
    return p


def run_options(*, num_envs: int, state_every: int, quick: dict[str, Any]) -> argparse.ArgumentParser:
    """The settings of the SAC runs (a parent parser; :func:`sac_settings` reads them). The defaults that
    differ between the tools are arguments; ``quick`` replaces settings for a CPU smoke run."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--steps", type=int, default=1_000_000, help="environment steps per env")
    p.add_argument("--num-envs", type=int, default=num_envs, help="vector env copies per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=10_000)
    p.add_argument("--state-every", type=int, default=state_every,
                   help="steps between saves of the full state with the buffer "
                   "(0: every checkpoint; default %(default)s)")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--cuda-graph", action="store_true", help="replay the SAC update as a CUDA graph")
    p.add_argument("--compile", action="store_true", help="torch.compile the SAC update")
    p.add_argument("--env-async", action="store_true", help="training env copies in worker processes")
    p.add_argument("--overlap", action="store_true",
                   help="step the envs while the GPU runs the updates (acting one env step stale)")
    p.add_argument("--transfer-every", type=int, default=1, help="transitions copied to the device together")
    p.add_argument("--minutes", type=float, default=None,
                   help="wall-clock limit per run: it stops there with a checkpoint")
    p.add_argument("--quick", action="store_true",
                   help=f"CPU smoke run: tiny networks, {quick['total_steps']} steps")
    return p


def export_options() -> argparse.ArgumentParser:
    """Where the exported files go and which checkpoint is "medium" (a parent parser)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--medium", choices=("d4rl", "third"), default="d4rl",
                   help="medium = closest to D4RL medium's mean return, or to 1/3 of the expert's")
    p.add_argument("--policy-dir", default=None,
                   help="where policy files and replay files go (default packages/gta-data/policies; a --quick "
                        "run's go beside its runs)")
    return p


def policy_dir_for(given: str | None, run_dir: Path, *, smoke: bool) -> Path:
    """Where the exported files go: ``--policy-dir`` if given, else the shipped policies' folder, except for a
    smoke run, whose tiny policies go beside its runs and never replace the shipped ones."""
    if given:
        return Path(given)
    return run_dir / "policies" if smoke else REPO / "packages/gta-data/policies"


def sac_settings(a: argparse.Namespace, quick: dict[str, Any]) -> dict[str, Any]:
    """The SACConfig settings (all but env_id) that :func:`run_options` parsed into ``a``."""
    settings = {"total_steps": a.steps, "num_envs": a.num_envs, "seed": a.seed, "checkpoint_every": a.checkpoint_every,
                "state_every": a.state_every, "eval_episodes": a.eval_episodes, "device": a.device,
                "cuda_graph": a.cuda_graph, "compile": a.compile, "env_async": a.env_async, "overlap": a.overlap,
                "transfer_every": a.transfer_every}
    return {**settings, **quick} if a.quick else settings


def resumable(run: Path) -> bool:
    """Whether ``run`` holds a state that ``train_sac(..., resume=True)`` continues from."""
    return any((run / name).exists() for name in RESUMABLE)


def train_run(cfg: SACConfig, run: Path, *, resume: bool, deadline: float | None = None, stop_after: int | None = None,
              threads: int | None = None) -> dict[str, Any]:
    """Train (or resume) the SAC run ``cfg`` in ``run`` with ``threads`` torch CPU threads (None: torch's
    default); the result of ``gta_rl.behaviour.train_sac``."""
    import torch

    from gta_rl.behaviour import train_sac

    if threads is not None:
        torch.set_num_threads(threads)
    return train_sac(cfg, run, resume=resume, stop_after=stop_after, deadline=deadline)


def medium_target(family: str, rule: str) -> float | None:
    """The return the medium checkpoint is chosen by: D4RL medium's mean (``d4rl``), or None (``third``: 1/3 of
    the expert's, gta_rl.behaviour.pick_checkpoints)."""
    from gta_data.scores import D4RL_DATASET_STATS

    stats = D4RL_DATASET_STATS.get(f"{family}-medium") if rule == "d4rl" else None
    return stats["mean_return"] if stats else None


def export_run(family: str, run: Path, checkpoints: list[dict[str, Any]], policy_dir: Path,
               medium_rule: str) -> dict[str, Any]:
    """Pick the medium and expert checkpoints of a run, write its policy and medium-replay files, and check the
    chain with the gta-data recipes; the results (a row of the report)."""
    from gta_data.recipes import make_dataset
    from gta_data.replay import load_replay_file
    from gta_rl.behaviour import export_policy_file, export_replay_file, pick_checkpoints

    medium_return = medium_target(family, medium_rule)
    picks = pick_checkpoints(checkpoints, medium_return=medium_return)
    missing = [p["path"] for p in picks.values() if not (run / p["path"]).exists()]
    if missing:
        raise SystemExit(f"error: {family}: the picked actors {missing} were not kept (a run packed by "
                         "behaviour_session.py keeps only the candidates of D4RL's medium rule; another rule needs "
                         "all actors)")
    policy_dir.mkdir(parents=True, exist_ok=True)
    policy_file = export_policy_file(run, policy_dir / f"{family}.npz", picks)
    replay_file = export_replay_file(run, policy_dir / f"{family}-medium-replay.npz", picks["medium"]["step"])
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
        "medium_rule": medium_rule, "medium_target_return": medium_return,
        "expert": picks["expert"], "medium": picks["medium"],
        "medium_ratio": picks["medium"]["eval_return"] / picks["expert"]["eval_return"]
        if picks["expert"]["eval_return"] else None,
        "replay_transitions": recorded.num_transitions, "replay_episodes": recorded.num_episodes,
        "replay_check": replay_check, "replay_file_bytes": Path(replay_file).stat().st_size,
        "policy_file": str(policy_file), "replay_file": str(replay_file),
        "recipe_smoke_return_1000_steps": smoke_return, "checkpoints": len(checkpoints),
    }


def run_one(family: str, args: dict[str, Any]) -> dict[str, Any]:
    from gta_rl.behaviour import SACConfig

    run_dir = Path(args["run_dir"]) / family
    cfg = SACConfig(env_id=ENVS[family], **args["sac"])
    resume = args["resume"] and resumable(run_dir)
    t0 = time.time()
    deadline = t0 + 60.0 * args["minutes"] if args["minutes"] else None
    result = train_run(cfg, run_dir, resume=resume, deadline=deadline, threads=args["threads"])
    wall = time.time() - t0
    exported = export_run(family, run_dir, result["checkpoints"], Path(args["policy_dir"]), args["medium"])
    return {"env": family, "env_id": cfg.env_id, "steps": result["step"], "wall_s": round(wall, 1),
            "steps_per_s": round(result["step"] / max(wall, 1e-9), 1) if not resume else None,
            "updates": result.get("updates"), **exported}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     parents=[place_options(), run_options(num_envs=1, state_every=0, quick=QUICK),
                                              export_options()])
    parser.add_argument("--jobs", type=int, default=1, help="envs trained at once, in separate processes")
    parser.add_argument("--resume", action="store_true", help="continue runs that have a checkpoint")
    parser.add_argument("--out", required=True, help="JSON file of results")
    a = parser.parse_args()

    families = a.env or list(ENVS)
    sac = sac_settings(a, QUICK)
    run_dir = Path(a.run_dir)
    if a.quick and a.run_dir == parser.get_default("run_dir"):
        run_dir = Path(tempfile.mkdtemp(prefix="behaviour-quick-"))
    policy_dir = policy_dir_for(a.policy_dir, run_dir, smoke=a.quick)
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
