"""One row of the paper's Table 1 on locally made data: None, S4RL, SynthER and GTA, then data quality.

    python tools/reproduce.py halfcheetah-medium --workdir runs/halfcheetah-medium --gpu
    python tools/reproduce.py pointmaze-large --workdir runs/pointmaze-large --gpu
    python tools/reproduce.py pointmaze-umaze --workdir /tmp/row --tiny     # minutes on a CPU

Every stage is a command of one of the packages' CLIs, reading and writing stores and run directories in
``--workdir``, so each can be rerun or replaced by hand:

    data            gta-data make DATASET                               original.zarr
    gta-model       gta-diffusion train (GTA's denoiser, Sec. 4.1)      gta-model/
    gta             gta-diffusion augment --method gta (Sec. 4.2)       gta.zarr
    s4rl            gta-diffusion augment --method s4rl                 s4rl.zarr
    synther-model   gta-diffusion train --model synther                 synther-model/
    synther         gta-diffusion augment --method synther              synther.zarr
    rl              gta-rl train --arm none/s4rl/synther/gta (one stack) rl/<arm>/
    quality-<m>     gta-eval quality (Sec. 5.4) of each augmented store quality-<m>/
    compare         gta-eval compare --baseline gta (Welch's t-tests)   compare/
    row             this script: the row as JSON and markdown           row.json, row.md

The arms follow the paper: None trains on the original data, S4RL and GTA on the original data plus 5M
augmented transitions, SynthER on its 5M generated transitions alone (C.1). TD3+BC for locomotion, IQL for
the mazes. Stages run as soon as the stages they read are done (``--jobs`` at once). A stage that finished
is recorded in ``stages.json`` with its command and wall time and is not run again; an interrupted stage
continues where its CLI can (training resumes from its checkpoints; a store is written whole or not at
all). ``--stop-after-s`` ends the stages still running after that many seconds (diffusion training saves a
checkpoint; RL keeps its last one) so that a rerun of the same command continues: that is how a row is
spread over time-limited GPU sessions. Many rows at once, over the GPUs of a host or a Ray cluster:
tools/sweep.py (docs/sweeps.md).

A row can also be made in parts, each a shorter session of its own, then merged where the parts' small files
meet (the arms of a stack train as they would alone, so a row merged from parts equals the row made whole):

    python tools/reproduce.py hopper-medium --workdir runs/hm-a --gpu --methods none,gta   # the answer: None vs GTA
    python tools/reproduce.py hopper-medium --workdir runs/hm-b --gpu --methods s4rl,synther
    python tools/reproduce.py hopper-medium --workdir runs/hm --merge runs/hm-a runs/hm-b   # CPU, seconds

A part runs only its methods' stages (the RL arms of its methods as one stack) and writes a row of its methods.
``--merge`` needs of each part only ``row.json``, ``stages.json``, ``compare/results.json``, ``quality-<m>/``
and the run directories' ``config.json``, ``results.json`` and ``seed_<k>/metrics.jsonl`` (no stores, no
checkpoints); it checks that the parts ran the same dataset and protocol and together hold every method once,
then compares the four arms (each labelled with the task and method its part's comparison read from its
stores).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gta_rl.algorithms import match_preset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage_scheduler import (  # noqa: E402
    Stage,
    add_commit_option,
    add_row_options,
    git_commit,
    read_json,
    run_row,
    write_json,
    write_row_files,
)

# The paper's Table 1 (TD3+BC for locomotion, IQL for maze2d): mean +- std over 8 seeds, D4RL data.
PAPER = {
    "halfcheetah-medium": {"none": (48.42, 0.62), "s4rl": (48.74, 0.31), "synther": (49.16, 0.39), "gta": (57.84, 0.51)},
    "halfcheetah-medium-replay": {"none": (44.64, 0.71), "s4rl": (44.53, 0.30), "synther": (45.57, 0.34),
                                  "gta": (50.04, 0.84)},
    "halfcheetah-medium-expert": {"none": (89.48, 5.50), "s4rl": (90.78, 4.65), "synther": (85.47, 11.35),
                                  "gta": (93.13, 3.07)},
    "hopper-medium": {"none": (61.04, 3.18), "s4rl": (59.34, 3.50), "synther": (63.70, 3.69), "gta": (69.57, 4.05)},
    "hopper-medium-replay": {"none": (65.69, 24.41), "s4rl": (67.39, 23.81), "synther": (78.81, 15.80),
                             "gta": (89.31, 16.84)},
    "hopper-medium-expert": {"none": (104.08, 5.81), "s4rl": (106.10, 7.24), "synther": (98.99, 11.27),
                             "gta": (110.40, 4.04)},
    "walker2d-medium": {"none": (84.58, 1.92), "s4rl": (84.63, 2.44), "synther": (85.43, 1.14), "gta": (86.69, 0.89)},
    "walker2d-medium-replay": {"none": (84.11, 4.12), "s4rl": (83.42, 4.70), "synther": (90.67, 1.56),
                               "gta": (93.82, 1.74)},
    "walker2d-medium-expert": {"none": (110.23, 0.37), "s4rl": (110.21, 0.35), "synther": (109.95, 0.32),
                               "gta": (110.86, 0.34)},
    "pointmaze-umaze": {"none": (37.41, 2.83), "s4rl": (37.69, 3.36), "synther": (39.00, 2.26), "gta": (41.68, 1.41)},
    "pointmaze-medium": {"none": (32.80, 1.49), "s4rl": (34.82, 3.16), "synther": (34.27, 2.51), "gta": (37.78, 1.66)},
    "pointmaze-large": {"none": (58.99, 9.16), "s4rl": (62.93, 3.47), "synther": (61.74, 4.51), "gta": (76.56, 4.70)},
}
METHODS = ("none", "s4rl", "synther", "gta")
AUGMENTED = ("s4rl", "synther", "gta")


@dataclass(frozen=True)
class Scale:
    """The protocol: the paper's where it says so; ``--tiny`` shrinks it to a CPU smoke run."""

    size: int | None = None  # dataset transitions (None: the recipe's)
    diffusion_steps: int = 40_000  # GTA denoiser steps (paper: 1M; see RESULTS.md for what this costs)
    network: str = "fast-mixer"  # GTA denoiser of gta-diffusion train --network
    synther_steps: int = 100_000  # SynthER's own protocol
    synther_network: str = "synther"
    generated: int = 5_000_000  # transitions per augmented store (paper: 5M)
    rl_steps: int = 1_000_000  # gradient steps per seed (paper: 1M)
    batch_size: int = 1024
    seeds: str = "0-7"
    eval_every: int = 50_000  # the row reports the final evaluation; fewer in-run evaluations save CPU
    eval_episodes: int | None = None  # per seed and evaluation (None: gta-rl's default, 10; mazes 100)
    quality_samples: int = 1_000_000
    quality_segments: int = 2000
    sampler_batch: int | None = None  # GTA sampler windows per call (None: the CLI's default)
    sampler_steps: int | None = None  # EDM sampler steps of GTA and SynthER (None: the models' 128)


TINY = Scale(size=3000, diffusion_steps=30, network="fast-mixer-small", synther_steps=30, synther_network="synther-small",
             generated=2000, rl_steps=40, batch_size=64, seeds="0-1", eval_every=20, eval_episodes=2, quality_samples=500,
             quality_segments=20, sampler_batch=256, sampler_steps=8)


# The scale options of the command line (a sweep's --variant takes the same names): option -> (type, help).
SCALE_OPTIONS = {
    "--diffusion-steps": (int, None),
    "--network": (str, "GTA denoiser network (gta-diffusion train --network)"),
    "--synther-steps": (int, None),
    "--generated": (int, "transitions per augmented store"),
    "--rl-steps": (int, None),
    "--seeds": (str, None),
    "--eval-every": (int, None),
    "--size": (int, "dataset transitions (default: the recipe's)"),
}
SCALE_FIELDS = tuple(option[2:].replace("-", "_") for option in SCALE_OPTIONS)


def scale_from(tiny: bool, given: dict) -> Scale:
    """The protocol (or ``TINY``) with the options given (None: not given) in place of its own values."""
    base = TINY if tiny else Scale()
    return Scale(**{**base.__dict__, **{k: v for k, v in given.items() if v is not None}})


def parse_methods(text: str) -> tuple[str, ...]:
    """``--methods``: a comma list of the row's methods, returned in the row's order (none, s4rl, synther, gta)."""
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    unknown = sorted(set(names) - set(METHODS))
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"--methods {text!r}: give each of {', '.join(METHODS)} at most once"
                         + (f" ({', '.join(unknown)} is not one)" if unknown else ""))
    return tuple(m for m in METHODS if m in names)


def known_dataset(dataset: str) -> bool:
    return dataset in PAPER or dataset.startswith(("halfcheetah", "hopper", "walker2d", "pointmaze"))


def algorithm_for(dataset: str) -> str:
    return "iql" if "maze" in dataset else "td3bc"


def gta_preset(dataset: str) -> str:
    """gta-diffusion's dataset preset (mu, alpha, reweighting of Tables 8-9) for a gta-data recipe."""
    return "maze2d" if dataset.startswith("pointmaze") else dataset


def cli(package: str) -> list[str]:
    """The argv prefix of a package's CLI: its console script beside this Python, else the module."""
    script = Path(sys.executable).parent / f"gta-{package}"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", f"from gta_{package}.cli import app; app()"]


def build_stages(dataset: str, w: Path, scale: Scale, gpu: bool, methods: tuple[str, ...] = METHODS) -> list[Stage]:
    """The row's stages; with ``methods`` a part of the row: the stages those methods need, their arms as one stack."""
    device = ["--device", "cuda" if gpu else "cpu"]
    size = ["--size", str(scale.size)] if scale.size else []
    dfast = ["--bf16", "--compile", "--cuda-graph"] if gpu else []
    afast = ["--bf16", "--compile", "--compile-mode", "reduce-overhead"] if gpu else []
    sfast = ["--bf16", "--compile"] if gpu else []  # SynthER's sampler (compute-bound: no graph needed)
    rfast = ["--fullgraph", "--cuda-graph", "--tf32", "--bf16", "--fused-mlp", "--eval-async"] if gpu else []
    if algorithm_for(dataset) != "td3bc":
        rfast = [f for f in rfast if f != "--fused-mlp"]  # IQL's networks: no 256-256 pair of the kernel's shape
    sampler = ["--batch-size", str(scale.sampler_batch)] if scale.sampler_batch else []
    steps = ["--num-steps", str(scale.sampler_steps)] if scale.sampler_steps else []
    episodes = ["--eval-episodes", str(scale.eval_episodes)] if scale.eval_episodes is not None else []
    algorithm = algorithm_for(dataset)
    # One agent config serves the four arms: the preset of the dataset, not of each arm's first store.
    preset = match_preset(algorithm, dataset) or "none"
    orig = str(w / "original.zarr")
    quality_device = ["--device", "cuda" if gpu else "cpu"]
    stages = [
        Stage("data", (), [*cli("data"), "make", dataset, "--out", orig, *size], store=orig),
        Stage("gta-model", ("data",), [*cli("diffusion"), "train", "--data", orig, "--out", str(w / "gta-model"),
                                       "--network", scale.network, "--steps", str(scale.diffusion_steps),
                                       "--checkpoint-every", str(max(1, min(5000, scale.diffusion_steps))),
                                       *dfast, *device], gpu=gpu),
        Stage("gta", ("gta-model",), [*cli("diffusion"), "augment", "--method", "gta", "--model", str(w / "gta-model"),
                                      "--data", orig, "--dataset-preset", gta_preset(dataset), "--num-transitions",
                                      str(scale.generated), "--out", str(w / "gta.zarr"), *sampler, *steps, *afast, *device],
              store=str(w / "gta.zarr"), gpu=gpu),
        Stage("s4rl", ("data",), [*cli("diffusion"), "augment", "--method", "s4rl", "--data", orig,
                                  "--num-transitions", str(scale.generated), "--out", str(w / "s4rl.zarr")],
              store=str(w / "s4rl.zarr")),
        Stage("synther-model", ("data",), [*cli("diffusion"), "train", "--model", "synther", "--data", orig, "--out",
                                           str(w / "synther-model"), "--network", scale.synther_network, "--steps",
                                           str(scale.synther_steps), *dfast, *device], gpu=gpu),
        Stage("synther", ("synther-model",), [*cli("diffusion"), "augment", "--method", "synther", "--model",
                                              str(w / "synther-model"), "--num-transitions", str(scale.generated),
                                              "--out", str(w / "synther.zarr"), *steps, *sfast, *device],
              store=str(w / "synther.zarr"), gpu=gpu),
    ]
    makers = {"gta": ("gta-model", "gta"), "s4rl": ("s4rl",), "synther": ("synther-model", "synther")}
    unused = {name for m, names in makers.items() if m not in methods for name in names}
    stages = [s for s in stages if s.name not in unused]
    arms = {"none": [orig], "s4rl": [orig, str(w / "s4rl.zarr")], "synther": [str(w / "synther.zarr")],
            "gta": [orig, str(w / "gta.zarr")]}
    arms = {m: paths for m, paths in arms.items() if m in methods}
    stages.append(Stage(
        "rl", ("data", *(m for m in AUGMENTED if m in methods)),
        [*cli("rl"), "train", algorithm, *(a for m, paths in arms.items() for a in ("--arm", f"{m}={','.join(paths)}")),
         "--out", str(w / "rl"), "--seeds", scale.seeds, "--steps", str(scale.rl_steps), "--batch-size",
         str(scale.batch_size), "--eval-every", str(scale.eval_every), *episodes, "--preset", preset, *rfast,
         *device],
        resume_flag=["--resume"], gpu=gpu))
    for m in (m for m in AUGMENTED if m in methods):
        stages.append(Stage(f"quality-{m}", (m,), [*cli("eval"), "quality", "--original", orig, "--augmented",
                                                   str(w / f"{m}.zarr"), "--out", str(w / f"quality-{m}"),
                                                   "--samples", str(scale.quality_samples), "--segments",
                                                   str(scale.quality_segments), *quality_device, "--overwrite"],
                            gpu=gpu))
    stages.append(compare_stage(w, methods, ("rl",)))
    return stages


def compare_stage(w: Path, methods: tuple[str, ...], needs: tuple[str, ...]) -> Stage:
    """gta-eval compare of the arms ``w/rl/<method>``: Welch's t-tests against GTA when it is one of them."""
    baseline = ["--baseline", "GTA"] if "gta" in methods else []
    return Stage("compare", needs, [*cli("eval"), "compare", *(str(w / "rl" / m) for m in methods), *baseline,
                                    "--out", str(w / "compare"), "--overwrite"])


def _device_name(gpu: bool) -> str:
    if not gpu:
        import platform

        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    import torch

    if not torch.cuda.is_available():  # a sweep's driver on a machine other than its GPU stages' (Ray)
        return "CUDA (the machines the stages' logs name)"
    return torch.cuda.get_device_name()


def _fmt(mean_std) -> str:
    return "-" if mean_std is None else f"{mean_std[0]:.2f} +- {mean_std[1]:.2f}"


def write_row(dataset: str, w: Path, scale: Scale, gpu: bool, commit: str, methods: tuple[str, ...] = METHODS,
              device: str | None = None, parts: list[dict] | None = None) -> dict:
    """row.json and row.md from the compare and quality reports and stages.json: the row of ``methods`` (a part's
    methods, or all four); ``device`` and ``parts`` are those of a merged row (``--merge``)."""
    compare = json.loads((w / "compare" / "results.json").read_text())
    cells = {c["method"].lower(): c for c in compare["table"]}  # gta-eval's labels: none, S4RL, SynthER, GTA
    welch = {t["method"].lower(): t for t in compare["welch"]
             if str(t.get("baseline")).lower() == "gta" and t.get("task") != "average"}
    augmented = tuple(m for m in AUGMENTED if m in methods)
    quality = {}
    for m in augmented:
        q = json.loads((w / f"quality-{m}" / "quality.json").read_text())
        # gta-eval's headline: over the rows whose state the simulator can be set to exactly (Hopper and
        # Walker2d clip velocities in their observations), all rows beside it
        quality[m] = {"oracle_reward": q.get("oracle_reward"), "generated_reward": q.get("generated_reward"),
                      "dynamic_mse": q.get("dynamic_mse"), "novelty": q.get("novelty_state_action"),
                      "exact_samples": q.get("exact_samples"), "with_clipped_states": q.get("with_clipped_states")}
    stages = json.loads((w / "stages.json").read_text())  # wall times include the stopped calls' time
    missing = [m for m in methods if m not in cells]
    if missing:
        raise SystemExit(f"error: the comparison has no {', '.join(missing)} row")
    row = {
        "dataset": dataset, "algorithm": algorithm_for(dataset), "device": device or _device_name(gpu),
        "commit": commit, "methods": list(methods),
        "scores": {m: {"mean": cells[m]["mean"], "std": cells[m]["std"], "seeds": cells[m]["seeds"]} for m in methods},
        "welch_gta_vs": {m: {"t": welch[m].get("t"), "df": welch[m].get("df"), "p": welch[m].get("p_value")}
                         for m in methods if m in welch},
        "quality": quality, "paper": PAPER.get(dataset),
        "protocol": protocol_of(scale),
        "stage_wall_s": {k: v["wall_s"] for k, v in stages.items()},
        **({"parts": parts} if parts else {}),
    }
    paper = PAPER.get(dataset) or {}
    part = "" if methods == METHODS else f", part: {', '.join(methods)}"
    lines = [f"### {dataset} ({row['algorithm']}, {row['device']}, commit {commit}{part})", "",
             "| method | score: mean +- std (ddof=1) | seeds | Welch p, GTA vs method | paper (D4RL) |",
             "|---|---|---|---|---|"]
    for m in methods:
        s = row["scores"][m]
        p = row["welch_gta_vs"].get(m, {}).get("p")
        lines.append(f"| {m} | {s['mean']:.2f} +- {s['std']:.2f} | {s['seeds']} | "
                     f"{'-' if m == 'gta' or p is None else f'{p:.2g}'} | {_fmt(paper.get(m))} |")
    if augmented:
        lines += ["", "| augmented store | oracle reward | generated reward | dynamic MSE | novelty (s, a) |",
                  "|---|---|---|---|---|"]
    for m in augmented:
        q = quality[m]
        cols = [q[k] for k in ("oracle_reward", "generated_reward", "dynamic_mse", "novelty")]
        lines.append(f"| {m} | " + " | ".join("-" if v is None else f"{v:.4g}" for v in cols) + " |")
    write_row_files(w, row, lines)
    return row


# What --merge needs of each arm's run directory in a part, beside its seed_<k>/metrics.jsonl.
RUN_FILES = ("config.json", "results.json")


def gather_parts(dataset: str, w: Path, scale: Scale, parts: list[Path]) -> tuple[str, list[dict]]:
    """Copy the parts' arms and quality reports into ``w`` and their stages into ``w/stages.json`` (named
    ``STAGE[methods]``), every check made before anything is written; returns the device line and the parts."""
    rows = []
    for part in parts:
        path = part / "row.json"
        if not path.is_file() or not (part / "stages.json").is_file():
            raise SystemExit(f"error: {part} is not a finished part of a row (no row.json and stages.json in it)")
        row = json.loads(path.read_text())
        if row.get("dataset") != dataset:
            raise SystemExit(f"error: {part} is a row of {row.get('dataset')!r}, not {dataset!r}")
        rows.append((part, row))
    protocols = {json.dumps(r["protocol"], sort_keys=True) for _, r in rows}
    if len(protocols) > 1:
        raise SystemExit("error: the parts ran different protocols: " + "; ".join(
            f"{p}: {json.dumps(r['protocol'], sort_keys=True)}" for p, r in rows))
    mine = json.dumps(protocol_of(scale), sort_keys=True)
    if protocols != {mine}:
        raise SystemExit(f"error: the parts ran {protocols.pop()}, this command's scale is {mine} (give the "
                         "parts' scale options)")
    held = [m for _, r in rows for m in r.get("methods", METHODS)]
    if sorted(held) != sorted(METHODS):
        raise SystemExit(f"error: the parts hold {', '.join(held) or 'nothing'}; a row needs each of "
                         f"{', '.join(METHODS)} once")
    labels = {}
    for part, row in rows:
        try:  # the labels the part's comparison gave its arms, read from their stores (which stay behind)
            runs = json.loads((part / "compare" / "results.json").read_text())["runs"]
        except (OSError, ValueError, KeyError):
            raise SystemExit(f"error: {part / 'compare' / 'results.json'} is missing or not a comparison") from None
        for m in row.get("methods", METHODS):
            run = part / "rl" / m
            found = [r for r in runs if Path(str(r.get("source"))).name == m]
            if len(found) != 1:
                raise SystemExit(f"error: {part / 'compare' / 'results.json'} has no arm {m}")
            labels[m] = {k: found[0][k] for k in ("task", "method", "mu", "alpha") if found[0].get(k) is not None}
            lacking = [f for f in RUN_FILES if not (run / f).is_file()]
            if lacking or not any(run.glob("seed_*/metrics.jsonl")):
                raise SystemExit(f"error: {run} lacks {', '.join(lacking) or 'seed_<k>/metrics.jsonl'}")
            if m in AUGMENTED and not (part / f"quality-{m}" / "quality.json").is_file():
                raise SystemExit(f"error: {part / f'quality-{m}'} has no quality.json")
    w.mkdir(parents=True, exist_ok=True)
    stages = {}  # this merge's parts only (an earlier merge into ``w`` is replaced)
    for part, row in rows:
        label = ",".join(row.get("methods", METHODS))
        for m in row.get("methods", METHODS):
            dst = w / "rl" / m
            shutil.rmtree(dst, ignore_errors=True)
            dst.mkdir(parents=True)
            shutil.copy2(part / "rl" / m / "results.json", dst / "results.json")
            config = json.loads((part / "rl" / m / "config.json").read_text())
            write_json(dst / "config.json", {**config, **labels[m]})  # labelled as gta-eval read the stores
            for metrics in (part / "rl" / m).glob("seed_*/metrics.jsonl"):
                (dst / metrics.parent.name).mkdir()
                shutil.copy2(metrics, dst / metrics.parent.name / metrics.name)
            if m in AUGMENTED:
                shutil.rmtree(w / f"quality-{m}", ignore_errors=True)
                shutil.copytree(part / f"quality-{m}", w / f"quality-{m}")
        for name, entry in json.loads((part / "stages.json").read_text()).items():
            if name != "compare":
                stages[f"{name}[{label}]"] = entry
    write_json(w / "stages.json", stages)
    devices = sorted({r["device"] for _, r in rows})
    return "; ".join(devices), [{"methods": r.get("methods", list(METHODS)), "commit": r["commit"],
                                 "device": r["device"], "workdir": str(p)} for p, r in rows]


def protocol_of(scale: Scale) -> dict:
    """The protocol fields of a row (what parts must share to be merged)."""
    return {"diffusion_steps": scale.diffusion_steps, "network": scale.network, "synther_steps": scale.synther_steps,
            "generated": scale.generated, "rl_steps": scale.rl_steps, "batch_size": scale.batch_size,
            "seeds": scale.seeds, "eval_every": scale.eval_every, "dataset_size": scale.size,
            "quality_samples": scale.quality_samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", help="a gta-data recipe: halfcheetah-medium, hopper-medium-replay, pointmaze-large, ...")
    add_row_options(ap, SCALE_OPTIONS, tiny="tiny data, networks and step counts")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="a part of the row: these methods' stages only (merge the parts with --merge)")
    ap.add_argument("--merge", type=Path, nargs="+", default=None, metavar="PART",
                    help="the workdirs of parts made with --methods: one row of them in --workdir (CPU, seconds)")
    add_commit_option(ap)
    args = ap.parse_args(argv)

    scale = scale_from(args.tiny, {k: getattr(args, k) for k in SCALE_FIELDS})
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if not known_dataset(args.dataset):
        ap.error(f"no Table 1 row for {args.dataset!r} (choose from {', '.join(PAPER)})")
    try:
        methods = parse_methods(args.methods)
    except ValueError as exc:
        ap.error(str(exc))
    w = args.workdir
    if args.merge:
        if methods != METHODS:
            ap.error("--merge makes the whole row: leave out --methods")
        if any(k != "compare" and "[" not in k for k in read_json(w / "stages.json", {})):
            ap.error(f"{w} is the workdir of a row's stages: merge into another")
        device, parts = gather_parts(args.dataset, w, scale, args.merge)
        commit = args.commit or ",".join(dict.fromkeys(p["commit"] for p in parts))
        return run_row(w, [compare_stage(w, METHODS, ())], 1, None, time.perf_counter(),
                       lambda: write_row(args.dataset, w, scale, args.gpu, commit, device=device, parts=parts))
    w.mkdir(parents=True, exist_ok=True)
    commit = args.commit or git_commit()
    stages = build_stages(args.dataset, w, scale, args.gpu, methods)
    return run_row(w, stages, args.jobs, args.stop_after_s, time.perf_counter(),
                   lambda: write_row(args.dataset, w, scale, args.gpu, commit, methods))


if __name__ == "__main__":
    sys.exit(main())
