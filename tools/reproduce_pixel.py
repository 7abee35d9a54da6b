"""One row of the pixel experiment (GTA section 5.2, appendix C.4) on a locally made dataset: DrQ+BC alone, then
fine-tuned on its original latents, then on original + GTA latents (the same extra training), seed by seed.

    python tools/reproduce_pixel.py walker_walk-medium --workdir /tmp/pix --gpu --jobs 3
    python tools/reproduce_pixel.py walker_walk-medium --workdir /tmp/row --tiny     # fake task, CPU, seconds

Every stage is a command of one of the packages' CLIs, reading and writing stores and run directories in
``--workdir``, so each can be rerun or replaced by hand (k = each seed of ``--seeds``):

    data                 gta-pixel make TASK LEVEL                              pixels.zarr
    pretrain             gta-pixel pretrain --seeds 0-2 (one stacked run)       pretrain/
    encode-k             gta-pixel encode pretrain --seed k                     latent-k.zarr
    model-k              gta-diffusion train on latent-k.zarr                   model-k/
    gta-k                gta-diffusion augment --dataset-preset vd4rl-LEVEL     gta-k.zarr
    finetune-original-k  gta-pixel finetune pretrain --seeds k --data latent-k  finetune-original-k/
    finetune-gta-k       the same with --data latent-k --data gta-k            finetune-gta-k/
    eval-pretrain        gta-pixel evaluate pretrain (every seed)               pretrain/eval.json
    eval-original-k      gta-pixel evaluate finetune-original-k                 finetune-original-k/eval.json
    eval-gta-k           gta-pixel evaluate finetune-gta-k                      finetune-gta-k/eval.json
    row                  this script: per-seed scores, paired differences       row.json, row.md

A latent store is one seed's: seed k's frozen encoder and trunks made it, so only seed k's heads are fine-tuned
on it (and on the GTA latents generated from it). Both fine-tuning arms start from the same pretrained
checkpoint and run the same number of updates; every evaluation plays the same episode seeds, so the three
conditions are compared seed by seed (paired differences, ``scipy.stats.ttest_rel``).

Scheduling is tools/reproduce.py's (tools/stage_scheduler.py): stages run as soon as the stages they read are
done, ``--jobs`` at once; a finished stage is recorded in ``stages.json`` with its command and wall time and is
not run again; ``--stop-after-s`` stops the stages still running (pretrain, fine-tuning and denoiser training
write a checkpoint on SIGTERM and continue on the rerun; the others start again) so that a rerun of the same
command continues: that is how a row is spread over time-limited sessions.

The default scale fits about 22 minutes of one H100 (estimates from BENCHMARKS.md's rates, ``--jobs 3``, 16
cores; compile times included):

    data           200 episodes (100k transitions), 14 EGL render processes at ~250 frames/s each    ~75 s
    pretrain       50k updates of 3 seeds in one stacked step, --fast, ~8.7 ms per step             ~500 s
    encode-k       100k frames per seed, three at once                                            ~30 s
    model-k        10k fast-mixer steps per seed at ~230 steps/s, ~80 s compile, three at once     ~250 s
    gta-k          400k generated transitions per seed (4x the data), compile included            ~80 s
    finetune-*     20k head updates, 6 one-seed runs, compiled + CUDA graph, three at once        ~150 s
    eval-*         10 episodes per seed and run (7 evaluations), 14 render processes              ~60 s
    whole row, the overlaps counted                                                                ~20 min

against the protocol of V-D4RL and C.4: 550k pretraining updates, 300k fine-tuning updates. Every figure is
an option. ``--tiny`` runs the same graph with the ``fake`` task (random actions, 16 px frames) in place of
the named task and tiny networks and step counts: a CPU smoke run of the whole row.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage_scheduler import Stage, add_commit_option, add_row_options, git_commit, run_row, write_row_files  # noqa: E402

# V-D4RL's dm_control tasks, and the levels with a C.4 preset of gta-diffusion (``vd4rl-<level>``).
TASKS = ("walker_walk", "cheetah_run", "humanoid_walk")
LEVELS = ("medium", "medium-replay", "medium-expert", "expert")
CONDITIONS = ("drqbc", "original", "gta")  # DrQ+BC alone, + original-latent fine-tuning, + GTA fine-tuning
LABELS = {"drqbc": "DrQ+BC", "original": "+ original latents", "gta": "+ GTA latents"}


@dataclass(frozen=True)
class Scale:
    """The row's protocol at the scale of one H100 allotment; ``--tiny`` shrinks it to a CPU smoke run."""

    episodes: int = 200  # dataset episodes (500 agent steps each for dm_control; V-D4RL: ~100k transitions)
    size: int = 84  # frame height and width
    seeds: str = "0-2"
    pretrain_steps: int = 50_000  # DrQ+BC updates per seed (V-D4RL, C.4: 550k)
    batch_size: int = 256  # DrQ+BC's, pretraining and fine-tuning
    hidden_dim: int = 1024  # DrQ+BC's heads
    diffusion_steps: int = 10_000  # GTA denoiser steps per seed
    network: str = "fast-mixer"  # gta-diffusion train --network
    horizon: int | None = None  # denoiser window (None: gta-diffusion's 31 transitions)
    diffusion_batch: int | None = None  # None: gta-diffusion's 256
    generated: int = 400_000  # GTA transitions per seed
    sampler_batch: int | None = None  # GTA sampler windows per call (None: the CLI's default)
    sampler_steps: int | None = None  # EDM sampler steps (None: the model's 128)
    finetune_steps: int = 20_000  # head updates per seed and arm (C.4: 300k)
    eval_episodes: int = 10  # per seed and evaluation (V-D4RL: 10)
    eval_max_steps: int | None = None  # cut evaluation episodes (None: whole episodes)
    workers: int = 14  # render processes of make and evaluate (0: evaluate in its own process, make in one)
    checkpoint_every: int = 5000  # pretraining and fine-tuning


TINY = Scale(episodes=3, size=16, pretrain_steps=6, batch_size=8, hidden_dim=32, diffusion_steps=4,
             network="fast-mixer-small", horizon=4, diffusion_batch=8, generated=40, sampler_batch=8, sampler_steps=4,
             finetune_steps=6, eval_episodes=2, eval_max_steps=5, workers=0, checkpoint_every=3)

# V-D4RL's exploration std reaches its final 0.1 at update 125k of 550k (250k loop steps, one update every 2):
# a shorter pretraining keeps that fraction, so its target and BC noise anneal as the full run's do.
STD_ANNEALED_FRACTION = 125_000 / 550_000


def std_duration(pretrain_steps: int) -> int:
    """``gta-pixel pretrain --std-duration`` (in loop steps, 2 per update) for ``pretrain_steps`` updates."""
    return max(1, round(2 * STD_ANNEALED_FRACTION * pretrain_steps))


def _std_phrase(scale: dict) -> str:
    """How the row's exploration std annealed, in words (from the duration its pretraining run saved)."""
    loop_steps, updates = scale["std_duration_loop_steps"], scale["pretrain_steps"]
    reached = -(-loop_steps // 2)  # the first update at which the std is 0.1
    if reached > updates:  # the run ends before the schedule does
        from gta_pixel.drqbc import DrQBCConfig

        last = DrQBCConfig(std_duration=loop_steps).stddev(updates - 1)
        return f"exploration std 1.0 -> {last:.2f} at the last update (V-D4RL's 0.1 not reached)"
    fraction = "V-D4RL's fraction" if loop_steps == std_duration(updates) else f"{reached / updates:.0%} of the run"
    return f"exploration std 1.0 -> 0.1 by update {reached}, {fraction}"


PRIORITY = ("data", "pretrain", "encode", "model", "gta", "finetune-gta", "finetune-original", "eval-gta",
            "eval-original", "eval-pretrain")

# The scale options of the command line: option -> (type, help).
SCALE_OPTIONS = {
    "--episodes": (int, "dataset episodes"),
    "--seeds": (str, "DrQ+BC seeds, e.g. 0-2 (at least 2 for the paired statistics)"),
    "--pretrain-steps": (int, "DrQ+BC pretraining updates per seed"),
    "--diffusion-steps": (int, "GTA denoiser steps per seed"),
    "--network": (str, "GTA denoiser network (gta-diffusion train --network)"),
    "--generated": (int, "GTA transitions generated per seed"),
    "--finetune-steps": (int, "head updates per seed and arm"),
    "--eval-episodes": (int, "evaluation episodes per seed and run"),
    "--workers": (int, "render processes of make and evaluate"),
}
SCALE_FIELDS = tuple(option[2:].replace("-", "_") for option in SCALE_OPTIONS)


def scale_from(tiny: bool, given: dict) -> Scale:
    """The default scale (or ``TINY``) with the options given (None: not given) in place of its own values."""
    base = TINY if tiny else Scale()
    return Scale(**{**asdict(base), **{k: v for k, v in given.items() if v is not None}})


def parse_task_level(name: str) -> tuple[str, str]:
    """``walker_walk-medium`` -> (``walker_walk``, ``medium``); ValueError (one line) for anything else."""
    task, _, level = name.partition("-")  # suite task names have no "-", levels may (medium-replay)
    if task not in TASKS or level not in LEVELS:
        raise ValueError(f"unknown TASK-LEVEL {name!r}: TASK one of {', '.join(TASKS)}, LEVEL one of "
                         f"{', '.join(LEVELS)} (e.g. walker_walk-medium)")
    return task, level


def parse_seeds(text: str) -> list[int]:
    """``0-2`` -> [0, 1, 2]; ``0,3`` -> [0, 3] (gta-pixel's --seeds syntax)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
    except ValueError:
        raise ValueError(f"--seeds {text!r}: use e.g. 0-2 or 0,3") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds {text!r}: at least two distinct non-negative seeds (paired statistics)")
    return seeds


def cli(package: str) -> list[str]:
    """The argv prefix of a package's CLI: its console script beside this Python, else the module."""
    script = Path(sys.executable).parent / f"gta-{package}"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", f"from gta_{package}.cli import app; app()"]


def build_stages(task: str, level: str, w: Path, scale: Scale, gpu: bool, tiny: bool,
                 policy_file: str | None = None, finetune_eager: bool = False) -> list[Stage]:
    pixel, diffusion = cli("pixel"), cli("diffusion")
    device = ["--device", "cuda" if gpu else "cpu"]
    pfast = ["--fast"] if gpu else []  # bf16, channels_last, compile, whole-step CUDA graph
    ffast = ["--compile", "--cuda-graph"] if gpu and not finetune_eager else []
    dfast = ["--bf16", "--compile", "--cuda-graph"] if gpu else []
    afast = ["--bf16", "--compile", "--compile-mode", "reduce-overhead"] if gpu else []
    seeds = parse_seeds(scale.seeds)
    pixels, pre = str(w / "pixels.zarr"), str(w / "pretrain")
    if tiny:  # the fake task: no simulator, no behaviour policy
        make = [*pixel, "make", "fake", "random"]
    else:
        make = [*pixel, "make", task, level, *(["--policy-file", policy_file] if policy_file else [])]
    episodes = [] if level == "medium-replay" and not tiny else ["--episodes", str(scale.episodes)]  # the replay's
    # --overwrite: a store finished by a call whose ledger entry was lost is made again, not refused
    stages = [Stage("data", (), [*make, "--out", pixels, *episodes, "--size", str(scale.size), "--workers",
                                 str(max(1, scale.workers)), "--overwrite"]),
              Stage("pretrain", ("data",), [*pixel, "pretrain", pixels, "--out", pre, "--seeds", scale.seeds, "--steps",
                                            str(scale.pretrain_steps), "--std-duration",
                                            str(std_duration(scale.pretrain_steps)), "--batch-size", str(scale.batch_size),
                                            "--hidden-dim", str(scale.hidden_dim), "--checkpoint-every",
                                            str(scale.checkpoint_every), *pfast, *device],
                    resume_flag=["--resume"], gpu=gpu)]
    window = [*(["--horizon", str(scale.horizon)] if scale.horizon else []),
              *(["--batch-size", str(scale.diffusion_batch)] if scale.diffusion_batch else [])]
    sampler = [*(["--batch-size", str(scale.sampler_batch)] if scale.sampler_batch else []),
               *(["--num-steps", str(scale.sampler_steps)] if scale.sampler_steps else [])]
    tiny_train = ["--warmup-steps", "2", "--log-every", "2"] if tiny else []
    for k in seeds:
        latent, model, gta = str(w / f"latent-{k}.zarr"), str(w / f"model-{k}"), str(w / f"gta-{k}.zarr")
        stages += [
            Stage(f"encode-{k}", ("pretrain",), [*pixel, "encode", pre, pixels, "--out", latent, "--seed", str(k),
                                                 *device], store=latent, gpu=gpu),
            Stage(f"model-{k}", (f"encode-{k}",), [*diffusion, "train", "--data", latent, "--out", model, "--network",
                                                   scale.network, "--steps", str(scale.diffusion_steps),
                                                   "--checkpoint-every", str(max(1, min(5000, scale.diffusion_steps))),
                                                   "--seed", str(k), *window, *tiny_train, *dfast, *device], gpu=gpu),
            Stage(f"gta-{k}", (f"model-{k}",), [*diffusion, "augment", "--method", "gta", "--model", model, "--data",
                                                latent, "--dataset-preset", f"vd4rl-{level}", "--num-transitions",
                                                str(scale.generated), "--seed", str(k), "--out", gta, *sampler, *afast,
                                                *device], store=gta, gpu=gpu),
        ]
        for arm, data, needs in (("original", [latent], (f"encode-{k}",)),
                                 ("gta", [latent, gta], (f"encode-{k}", f"gta-{k}"))):
            run = str(w / f"finetune-{arm}-{k}")
            stages.append(Stage(f"finetune-{arm}-{k}", needs, [
                *pixel, "finetune", pre, *(a for path in data for a in ("--data", path)), "--out", run, "--seeds",
                str(k), "--steps", str(scale.finetune_steps), "--checkpoint-every", str(scale.checkpoint_every),
                *ffast, *device], resume_flag=["--resume"], gpu=gpu))
    cut = ["--max-steps", str(scale.eval_max_steps)] if scale.eval_max_steps else []
    evaluate = ["--episodes", str(scale.eval_episodes), "--workers", str(scale.workers), *cut, *device]
    for k in seeds:
        for arm in ("original", "gta"):
            stages.append(Stage(f"eval-{arm}-{k}", (f"finetune-{arm}-{k}",),
                                [*pixel, "evaluate", str(w / f"finetune-{arm}-{k}"), *evaluate], gpu=gpu))
    stages.append(Stage("eval-pretrain", ("pretrain",), [*pixel, "evaluate", pre, *evaluate], gpu=gpu))
    # The scheduler starts ready stages in list order: the chain to the GTA arm (encode, denoiser, augment) first.
    return sorted(stages, key=lambda stage: PRIORITY.index(stage.name.rstrip("0123456789").rstrip("-")))


def run_dir(w: Path, condition: str, seed: int) -> Path:
    return w / "pretrain" if condition == "drqbc" else w / f"finetune-{condition}-{seed}"


def paired(a: list[float], b: list[float]) -> dict:
    """The per-seed differences a - b, their mean and std (ddof 1) and a paired t-test (scipy.stats.ttest_rel)."""
    from scipy import stats

    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    test = stats.ttest_rel(a, b)
    finite = [v if math.isfinite(v) else None for v in (float(test.statistic), float(test.pvalue))]
    return {"per_seed": diffs, "mean": mean, "std": std, "t": finite[0], "df": n - 1, "p": finite[1]}


def _device_name(gpu: bool) -> str:
    if not gpu:
        import platform

        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CUDA (the machine the stages' logs name)"


def _pixel_size(path: Path) -> dict:
    from gta_pixel.pixelstore import PixelStore

    store = PixelStore.open(path)
    returns = store.episode_returns()
    return {"num_steps": store.num_steps, "num_episodes": store.num_episodes,
            "behaviour_return": float(returns.mean())}


def _generated(path: Path) -> int:
    from gta_data import TrajectoryStore

    return TrajectoryStore.open(path).num_transitions


def write_row(task: str, level: str, w: Path, scale: Scale, gpu: bool, tiny: bool, commit: str) -> dict:
    """row.json and row.md from the evaluations' eval.json files and stages.json."""
    seeds = parse_seeds(scale.seeds)
    evals = {c: {k: json.loads((run_dir(w, c, k) / "eval.json").read_text()) for k in seeds} for c in CONDITIONS}
    # dm_control has reference scores (score = return / 10); the fake task has none: its returns stand in
    normalized = all(e["seeds"][str(k)]["score"] is not None for c in CONDITIONS for k, e in evals[c].items())
    key = "score" if normalized else "mean_return"
    per_seed = {c: [float(evals[c][k]["seeds"][str(k)][key]) for k in seeds] for c in CONDITIONS}

    def summary(values: list[float]) -> dict:
        mean = sum(values) / len(values)
        return {"mean": mean, "std": math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))}

    stages = json.loads((w / "stages.json").read_text())  # wall times include the stopped calls' time
    pretrain_config = json.loads((w / "pretrain" / "config.json").read_text())
    row = {
        "dataset": f"{task}-{level}", "data": "fake random (--tiny)" if tiny else f"{task} {level}", "device": _device_name(gpu),
        "commit": commit, "measure": "normalized score" if normalized else "return (the task has no reference scores)",
        "seeds": seeds,
        "per_seed": {c: dict(zip(map(str, seeds), per_seed[c], strict=True)) for c in CONDITIONS},
        "scores": {c: summary(per_seed[c]) for c in CONDITIONS},
        "gta_minus_original": paired(per_seed["gta"], per_seed["original"]),
        "gta_minus_drqbc": paired(per_seed["gta"], per_seed["drqbc"]),
        "original_minus_drqbc": paired(per_seed["original"], per_seed["drqbc"]),
        "scale": {"dataset": _pixel_size(w / "pixels.zarr"), "episodes_requested": scale.episodes,
                  "frame_size": scale.size, "pretrain_steps": scale.pretrain_steps,
                  "std_duration_loop_steps": pretrain_config["drqbc"]["std_duration"],
                  "finetune_steps": scale.finetune_steps, "batch_size": scale.batch_size,
                  "hidden_dim": scale.hidden_dim, "diffusion_steps": scale.diffusion_steps, "network": scale.network,
                  "generated_per_seed": scale.generated,
                  "generated": {str(k): _generated(w / f"gta-{k}.zarr") for k in seeds},
                  "gta_preset": f"vd4rl-{level}", "eval_episodes": scale.eval_episodes,
                  "eval_max_steps": scale.eval_max_steps, "eval_episode_seeds": evals["drqbc"][seeds[0]]["episode_seeds"],
                  "arithmetic": pretrain_config.get("arithmetic")},
        "stage_wall_s": {k: v["wall_s"] for k, v in stages.items()},
    }
    s = row["scale"]
    n = s["dataset"]["num_steps"]
    lines = [f"### {row['dataset']} (DrQ+BC, {len(seeds)} seeds, {row['device']}, commit {commit})", "",
             f"Scale: data {row['data']}, {s['dataset']['num_episodes']} episodes ({n} transitions, "
             f"behaviour return {s['dataset']['behaviour_return']:.1f}); "
             f"pretraining {s['pretrain_steps']} updates per seed ({_std_phrase(s)}); GTA denoiser {s['diffusion_steps']} steps "
             f"({s['network']}), {s['generated_per_seed']} generated transitions per seed ({s['gta_preset']}); "
             f"fine-tuning {s['finetune_steps']} head updates per arm; evaluation {s['eval_episodes']} episodes per "
             f"seed on the same episode seeds. Measure: {row['measure']}.", "",
             "| seed | " + " | ".join(LABELS[c] for c in CONDITIONS) + " | GTA - original | GTA - DrQ+BC |",
             "|---|---|---|---|---|---|"]
    for i, k in enumerate(seeds):
        cells = [f"{per_seed[c][i]:.2f}" for c in CONDITIONS]
        diffs = [row["gta_minus_original"]["per_seed"][i], row["gta_minus_drqbc"]["per_seed"][i]]
        lines.append(f"| {k} | " + " | ".join(cells) + " | " + " | ".join(f"{d:+.2f}" for d in diffs) + " |")
    means = [f"{row['scores'][c]['mean']:.2f} +- {row['scores'][c]['std']:.2f}" for c in CONDITIONS]
    tests = [row["gta_minus_original"], row["gta_minus_drqbc"]]
    lines.append("| mean +- std (ddof 1) | " + " | ".join(means) + " | " + " | ".join(
        f"{d['mean']:+.2f} +- {d['std']:.2f}" for d in tests) + " |")
    lines.append("| paired t-test (t, p) | | | | " + " | ".join(
        "-" if d["t"] is None else f"t = {d['t']:.2f}, p = {d['p']:.2g}" for d in tests) + " |")
    write_row_files(w, row, lines)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task_level", metavar="TASK-LEVEL", help="e.g. walker_walk-medium (a dm_control task of V-D4RL "
                    "and a level with a C.4 preset)")
    add_row_options(ap, SCALE_OPTIONS, tiny="the fake task, tiny networks and steps")
    ap.add_argument("--policy-file", default=None, help="behaviour policy file of `gta-pixel make` (default: its own)")
    ap.add_argument("--finetune-eager", action="store_true",
                    help="--gpu: fine-tune without compile and CUDA graph (the stages not yet done)")
    add_commit_option(ap)
    args = ap.parse_args(argv)

    try:
        task, level = parse_task_level(args.task_level)
        scale = scale_from(args.tiny, {k: getattr(args, k) for k in SCALE_FIELDS})
        parse_seeds(scale.seeds)
        if args.jobs < 1:
            raise ValueError("--jobs must be >= 1")
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    w = args.workdir.resolve()
    w.mkdir(parents=True, exist_ok=True)
    commit = args.commit or git_commit()
    stages = build_stages(task, level, w, scale, args.gpu, args.tiny, args.policy_file, args.finetune_eager)
    return run_row(w, stages, args.jobs, args.stop_after_s, time.perf_counter(),
                   lambda: write_row(task, level, w, scale, args.gpu, args.tiny, commit))



if __name__ == "__main__":
    sys.exit(main())
