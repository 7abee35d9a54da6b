"""What the ``gta-diffusion`` commands share, in both ``gta_diffusion.cli`` and ``gta_diffusion.baselines.cli``:
known errors as one line, the --log-to and --threads options, and the training loop of both models. A module of its
own so that the two command modules import it and not each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

__all__ = ["LOG_TO_HELP", "THREADS_HELP", "errors", "run_training", "sinks", "threads_note"]


def errors(debug: bool):
    """Known errors -> one line on stderr and exit code 1 (the traceback only with --debug): DiffusionError,
    StoreError and the config errors are ValueErrors."""
    from gta_data.cli_errors import one_line_errors

    return one_line_errors((ValueError, FileNotFoundError, NotADirectoryError), debug)


def sinks(log_to: str | None) -> tuple[str, ...] | None:
    """``--log-to`` checked before anything runs (None: not given; a resume keeps the run's own)."""
    from gta_data.metric_sinks import parse_sinks

    return None if log_to is None else parse_sinks(log_to, "gta-diffusion")


LOG_TO_HELP = ("Also copy the metrics to csv, tensorboard and/or wandb (comma-separated; tensorboard and wandb "
               "need the extras gta-diffusion[tensorboard], gta-diffusion[wandb]). Default: as the run being "
               "resumed, else none.")
THREADS_HELP = "CPU threads of torch (default on CPU: see the README's CPU notes; ignored on CUDA)."


def threads_note(dev: Any) -> str:
    import torch

    return f" ({torch.get_num_threads()} thread(s))" if dev.type == "cpu" else ""


def run_training(trainer: Any, out: Path, stop_after: int | None, *, show: bool = True) -> None:
    """The training loop of both models with a progress bar: to the end, to ``stop_after`` (then a checkpoint),
    or to a SIGINT/SIGTERM (a checkpoint at that step boundary, then exit code 128 + the signal)."""
    from gta_data.metric_sinks import MetricSinks
    from gta_data.progress import progress
    from gta_data.stop import StopSignals

    metric_sinks = MetricSinks(out, trainer.cfg.log_to if show else (), name=out.name, config=trainer.config)
    metric_sinks.rewind(trainer.step_count)  # as metrics.jsonl: a resume writes the lines after its checkpoint again

    def on_log(record: dict[str, Any]) -> None:
        metric_sinks.write(record["step"], "train", record)
        bar.update(info=f"loss {record['loss']:.4f}")

    with StopSignals() as signals, metric_sinks, progress("train", total=trainer.cfg.steps,
                                                          completed=trainer.step_count, enabled=show) as bar:
        trainer.train(stop_after, on_step=bar.update, on_log=on_log, stop=signals.requested)
        if trainer.step_count < trainer.cfg.steps:
            trainer.save()
    where = f"checkpoints in {out / 'checkpoints'}"
    if signals.requested():
        if show:
            typer.echo(f"interrupted by {signals.name} at step {trainer.step_count}: checkpoint saved; run the "
                       f"same command to resume; {where}")
        raise typer.Exit(signals.exit_code)
    if show:
        state = "done" if trainer.step_count >= trainer.cfg.steps else "stopped (resume with the same --out)"
        typer.echo(f"{state}: {trainer.step_count} steps; {where}")
