"""Run directories and atomic checkpoints (house style 5: self-describing runs, exact resume).

A run directory holds

    config.json            resolved configuration (train, window, EDM, network) + data facts + normaliser
    metrics.jsonl          append-only training metrics (one JSON object per logged step)
    checkpoints/latest     name of the newest complete checkpoint (replaced atomically)
    checkpoints/step-XXXXXXXXX/
        model.safetensors  raw network weights          ema.safetensors   EMA weights (used to sample)
        optimizer.pt       optimizer state_dict (tensors + plain scalars; loaded with weights_only=True)
        rng.safetensors    generator states of every rank (data order and loss noise)
        state.json         step and scalars

A checkpoint is written into a hidden temporary sibling and renamed into place, then ``latest`` is
replaced; a kill at any point leaves the previous checkpoint intact and referenced.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gta_data.jsonl import JsonlLog
from gta_diffusion.errors import DiffusionError

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG_NAME
    if not path.is_file():
        raise DiffusionError(f"{run_dir} is not a gta-diffusion run directory (no {CONFIG_NAME})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DiffusionError(f"{path} is not valid JSON ({exc.msg})") from None


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_checkpoint(run_dir: str | os.PathLike, step: int, *, model: dict[str, torch.Tensor],
                    ema: dict[str, torch.Tensor], optimizer: dict[str, Any], rng: dict[str, torch.Tensor],
                    scalars: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write checkpoint ``step`` atomically and keep the newest ``keep`` checkpoints."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:09d}"
    tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(_tensors(model), str(tmp / "model.safetensors"))
        save_file(_tensors(ema), str(tmp / "ema.safetensors"))
        torch.save(optimizer, tmp / "optimizer.pt")
        save_file(_tensors(rng), str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"step": step, **(scalars or {})}, indent=2) + "\n")
        final = root / name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest_tmp = root / f".latest.tmp-{uuid.uuid4().hex[:8]}"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, root / "latest")
    done = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in done[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    root = Path(run_dir) / "checkpoints"
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise DiffusionError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


def remove_partial(run_dir: str | os.PathLike) -> int:
    """Delete temporary checkpoint files left by a run killed while writing (call before resuming it)."""
    root = Path(run_dir) / "checkpoints"
    stale = [p for p in root.iterdir() if p.name.startswith(".") and ".tmp-" in p.name] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return len(stale)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Tensors and scalars of one checkpoint directory (optimizer state loaded with weights_only=True)."""
    try:
        return {
            "model": load_file(str(path / "model.safetensors"), device=str(device)),
            "ema": load_file(str(path / "ema.safetensors"), device=str(device)),
            "optimizer": torch.load(path / "optimizer.pt", map_location=device, weights_only=True),
            "rng": load_file(str(path / "rng.safetensors")),
            "state": json.loads((path / "state.json").read_text()),
        }
    except (OSError, RuntimeError, ValueError, SafetensorError) as exc:  # truncated or foreign files
        raise DiffusionError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc})".splitlines()[0]) from None


def truncate_metrics(run_dir: str | os.PathLike, step: int) -> None:
    """Drop metric lines logged after ``step`` (written after the checkpoint that a resume restarts from),
    so that a resumed run's metrics.jsonl reads as if the run had never stopped."""
    JsonlLog(Path(run_dir) / METRICS_NAME).truncate_after(step)
