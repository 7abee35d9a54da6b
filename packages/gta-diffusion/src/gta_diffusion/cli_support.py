"""What the ``gta-diffusion`` commands share, in both ``gta_diffusion.cli`` and ``gta_diffusion.baselines.cli``:
known errors as one line, the progress bar, and the training loop of both models behind it. A module of its
own so that the two command modules import it and not each other."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

__all__ = ["errors", "progress", "run_training"]


@contextmanager
def errors(debug: bool) -> Iterator[None]:
    """Known errors -> one line on stderr and exit code 1 (the traceback only with --debug)."""
    try:
        yield
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:  # DiffusionError, StoreError, config errors
        if debug:
            raise
        typer.echo(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", err=True)
        raise typer.Exit(1) from None


def progress(enabled: bool):
    """The rich progress bar of the long commands (renders nothing when not ``enabled``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.fields[info]}"), disable=not enabled, transient=False)


def run_training(trainer: Any, out: Path, stop_after: int | None, *, show: bool = True) -> None:
    """The training loop of both models with a progress bar: to the end, to ``stop_after`` (then a checkpoint),
    or to a SIGINT/SIGTERM (a checkpoint at that step boundary, then exit code 128 + the signal)."""
    from gta_data.stop import StopSignals

    with StopSignals() as signals, progress(show) as bar:
        task = bar.add_task("train", total=trainer.cfg.steps, completed=trainer.step_count, info="")
        trainer.train(stop_after, on_step=lambda s: bar.update(task, completed=s),
                      on_log=lambda r: bar.update(task, info=f"loss {r['loss']:.4f}"), stop=signals.requested)
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
