"""The baselines' commands (GTA Sec. 5.1, appendix C.1), called by the ``gta-diffusion`` app:

    augment --method s4rl     -> :func:`augment_s4rl_command`
    train --model synther     -> :func:`train_synther`
    augment --method synther  -> :func:`augment_synther_command`

Known errors become one line on stderr and exit code 1 (``gta_diffusion.cli_support``, shared with
``gta_diffusion.cli``); heavy modules are imported inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from gta_diffusion.cli_support import errors as _errors
from gta_diffusion.cli_support import run_training
from gta_diffusion.cli_support import threads_note as _threads_note

__all__ = ["augment_s4rl_command", "train_synther", "augment_synther_command"]


def augment_s4rl_command(*, data: Path, out: Path, overwrite: bool, debug: bool, **given: Any) -> None:
    """S4RL: copies of the source with N(0, sigma^2) noise on every state (GTA appendix C.1). ``given``: the
    :class:`~gta_diffusion.baselines.s4rl.S4RLConfig` fields given on the command line (None: its default)."""
    with _errors(debug):
        from gta_data.progress import progress
        from gta_diffusion.baselines.s4rl import S4RLConfig, augment_s4rl

        cfg = S4RLConfig(**{k: v for k, v in given.items() if v is not None})
        cfg.check()
        with progress("s4rl", total=cfg.num_transitions, unit="transitions") as bar:
            bar.update(info=f"sigma={cfg.sigma:g}")
            store = augment_s4rl(data, out, cfg, overwrite=overwrite, progress=bar.advance)
        typer.echo(f"wrote {store.path}: {store.num_transitions} transitions in {store.num_episodes} segments")


def train_synther(data: Path | None, out: Path, given: dict[str, Any], *, device: str | None,
                  stop_after: int | None, threads: int | None, ignored: str | None = None) -> None:
    """``gta-diffusion train --model synther``: train (or resume) SynthER's unconditional transition diffusion
    model. ``given``: the TrainConfig settings given on the command line (None: SynthER's default, or as the
    saved run); called inside the command's error handler."""
    from gta_data import TrajectoryStore
    from gta_data.accel.devices import resolve_device
    from gta_diffusion.baselines.synther import create_synther_trainer, synther_train_config
    from gta_diffusion.errors import DiffusionError
    from gta_diffusion.threads import set_cpu_threads
    from gta_diffusion.training import apply_resume_options

    resuming = (out / "config.json").exists()
    cfg, changes = None, []
    if resuming:
        changes = apply_resume_options(out, steps=given["steps"], batch_size=given["batch_size"],
                                       preset=given["preset"], log_to=given["log_to"], model="synther")
    elif data is not None:
        cfg = synther_train_config(TrajectoryStore.open(data).num_transitions, **given)
        cfg.check()
    dev = resolve_device(device, DiffusionError)
    set_cpu_threads(threads, dev)
    trainer = create_synther_trainer(out, data, cfg, device=dev)
    facts = trainer.config["data"]
    verb = f"resuming at step {trainer.step_count} (saved config is used)" if resuming else "new run"
    for line in changes:
        typer.echo(f"changed on resume: {line}")
    if ignored:
        typer.echo(ignored)  # the line that names the options this resume does not apply
    typer.echo(f"{out}: {verb}; {facts['env_id']}, {facts['num_transitions']} transitions, batch "
               f"{trainer.cfg.batch_size}, {trainer.config['network']['parameters']:,} parameters on {dev}"
               f"{_threads_note(dev)}")
    run_training(trainer, out, stop_after)


def augment_synther_command(*, model: Path, out: Path, device: str | None, threads: int | None, overwrite: bool,
                            debug: bool, **given: Any) -> None:
    """SynthER: sample transitions from pure noise with the trained model and write them as a store. ``given``:
    the :class:`~gta_diffusion.baselines.synther.SampleConfig` fields given on the command line (None: its
    default)."""
    with _errors(debug):
        from gta_data.accel.devices import resolve_device
        from gta_data.progress import progress
        from gta_diffusion.baselines.synther import SampleConfig, generate_synther
        from gta_diffusion.errors import DiffusionError
        from gta_diffusion.threads import set_cpu_threads

        cfg = SampleConfig(**{k: v for k, v in given.items() if v is not None})
        cfg.check()
        dev = resolve_device(device, DiffusionError)
        set_cpu_threads(threads, dev)
        with progress("synther", total=cfg.num_transitions, unit="transitions") as bar:
            store = generate_synther(model, out, cfg, device=dev, overwrite=overwrite, progress=bar.advance)
        typer.echo(f"wrote {store.path}: {store.num_transitions} transitions in {store.num_episodes} segments")
