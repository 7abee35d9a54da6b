"""The run directory of gta-pixel's DrQ+BC stages: what ``pretrain`` and ``finetune`` write and what ``encode``,
``finetune`` and ``evaluate`` read.

    run/config.json               format, stage (pretrain | finetune), DrQ+BC settings, seeds, frame and action
                                  shapes, the pixel task spec and reference scores, the data it was trained on
                                  (a finetune run: also its base run and that run's checkpoint sha256)
    run/checkpoint.safetensors    every seed's networks in the stacked layout (``model.*``: parameter names of
                                  :class:`gta_pixel.drqbc.DrQBCNets` with a leading seed axis), optimizer
                                  moments (``optim.*``), step counters; written atomically
    run/metrics.jsonl             append-only training log, one line per seed and logging step
    run/eval.json                 the latest ``evaluate`` result

Both stages store the whole networks, so every run directory can be encoded with or evaluated alone.

Arithmetic: ``config.json`` records whether the encoder and trunk products ran under bf16 autocast
(``arithmetic.bf16``, chosen at pretraining; a finetune run copies its base run's config, and a resumed
pretraining keeps it). It is the one source of truth for every later use of the run's networks: ``encode`` and
``evaluate`` compute them as recorded (:func:`load_agent`), so the latents the heads are fine-tuned on, the
latents they act on at evaluation and the features pretraining trained the trunks on all come from the same
arithmetic. The heads themselves, LayerNorm and the losses are fp32 in every case.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from gta_pixel.drqbc import DrQBCConfig
from gta_pixel.drqbc_fast import DrQBCStack
from gta_pixel.errors import RunError
from gta_rl.checkpoint import load_checkpoint, save_checkpoint, write_json

FORMAT = "gta-pixel-drqbc-run"
CONFIG = "config.json"
CHECKPOINT = "checkpoint.safetensors"
METRICS = "metrics.jsonl"
EVAL = "eval.json"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(run: Path) -> dict[str, Any]:
    """A run directory's config.json; :class:`RunError` if ``run`` holds no gta-pixel DrQ+BC run."""
    path = Path(run) / CONFIG
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunError(f"{run} holds no gta-pixel run (no {CONFIG})") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read {path} ({type(exc).__name__})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise RunError(f"{run} is not a gta-pixel DrQ+BC run directory ({CONFIG} lacks format {FORMAT!r})")
    return config


def write_config(run: Path, config: dict[str, Any]) -> None:
    write_json(Path(run) / CONFIG, {"format": FORMAT, **config})


def drqbc_config(config: dict[str, Any]) -> DrQBCConfig:
    known = {f.name for f in fields(DrQBCConfig)}
    return DrQBCConfig(**{k: v for k, v in config["drqbc"].items() if k in known})


def run_bf16(config: dict[str, Any]) -> bool:
    """Whether a run's encoder and trunk products compute under bf16 autocast (its ``arithmetic.bf16``; fp32
    where a config does not say)."""
    arithmetic = config.get("arithmetic")
    return bool(arithmetic.get("bf16", False)) if isinstance(arithmetic, dict) else False


def new_config(stage: str, cfg: DrQBCConfig, agent: DrQBCStack, task: dict[str, Any],
               ref_scores: tuple[float, float] | None, **extra: Any) -> dict[str, Any]:
    return {"stage": stage, "drqbc": asdict(cfg), "seeds": agent.seed_list, "obs_shape": list(agent.obs_shape),
            "act_dim": agent.act_dim, "task": task,
            "ref_scores": None if ref_scores is None else list(ref_scores), **extra}


def check_out(out: Path, resume: bool) -> None:
    """``out`` may receive a new run (absent or empty), or holds one to resume when ``resume``. An earlier
    start that saved nothing (its config and log lines, no checkpoint: stopped or killed before its first
    checkpoint) is cleared for the new start, so that rerunning the same command works."""
    out = Path(out)
    ckpt = out / CHECKPOINT
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a run directory")
    if resume and not ckpt.exists():
        raise RunError(f"nothing to resume in {out} (no {CHECKPOINT})")
    if resume or not out.exists():
        return
    entries = list(out.iterdir())
    if entries and {e.name for e in entries} <= {CONFIG, METRICS} and _holds_run_config(out):
        for e in entries:
            e.unlink()
    elif entries:
        raise RunError(f"{out} is not empty (pass --resume to continue a run there, or choose another --out)")


def _holds_run_config(out: Path) -> bool:
    try:
        return json.loads((out / CONFIG).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save(run: Path, agent: DrQBCStack, meta: dict[str, Any], extra: dict[str, torch.Tensor] | None = None) -> None:
    """The agent's networks, optimizer moments and step (``model.*``, ``optim.*``) plus ``extra`` tensors."""
    save_checkpoint(Path(run) / CHECKPOINT, {**agent.full_state_dict(), **(extra or {})}, meta)


def load_agent(run: Path, device: torch.device | str = "cpu", *, channels_last: bool = False,
               seeds: list[int] | None = None) -> tuple[DrQBCStack, dict[str, Any], dict[str, torch.Tensor]]:
    """(agent with the networks of every seed of the run, or of those in ``seeds``, computing in the run's
    arithmetic (:func:`run_bf16`); the run's config; the checkpoint's tensors). Optimizer moments are left in
    the tensors (each stage reads its own)."""
    config = read_config(run)
    bf16 = run_bf16(config)
    state, _ = load_checkpoint(Path(run) / CHECKPOINT)
    run_seeds = [int(s) for s in config["seeds"]]
    chosen = run_seeds if seeds is None else [int(s) for s in seeds]
    missing = [s for s in chosen if s not in run_seeds]
    if missing:
        raise RunError(f"{run} has seeds {run_seeds}, not {missing}")
    agent = DrQBCStack(tuple(config["obs_shape"]), int(config["act_dim"]), chosen, drqbc_config(config), device,
                       bf16=bf16, channels_last=channels_last, init=False)
    rows = torch.tensor([run_seeds.index(s) for s in chosen])
    model = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    try:
        agent.load_state_dict({k: (v if k == "step" else v[rows]) for k, v in model.items()})
    except RuntimeError as exc:
        raise RunError(f"{run}: the checkpoint does not fit its config ({str(exc).splitlines()[0]})") from None
    return agent, config, state


def append_metrics(run: Path, step: int, seeds: list[int], metrics: dict[str, list[float]]) -> None:
    """One JSON line per seed: the step and the mean of each metric since the previous line."""
    with open(Path(run) / METRICS, "a") as f:
        for k, seed in enumerate(seeds):
            f.write(json.dumps({"step": step, "seed": seed, **{m: v[k] for m, v in metrics.items()}}) + "\n")


def drop_metrics_after(run: Path, step: int) -> None:
    """Forget log lines written after the checkpoint a resumed run restarts from (they will be written again)."""
    path = Path(run) / METRICS
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))
