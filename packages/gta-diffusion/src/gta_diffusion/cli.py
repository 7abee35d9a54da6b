"""Command line interface of gta-diffusion: ``train`` a GTA denoiser on a store, ``augment`` a store with it.

Multi-GPU: launch either command with ``torchrun --nproc-per-node N -m gta_diffusion.cli ...``
(data-parallel training; augmentation sharded over ranks and merged by rank 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from gta_diffusion.cli_support import LOG_TO_HELP as _LOG_TO_HELP
from gta_diffusion.cli_support import THREADS_HELP as _THREADS_HELP
from gta_diffusion.cli_support import errors as _errors
from gta_diffusion.cli_support import run_training
from gta_diffusion.cli_support import sinks as _sinks
from gta_diffusion.cli_support import threads_note as _threads_note

app = typer.Typer(
    no_args_is_help=True,
    help="GTA conditional trajectory diffusion (EDM, MLP-Mixer temporal U-Nets, classifier-free guidance): "
    "training and augmentation.",
)


@app.callback()
def main() -> None:
    """GTA conditional trajectory diffusion: training and augmentation (GTA Sec. 4)."""


@app.command()
def version() -> None:
    """Print the package version."""
    from gta_diffusion._version import __version__

    typer.echo(__version__)


@app.command()
def train(
    data: Path = typer.Option(None, "--data", help="Training store (.zarr); optional when resuming a run."),
    out: Path = typer.Option(..., "--out", help="Run directory (created, or resumed if it holds a run)."),
    model: str = typer.Option("gta", "--model", help="gta (trajectory model, Sec. 4.1) | synther (baseline)."),
    network: str = typer.Option(None, "--network", help="Denoiser network. gta: fast-mixer (29.5M params, this "
                                "package's design) | mixer-unet (29.6M, GTA's A.2 network) | fast-mixer-small (CPU); "
                                "synther: synther (25.6M) | synther-small. Default: fast-mixer / synther."),
    steps: int = typer.Option(None, help="Gradient steps (default: gta 1e6 as Table 6, synther 1e5)."),
    batch_size: int = typer.Option(None, help="Global batch size (default: gta 256; synther 1024, 256 below "
                                   "800k transitions)."),
    lr: float = typer.Option(3e-4, help="Peak learning rate (cosine schedule with warm-up)."),
    warmup_steps: int = typer.Option(1000, help="Linear warm-up steps."),
    horizon: int = typer.Option(31, help="H: transitions per window (H+1 rows are modelled)."),
    cond_scale: float = typer.Option(0.01, help="Condition = cond_scale x discounted return."),
    terminal_penalty: float = typer.Option(None, help="Added to terminal rewards for the condition (A.1). "
                                           "Default: -100, or 0 for goal-reaching tasks (mazes, kitchen)."),
    penalty_in_rewards: bool = typer.Option(None, "--penalty-in-rewards",
                                            help="A.1's variant: the penalty also enters the reward channel the "
                                            "model learns (augment removes it from generated rewards)."),
    ema_decay: float = typer.Option(0.999, help="EMA decay of the weights used for sampling."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    compile_mode: str = typer.Option(None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)."),
    cuda_graph: bool = typer.Option(False, "--cuda-graph",
                                    help="Capture the whole training step in one CUDA graph (single GPU)."),
    device: str = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: cuda if available)."),
    seed: int = typer.Option(0, help="Seed of weights, data order and loss noise."),
    log_every: int = typer.Option(1000, help="Steps between metric lines."),
    checkpoint_every: int = typer.Option(20_000, help="Steps between checkpoints."),
    stop_after: int = typer.Option(None, help="Checkpoint and stop at this step (resume later; for job limits)."),
    log_to: str = typer.Option(None, "--log-to", help=_LOG_TO_HELP),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Train (or resume) a GTA denoiser on a trajectory store (GTA Sec. 4.1, Table 6), or SynthER's model."""
    if model == "synther":
        from gta_diffusion.baselines.cli import train_synther_command

        if penalty_in_rewards:
            with _errors(debug):
                from gta_diffusion.errors import DiffusionError

                raise DiffusionError("--penalty-in-rewards is for the GTA model (SynthER has no terminal penalty)")
        return train_synther_command(
            data=data, out=out, network=network, steps=steps, batch_size=batch_size, lr=lr,
            bf16=bf16, compile=compile, compile_mode=compile_mode, cuda_graph=cuda_graph, device=device, seed=seed,
            log_every=log_every, checkpoint_every=checkpoint_every, stop_after=stop_after, log_to=log_to,
            threads=threads, debug=debug,
        )
    with _errors(debug):
        from gta_diffusion.data import WindowConfig
        from gta_diffusion.distributed import init_distributed, shutdown
        from gta_diffusion.errors import DiffusionError
        from gta_diffusion.threads import set_cpu_threads
        from gta_diffusion.training import TrainConfig, Trainer, apply_resume_options

        if model != "gta":
            raise DiffusionError(f"unknown model {model!r} (choose gta or synther)")
        sinks = _sinks(log_to)
        given = {"steps": steps, "batch_size": batch_size, "preset": network, "penalty_in_rewards": penalty_in_rewards,
                 "log_to": sinks}
        network = network or "fast-mixer"
        steps = 1_000_000 if steps is None else steps
        batch_size = 256 if batch_size is None else batch_size
        if steps < 1 or batch_size < 1 or log_every < 1 or checkpoint_every < 1:
            raise DiffusionError("steps, batch size, log and checkpoint intervals must be positive")
        if stop_after is not None and stop_after < 1:
            raise DiffusionError(f"--stop-after must be a positive step, got {stop_after}")
        dist, dev = init_distributed(device)
        try:
            set_cpu_threads(threads, dev)
            resuming = (out / "config.json").exists()
            changes = apply_resume_options(out, **given, dist=dist) if resuming else []
            trainer = Trainer.create(
                out, data,
                TrainConfig(preset=network, steps=steps, batch_size=batch_size, lr=lr, warmup_steps=warmup_steps,
                            ema_decay=ema_decay, bf16=bf16, compile=compile, compile_mode=compile_mode,
                            cuda_graph=cuda_graph, seed=seed, log_every=log_every,
                            checkpoint_every=checkpoint_every, log_to=sinks or ()),
                WindowConfig(horizon=horizon, cond_scale=cond_scale, terminal_penalty=terminal_penalty,
                             penalty_in_reward_channel=bool(penalty_in_rewards)),
                device=dev, dist=dist,
            )
            if dist.is_main:
                facts = trainer.config["data"]
                norm = trainer.windows.norm
                verb = f"resuming at step {trainer.step_count} (saved config is used)" if resuming else "new run"
                for line in changes:
                    typer.echo(f"changed on resume: {line}")
                typer.echo(f"{out}: {verb}; {facts['env_id']}, {facts['num_windows']} windows of "
                           f"H={trainer.windows.cfg.horizon}, {trainer.config['network']['parameters']:,} parameters, "
                           f"{dist.world_size} rank(s) on {dev}{_threads_note(dev)}")
                if norm.skipped_episodes:
                    typer.echo(f"skipped {norm.skipped_episodes} episodes shorter than H "
                               f"({norm.skipped_transitions} transitions)")
            run_training(trainer, out, stop_after, show=dist.is_main)
        finally:
            shutdown(dist)


@app.command()
def augment(
    out: Path = typer.Option(..., "--out", help="Augmented store to write (.zarr)."),
    method: str = typer.Option("gta", help="gta (Sec. 4.2) | s4rl (state noise, C.1) | synther (baseline)."),
    model: Path = typer.Option(None, "--model", help="Run directory of a trained model (gta, synther)."),
    data: Path = typer.Option(None, "--data", help="Source store, the original data (gta, s4rl)."),
    sigma: float = typer.Option(3e-4, help="s4rl: std of the Gaussian state noise (C.1: 3e-4)."),
    noise_scale: str = typer.Option("state_std", help="s4rl: state_std (sigma in z-scored state units, as the "
                                    "authors' code) | absolute (raw units)."),
    dataset_preset: str = typer.Option(None, help="Fill mu/alpha/reweighting from the paper (see `presets`)."),
    mu: float = typer.Option(None, help="Partial noising ratio, 0 < mu <= 1 (default 0.5)."),
    alpha: float = typer.Option(None, help="Return multiplier of the amplified condition (default 1.3)."),
    num_transitions: int = typer.Option(5_000_000, help="Transitions to generate."),
    guidance: float = typer.Option(2.0, help="Guidance weight w of Eq. 4 (the sampler's scale is s = w + 1)."),
    conditioning: str = typer.Option("amplified", help="amplified | fixed | none | inpaint."),
    fixed_return: float = typer.Option(None, help="Target return for --conditioning fixed."),
    reweight: str = typer.Option(None, help="none | bins (Eq. 13) | episodes (sparse tasks)."),
    num_bins: int = typer.Option(None, help="N_B of Eq. 13 (default 50)."),
    success_weight: float = typer.Option(None, help="c: weight of successful episodes (default 10)."),
    reweight_clip: float = typer.Option(None, help="bins: clip each window's weight (v_j / sum v) / |B_j| at this "
                                        "value before normalising (the authors' code: 5.0; default: no clip)."),
    batch_size: int = typer.Option(None, help="Windows per sampler call (default 8192; synther: transitions, 100k)."),
    num_steps: int = typer.Option(None, help="Sampler steps K (default: the model's, 128)."),
    seed: int = typer.Option(0, help="Seed of the source choice and of the per-window seeds."),
    bf16: bool = typer.Option(False, "--bf16", help="bf16 autocast."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the denoiser."),
    compile_mode: str = typer.Option(None, help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)."),
    clip_actions: bool = typer.Option(True, "--clip-actions/--no-clip-actions",
                                      help="gta, synther: clip generated actions to the source (training) data's "
                                      "range per dimension."),
    device: str = typer.Option(None, help="cpu, cuda ... (default: cuda if available)."),
    threads: int = typer.Option(None, "--threads", help=_THREADS_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output store."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks."),
) -> None:
    """Generate an augmented store: GTA's partial noising and amplified return guidance (Sec. 4.2), or the
    S4RL and SynthER baselines."""
    _require_options(method, model=model, data=data, debug=debug)
    if method == "s4rl":
        from gta_diffusion.baselines.cli import augment_s4rl_command

        return augment_s4rl_command(data=data, out=out, num_transitions=num_transitions, sigma=sigma, seed=seed,
                                    noise_scale=noise_scale, overwrite=overwrite, debug=debug)
    if method == "synther":
        from gta_diffusion.baselines.cli import augment_synther_command

        return augment_synther_command(model=model, out=out, num_transitions=num_transitions,
                                       batch_size=100_000 if batch_size is None else batch_size,
                                       num_steps=num_steps, seed=seed, bf16=bf16, compile=compile,
                                       clip_actions=clip_actions, device=device, threads=threads,
                                       overwrite=overwrite, debug=debug)
    batch_size = 8192 if batch_size is None else batch_size
    with _errors(debug):
        from gta_data.progress import progress
        from gta_diffusion.augmentation import AugmentConfig
        from gta_diffusion.augmentation import augment as run_augment
        from gta_diffusion.distributed import init_distributed, shutdown
        from gta_diffusion.errors import DiffusionError
        from gta_diffusion.presets import dataset_preset as lookup
        from gta_diffusion.threads import set_cpu_threads

        fields: dict[str, Any] = lookup(dataset_preset) if dataset_preset else {}
        explicit = {"mu": mu, "alpha": alpha, "reweight": reweight, "num_bins": num_bins,
                    "success_weight": success_weight, "reweight_clip": reweight_clip}
        fields.update({k: v for k, v in explicit.items() if v is not None})
        cfg = AugmentConfig(**fields, guidance_weight=guidance, conditioning=conditioning,
                            fixed_return=fixed_return, num_transitions=num_transitions, batch_size=batch_size,
                            num_steps=num_steps, seed=seed, bf16=bf16, compile=compile,
                            compile_mode=compile_mode, clip_actions=clip_actions)
        cfg.check()
        if out.exists() and not overwrite:
            raise DiffusionError(f"{out} already exists (use --overwrite to replace it)")
        dist, dev = init_distributed(device)
        try:
            set_cpu_threads(threads, dev)
            with progress("augment", unit="windows", enabled=dist.is_main) as bar:
                bar.update(info=f"mu={cfg.mu} alpha={cfg.alpha}")
                store = run_augment(
                    model, data, out, cfg, device=dev, dist=dist, overwrite=overwrite,
                    on_start=lambda n: bar.update(total=n), progress=bar.advance,
                )
            if dist.is_main and store is not None:
                typer.echo(f"wrote {store.path}: {store.num_transitions} transitions in {store.num_episodes} segments")
                prov = store.provenance
                if prov.get("model_step") is not None and prov["model_step"] < prov["model_train_steps"]:
                    typer.echo(f"warning: the model's training stopped at step {prov['model_step']} of "
                               f"{prov['model_train_steps']}", err=True)
        finally:
            shutdown(dist)


_METHOD_NEEDS = {"gta": ("model", "data"), "s4rl": ("data",), "synther": ("model",)}


def _require_options(method: str, *, debug: bool, **given: Path | None) -> None:
    with _errors(debug):
        from gta_diffusion.errors import DiffusionError

        if method not in _METHOD_NEEDS:
            raise DiffusionError(f"unknown method {method!r} (choose {', '.join(_METHOD_NEEDS)})")
        missing = [f"--{name}" for name in _METHOD_NEEDS[method] if given[name] is None]
        if missing:
            raise DiffusionError(f"--method {method} needs {' and '.join(missing)}")


@app.command()
def presets() -> None:
    """List the dataset presets (mu, alpha, reweighting from GTA Tables 8-9)."""
    from gta_diffusion.presets import DATASET_PRESETS

    for name, values in DATASET_PRESETS.items():
        typer.echo(f"{name:28s} " + " ".join(f"{k}={v}" for k, v in values.items()))


if __name__ == "__main__":
    app()
