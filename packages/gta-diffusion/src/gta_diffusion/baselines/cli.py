"""The baselines' commands (GTA Sec. 5.1, appendix C.1), called by the ``gta-diffusion`` app:

    augment --method s4rl     -> :func:`augment_s4rl_command`
    train --model synther     -> :func:`train_synther_command`
    augment --method synther  -> :func:`augment_synther_command`

Known errors become one line on stderr and exit code 1 (``gta_diffusion.cli_support``, shared with
``gta_diffusion.cli``); heavy modules are imported inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from gta_diffusion.cli_support import errors as _errors
from gta_diffusion.cli_support import run_training
from gta_diffusion.cli_support import sinks as _sinks
from gta_diffusion.cli_support import threads_note as _threads_note

__all__ = ["augment_s4rl_command", "train_synther_command", "augment_synther_command"]


def augment_s4rl_command(
    data: Path = typer.Option(..., "--data", help="Source store (the original data)."),
    out: Path = typer.Option(..., "--out", help="Augmented store to write (.zarr)."),
    num_transitions: int = typer.Option(5_000_000, help="Transitions to write (passes over the source)."),
    sigma: float = typer.Option(3e-4, help="Std of the Gaussian state noise (GTA C.1: 3e-4)."),
    seed: int = typer.Option(0, help="Seed of the episode order and of the per-segment noise."),
    noise_scale: str = typer.Option("state_std", help="state_std: sigma in z-scored state units (the authors' "
                                    "code) | absolute: raw units."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output store."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """S4RL: copies of the source with N(0, sigma^2) noise on every state (GTA appendix C.1)."""
    with _errors(debug):
        from gta_data.progress import progress
        from gta_diffusion.baselines.s4rl import S4RLConfig, augment_s4rl

        cfg = S4RLConfig(sigma=sigma, num_transitions=num_transitions, seed=seed, scale=noise_scale)
        cfg.check()
        with progress("s4rl", total=num_transitions, unit="transitions") as bar:
            bar.update(info=f"sigma={sigma:g}")
            store = augment_s4rl(data, out, cfg, overwrite=overwrite, progress=bar.advance)
        typer.echo(f"wrote {store.path}: {store.num_transitions} transitions in {store.num_episodes} segments")


def train_synther_command(
    data: Path = typer.Option(None, "--data", help="Training store (.zarr); optional when resuming a run."),
    out: Path = typer.Option(..., "--out", help="Run directory (created, or resumed if it holds a run)."),
    network: str = typer.Option(None, "--network", help="Network: synther (25.6M params, the default) or "
                                "synther-small (CPU)."),
    steps: int = typer.Option(None, help="Gradient steps (default: SynthER's 1e5)."),
    batch_size: int = typer.Option(None, help="Batch size (default: 1024, or 256 below 800k transitions)."),
    lr: float = typer.Option(3e-4, help="Peak learning rate (cosine annealing, no warm-up)."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    compile_mode: str = typer.Option(None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph",
                                    help="Capture the whole training step in one CUDA graph (single GPU)."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    seed: int = typer.Option(0, help="Seed of weights, data order and loss noise."),
    log_every: int = typer.Option(1000, help="Steps between metric lines."),
    checkpoint_every: int = typer.Option(10_000, help="Steps between checkpoints."),
    stop_after: int = typer.Option(None, help="Checkpoint and stop at this step (resume later; for job limits)."),
    log_to: str = typer.Option(None, "--log-to", help="Also copy the metrics to csv, tensorboard and/or wandb."),
    threads: int = typer.Option(None, "--threads", help="CPU threads of torch (ignored on CUDA)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train (or resume) SynthER's unconditional transition diffusion model on a store."""
    with _errors(debug):
        from gta_data import TrajectoryStore
        from gta_data.accel.devices import resolve_device
        from gta_diffusion.baselines.synther import create_synther_trainer, synther_train_config
        from gta_diffusion.errors import DiffusionError
        from gta_diffusion.threads import set_cpu_threads
        from gta_diffusion.training import apply_resume_options

        if stop_after is not None and stop_after < 1:
            raise DiffusionError(f"--stop-after must be a positive step, got {stop_after}")
        sinks = _sinks(log_to)
        resuming = (out / "config.json").exists()
        cfg, changes = None, []
        if resuming:
            changes = apply_resume_options(out, steps=steps, batch_size=batch_size, preset=network, log_to=sinks,
                                           model="synther")
        elif data is not None:
            cfg = synther_train_config(
                TrajectoryStore.open(data).num_transitions, batch_size=batch_size, preset=network or "synther",
                steps=100_000 if steps is None else steps, lr=lr, bf16=bf16, compile=compile,
                compile_mode=compile_mode, cuda_graph=cuda_graph, seed=seed, log_every=log_every,
                checkpoint_every=checkpoint_every, log_to=sinks or (),
            )
        dev = resolve_device(device, DiffusionError)
        set_cpu_threads(threads, dev)
        trainer = create_synther_trainer(out, data, cfg, device=dev)
        facts = trainer.config["data"]
        verb = f"resuming at step {trainer.step_count} (saved config is used)" if resuming else "new run"
        for line in changes:
            typer.echo(f"changed on resume: {line}")
        typer.echo(f"{out}: {verb}; {facts['env_id']}, {facts['num_transitions']} transitions, batch "
                   f"{trainer.cfg.batch_size}, {trainer.config['network']['parameters']:,} parameters on {dev}"
                   f"{_threads_note(dev)}")
        run_training(trainer, out, stop_after)


def augment_synther_command(
    model: Path = typer.Option(..., "--model", help="Run directory of a trained SynthER model."),
    out: Path = typer.Option(..., "--out", help="Store to write (.zarr)."),
    num_transitions: int = typer.Option(5_000_000, help="Transitions to generate (SynthER/GTA: 5M)."),
    batch_size: int = typer.Option(100_000, help="Transitions per sampler call (SynthER: 100k)."),
    num_steps: int = typer.Option(None, help="Sampler steps (default: the model's, 128)."),
    seed: int = typer.Option(0, help="Transition j has seed seed * 2**32 + j."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the denoiser."),
    clip_actions: bool = typer.Option(True, "--clip-actions/--no-clip-actions",
                                      help="Clip generated actions to the training data's range per dimension."),
    device: str = typer.Option(None, help="cpu, cuda ... (default: cuda if available)."),
    threads: int = typer.Option(None, "--threads", help="CPU threads of torch (ignored on CUDA)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output store."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """SynthER: sample transitions from pure noise with the trained model and write them as a store."""
    with _errors(debug):
        from gta_data.accel.devices import resolve_device
        from gta_data.progress import progress
        from gta_diffusion.baselines.synther import SampleConfig, generate_synther
        from gta_diffusion.errors import DiffusionError
        from gta_diffusion.threads import set_cpu_threads

        cfg = SampleConfig(num_transitions=num_transitions, batch_size=batch_size, num_steps=num_steps, seed=seed,
                           bf16=bf16, compile=compile, clip_actions=clip_actions)
        cfg.check()
        dev = resolve_device(device, DiffusionError)
        set_cpu_threads(threads, dev)
        with progress("synther", total=num_transitions, unit="transitions") as bar:
            store = generate_synther(model, out, cfg, device=dev, overwrite=overwrite, progress=bar.advance)
        typer.echo(f"wrote {store.path}: {store.num_transitions} transitions in {store.num_episodes} segments")
